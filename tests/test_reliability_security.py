"""Reliability suite, items 5, 6 and 8 (OWASP API2, API4, API8): secrets at rest, in logs and
in answers; constant-time comparisons; per-key rate limits, pagination limits and bounded,
cancellable jobs; the ops console's security headers and cookies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, text
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient

from conftest import Api, create_account, make_settings, row_counts
from invoicetrail.accounts import service as accounts
from invoicetrail.api import create_app
from invoicetrail.console import service as console_service
from invoicetrail.core.errors import ApiError
from invoicetrail.core.http import RateLimiter
from invoicetrail.core.idempotency import IdempotencyKey
from invoicetrail.exports import service as exports_service
from invoicetrail.exports.schemas import ACK_ROWS_MAX
from invoicetrail.payments.endpoints import generate_secret
from invoicetrail.payments.providers import VerificationFailed, standard_webhooks
from invoicetrail.payments.providers import stripe as stripe_provider
from test_tenancy import Console, account_rows, collection_routes

SECRET_REPLAY_RETENTION = timedelta(days=1)


def forms_of(secret: str) -> set[str]:
    """The secret and the encodings it could leak in (hex, base64, the decoded key)."""
    raw = secret.encode()
    out = {
        secret,
        raw.hex(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    if secret.startswith("whsec_"):
        key = base64.b64decode(secret[6:])
        out |= {
            secret[6:],
            key.hex(),
            base64.urlsafe_b64encode(key).decode().rstrip("="),
        }
    if secret.startswith("sk_"):
        # The part after the 16-character lookup (an index, stored as such) is the secret.
        out.add(secret[3 + accounts.KEY_LOOKUP_LENGTH :])
    return out


def assert_nowhere(secret_values: list[str], blob: str, where: str) -> None:
    for secret in secret_values:
        for form in forms_of(secret):
            assert form not in blob, f"a form of a secret ({secret[:8]}…) appears in {where}"


# --- 5. keys hashed at rest -------------------------------------------------------------------


def test_secret_keys_are_stored_only_as_their_hash(client: TestClient, api: Api) -> None:
    engine = client.app.state.invoicetrail.engine  # type: ignore[attr-defined]
    rotated = api.ok(api.post("/v1/api_keys/rotate", {"expire_previous_after_seconds": 3600}))
    keys = [api.secret_key, rotated["secret_key"]]
    assert all(re.fullmatch(r"sk_[A-Za-z0-9_]{24,}", key) for key in keys)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT * FROM api_keys WHERE account_id = :a"), {"a": api.account_id}
        ).all()
    assert len(rows) == 2
    assert_nowhere(keys, repr(rows), "the api_keys table")
    assert sorted(row.secret_sha256 for row in rows) == sorted(
        hashlib.sha256(key.encode()).hexdigest() for key in keys
    )

    # Anywhere else the account has rows: the first key nowhere; the rotated one only in the
    # replay copy of its answer (an idempotent retry returns it byte for byte), for a day.
    for table, table_rows in account_rows(engine, [api.account_id]).items():
        blob = "\n".join(table_rows)
        assert_nowhere(keys[:1], blob, table)
        if table != "idempotency_keys":
            assert_nowhere(keys[1:], blob, table)
    assert_replay_copies_expire_within_a_day(engine, api.account_id)


def assert_replay_copies_expire_within_a_day(engine: Any, account_id: str) -> None:
    """Every stored answer that carries a secret is kept no longer than the minimum."""
    with engine.connect() as connection:
        stored = connection.execute(
            select(IdempotencyKey).where(IdempotencyKey.account_id == account_id)
        ).all()
    holding = [row for row in stored if re.search(rb'"(sk_|whsec_)', bytes(row.response_body))]
    assert holding, "a secret-bearing answer was stored for its replay"
    for row in holding:
        assert row.expires_at - row.created_at <= SECRET_REPLAY_RETENTION, row.path


# --- 5. constant-time comparisons ---------------------------------------------------------------


def near_misses(right: str) -> dict[str, str]:
    other = "0" if right[-1:] != "0" else "1"
    return {
        "right": right,
        "wrong": right[:-1] + other,
        "wrong first": other + right[1:],
        "shorter": right[:-1],
        "longer": right + other,
        "empty": "",
        "non-ascii": right[:-1] + "é",
        "non-ascii only": "é" * len(right),
    }


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every `hmac.compare_digest` call made while the test runs (still the real compare)."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_api_key_hash_compare_is_constant_time(compare_calls: list[tuple[Any, Any]]) -> None:
    stored = accounts.secret_sha256("sk_" + "a" * 48)
    for name, presented in near_misses(stored).items():
        compare_calls.clear()
        assert accounts.secrets_match(presented, stored) is (name == "right"), name
        assert len(compare_calls) == 1, name  # never an early `==` exit


def test_console_token_compare_is_constant_time(compare_calls: list[tuple[Any, Any]]) -> None:
    token = secrets.token_urlsafe(32)
    for name, presented in near_misses(token).items():
        compare_calls.clear()
        assert console_service.tokens_match(presented, token) is (name == "right"), name
        assert len(compare_calls) == (1 if presented else 0), name
    assert console_service.tokens_match(None, token) is False
    assert console_service.tokens_match("", "") is False  # no token never matches no cookie
    assert console_service.tokens_match(None, "") is False
    assert console_service.tokens_match(token, "") is False


def test_every_near_miss_api_key_is_the_same_401(
    api: Api, compare_calls: list[tuple[Any, Any]]
) -> None:
    key = api.secret_key
    lookup_flipped = key[:3] + ("A" if key[3] != "A" else "B") + key[4:]
    presented = {
        **{name: value for name, value in near_misses(key).items() if name != "right"},
        "wrong lookup": lookup_flipped,
        "unknown": "sk_" + "A" * 48,
        "other prefix": "pk_" + key[3:],
    }
    errors = []
    for name, value in presented.items():
        compare_calls.clear()
        header = f"Bearer {value}".encode("latin-1")
        response = api.client.get("/v1/customers", headers={"Authorization": header})
        assert response.status_code == 401, (name, response.text)
        error = response.json()["error"]
        assert error.pop("request_id") == response.headers["Request-Id"]
        errors.append(error)
        if name in ("wrong", "wrong lookup", "unknown"):
            # the right shape: looked up, then compared in constant time, hit or miss
            assert len(compare_calls) == 1, name
    assert all(error == errors[0] for error in errors), errors
    assert api.get("/v1/customers").status_code == 200


SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_standard_webhooks_signature_compare(compare_calls: list[tuple[Any, Any]]) -> None:
    body = b'{"type": "payment.succeeded", "data": {}}'
    now = datetime.now(UTC)
    msg_id = "msg_compare"
    right = Webhook(SW_SECRET).sign(msg_id=msg_id, timestamp=now, data=body.decode())
    signature = base64.b64decode(right.split(",", 1)[1])
    flipped = bytes([signature[0] ^ 1]) + signature[1:]

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    cases = {
        "right": right,
        "several, one right": f"v1,{b64(flipped)} {right}",
        "wrong": f"v1,{b64(flipped)}",
        "shorter": f"v1,{b64(signature[:-1])}",
        "longer": f"v1,{b64(signature + b'0')}",
        "empty": "v1,",
        "non-ascii": "v1,é" + b64(signature)[1:],
        "wrong version": f"v2,{b64(signature)}",
        "other secret": Webhook(generate_secret()).sign(
            msg_id=msg_id, timestamp=now, data=body.decode()
        ),
    }
    for name, value in cases.items():
        compare_calls.clear()
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": value,
        }
        if name.endswith("right"):
            assert standard_webhooks.verify(body, headers, [SW_SECRET], now, 300) == msg_id
            assert compare_calls, name
            continue
        with pytest.raises(VerificationFailed) as failed:
            standard_webhooks.verify(body, headers, [SW_SECRET], now, 300)
        assert failed.value.code == "signature_invalid", name
    # During a rotation both secrets verify.
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": right,
    }
    assert standard_webhooks.verify(body, headers, [generate_secret(), SW_SECRET], now, 300)


def stripe_header(secret: str, payload: str, at: int) -> tuple[str, str]:
    """(timestamp part, hex v1 signature) as Stripe signs: HMAC-SHA256 of `t.payload`."""
    signed = hmac.new(secret.encode(), f"{at}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={at}", signed


def test_stripe_signature_compare(compare_calls: list[tuple[Any, Any]]) -> None:
    secret = "whsec_test_stripe_compare"
    payload = '{"id": "evt_compare", "type": "charge.updated"}'
    now = datetime.now(UTC)
    stamp, right = stripe_header(secret, payload, int(now.timestamp()))
    wrong = ("0" if right[0] != "0" else "1") + right[1:]
    cases = {
        "right": f"{stamp},v1={right}",
        "several, one right": f"{stamp},v1={wrong},v1={right}",
        "wrong": f"{stamp},v1={wrong}",
        "shorter": f"{stamp},v1={right[:-1]}",
        "longer": f"{stamp},v1={right}0",
        "empty": f"{stamp},v1=",
        "non-ascii": f"{stamp},v1={right[:-1]}é",
        "non-ascii only": f"{stamp},v1={'é' * 64}",
        "no v1": stamp,
    }
    for name, value in cases.items():
        compare_calls.clear()
        headers = {"Stripe-Signature": value}
        if name.endswith("right"):
            stripe_provider.verify(payload.encode(), headers, [secret], now, 300)
            assert compare_calls, name
            continue
        with pytest.raises(VerificationFailed) as failed:
            stripe_provider.verify(payload.encode(), headers, [secret], now, 300)
        assert failed.value.code == "signature_invalid", name


def test_a_non_ascii_signature_is_a_400_never_a_500(api: Api) -> None:
    """Regression: a non-ASCII Stripe-Signature reached `hmac.compare_digest` on str, which
    raises TypeError, and the webhook route answered 500."""
    endpoint = api.ok(
        api.post("/v1/provider_endpoints", {"provider": "stripe", "secret": "whsec_x_non_ascii"})
    )
    body = json.dumps({"id": "evt_na", "type": "charge.updated", "data": {"object": {}}})
    for value in (f"t={int(time.time())},v1=é", "t=1,v1=\u00ff\u00fe", "é"):
        response = api.client.post(
            endpoint["url"],
            content=body.encode(),
            headers={"Stripe-Signature": value.encode("latin-1")},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "signature_invalid"


def test_console_csrf_refuses_every_near_miss(client: TestClient, api: Api) -> None:
    console = Console(client.app, api.secret_key)  # type: ignore[arg-type]
    for name, token in near_misses(console.csrf).items():
        if name == "right":
            continue
        refused = console.client.post(
            "/console/logout", data={"csrf_token": token}, follow_redirects=False
        )
        assert refused.status_code == 403, name
    assert console.get("/console").status_code == 200  # still signed in
    login_form = TestClient(client.app).get("/console/login")
    refused = console.client.post(
        "/console/login",
        data={"csrf_token": "not-the-cookie", "secret_key": api.secret_key},
        follow_redirects=False,
    )
    assert login_form.status_code == 200 and refused.status_code == 403
    signed_out = console.client.post(
        "/console/logout", data={"csrf_token": console.csrf}, follow_redirects=False
    )
    assert signed_out.status_code == 303
    assert console.get("/console").status_code == 303


# --- 5. secrets never logged --------------------------------------------------------------------


def debug_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    """DEBUG on the root and every logger there is, SQLAlchemy's engine at INFO: its DEBUG
    dumps every result row (echo="debug"), a data dump by design; INFO shows statements and
    their parameters, which the engine hides."""
    names = set(logging.root.manager.loggerDict) | {
        "invoicetrail",
        "uvicorn",
        "uvicorn.access",
        "uvicorn.error",
        "httpx",
        "stripe",
        "sqlalchemy",
        "sqlalchemy.pool",
        "sqlalchemy.orm",
    }
    caplog.set_level(logging.DEBUG)
    for name in sorted(names):
        engine_logger = name == "sqlalchemy.engine" or name.startswith("sqlalchemy.engine.")
        caplog.set_level(logging.INFO if engine_logger else logging.DEBUG, logger=name)


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    parts = []
    for record in caplog.records:
        parts.append(formatter.format(record))  # message, exception and stack text
        parts.append(repr(record.args))
        parts.append(repr(vars(record)))
    return "\n".join(parts)


@contextmanager
def failing_secret_writes(engine: Any) -> Iterator[None]:
    """Storage fails exactly when a provider endpoint secret is written."""

    def broken(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> tuple[str, Any]:
        if statement.lstrip().upper().startswith("INSERT INTO PROVIDER_ENDPOINT_SECRETS"):
            statement = statement.replace("provider_endpoint_secrets", "no_such_secret_table", 1)
        return statement, parameters

    event.listen(engine, "before_cursor_execute", broken, retval=True)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", broken)


def test_secrets_never_reach_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    debug_everywhere(caplog)
    app = client.app
    state = app.state.invoicetrail  # type: ignore[attr-defined]
    lenient = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
    seen: list[str] = []

    api = Api(lenient, *create_account(state))
    seen.append(api.secret_key)
    assert api.get("/v1/customers").status_code == 200
    near_miss = api.secret_key[: 3 + accounts.KEY_LOOKUP_LENGTH] + "x" * 32
    seen.append(near_miss)
    bad = lenient.get("/v1/customers", headers={"Authorization": f"Bearer {near_miss}"})
    assert bad.status_code == 401
    rotated = api.ok(api.post("/v1/api_keys/rotate", {}))["secret_key"]
    seen.append(rotated)
    api = Api(lenient, api.account_id, rotated)
    assert api.get("/v1/customers").status_code == 200

    given, given_next, stripe_secret = generate_secret(), generate_secret(), generate_secret()
    seen += [given, given_next, stripe_secret]
    endpoint = api.ok(
        api.post("/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": given})
    )
    api.ok(
        api.post(f"/v1/provider_endpoints/{endpoint['id']}/rotate_secret", {"secret": given_next})
    )
    api.ok(api.post("/v1/provider_endpoints", {"provider": "stripe", "secret": stripe_secret}))
    generated = api.ok(api.post("/v1/provider_endpoints", {"provider": "standard_webhooks"}))
    seen.append(generated["secret"])
    regenerated = api.ok(api.post(f"/v1/provider_endpoints/{generated['id']}/rotate_secret"))
    seen.append(regenerated["secret"])
    invoice = api.open_invoice()
    event_body = json.dumps(
        {
            "type": "payment.succeeded",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {
                "payment_reference": "log-1",
                "invoice": invoice["id"],
                "amount": invoice["total"],
                "currency": "eur",
                "method": "card",
            },
        }
    )
    for secret, status in ((given_next, 200), (generate_secret(), 400)):
        msg_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        signature = Webhook(secret).sign(msg_id=msg_id, timestamp=now, data=event_body)
        response = lenient.post(
            endpoint["url"],
            content=event_body.encode(),
            headers={
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature,
            },
        )
        assert response.status_code == status, response.text

    hook = api.ok(api.post("/v1/webhook_endpoints", {"url": "https://hooks.example.com/logs"}))
    seen.append(hook["secret"])
    seen.append(api.ok(api.post(f"/v1/webhook_endpoints/{hook['id']}/rotate_secret"))["secret"])

    console = Console(app, rotated)  # type: ignore[arg-type]
    session_token = console.client.cookies.get("it_console")
    assert session_token
    seen += [session_token, console.csrf]
    assert console.get("/console").status_code == 200
    wrong_login = TestClient(app, base_url="http://testserver")
    token = re.search(r'name="csrf_token" value="([^"]+)"', wrong_login.get("/console/login").text)
    assert token is not None
    refused = wrong_login.post(
        "/console/login", data={"csrf_token": token.group(1), "secret_key": near_miss}
    )
    assert refused.status_code == 401

    # A storage failure while a secret is written: its error text is logged, not the secret.
    failing = generate_secret()
    seen.append(failing)
    with failing_secret_writes(state.engine):
        broken = api.post(
            "/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": failing}
        )
    assert broken.status_code in (500, 503), broken.text
    assert "no_such_secret_table" in caplog.text, "the storage failure was logged"

    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)  # SQL was on
    assert_nowhere(seen, logged_text(caplog), "the logs")


# --- 5. webhook signing secrets only in their create / rotate answers -------------------------


def every_answer(api: Api, client: TestClient) -> list[str]:
    """Every JSON answer the account can read: each list, each listed object at its own
    route, every event's deliveries, every invoice's trace, the account-wide reads."""
    answers: list[str] = []
    spec = client.get("/openapi.json").json()
    for path in collection_routes(client):
        listed = api.get(path, {"limit": 100})
        assert listed.status_code == 200, (path, listed.text)
        answers.append(listed.text)
        for item in listed.json()["data"]:
            if "id" not in item:
                continue
            own = api.get(f"{path}/{item['id']}")
            assert own.status_code == 200, (path, item["id"], own.text)
            answers.append(own.text)
            if path == "/v1/events":
                answers.append(api.get(f"/v1/events/{item['id']}/deliveries").text)
            if path == "/v1/invoices":
                answers.append(api.get(f"/v1/invoices/{item['id']}/trace").text)
    for path, operations in spec["paths"].items():
        if "get" in operations and "{" not in path and path not in collection_routes(client):
            answers.append(api.get(path).text)
    return answers


def test_signing_secrets_appear_only_in_their_create_and_rotate_answers(
    client: TestClient, api: Api
) -> None:
    key = f"hook-{uuid.uuid4().hex}"
    body = {"url": "https://hooks.example.com/secret-check", "events": ["*"]}
    created_answer = api.post("/v1/webhook_endpoints", body, key=key)
    created = api.ok(created_answer)
    first = created["secret"]
    assert first.startswith("whsec_") and len(base64.b64decode(first[6:])) == 32
    rotated = api.ok(api.post(f"/v1/webhook_endpoints/{created['id']}/rotate_secret", {}))
    second = rotated["secret"]
    assert second.startswith("whsec_") and second != first
    replay = api.post("/v1/webhook_endpoints", body, key=key)  # a replay is that same answer
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.content == created_answer.content

    given, given_next = generate_secret(), generate_secret()
    provider = api.ok(
        api.post("/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": given})
    )
    assert provider["secret"] is None  # a secret the client chose is never echoed
    rotated_given = api.ok(
        api.post(f"/v1/provider_endpoints/{provider['id']}/rotate_secret", {"secret": given_next})
    )
    assert rotated_given["secret"] is None
    generated = api.ok(api.post("/v1/provider_endpoints", {"provider": "standard_webhooks"}))
    regenerated = api.ok(api.post(f"/v1/provider_endpoints/{generated['id']}/rotate_secret"))
    assert generated["secret"] and regenerated["secret"]

    # Everything else the account does and reads afterwards.
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "secret-check"}))
    answers = [
        api.post(f"/v1/webhook_endpoints/{created['id']}/disable").text,
        api.post(f"/v1/webhook_endpoints/{created['id']}/enable").text,
        api.patch(f"/v1/webhook_endpoints/{created['id']}", {"events": ["invoice.paid"]}).text,
        *every_answer(api, client),
    ]
    secret_values = [first, second, given, given_next, generated["secret"], regenerated["secret"]]
    for answer in answers:
        assert_nowhere(secret_values, answer, "an answer other than create / rotate")
    console = Console(client.app, api.secret_key)  # type: ignore[arg-type]
    for page in (
        "/console",
        "/console/invoices",
        "/console/payments",
        "/console/exceptions",
        "/console/reconciliation",
        "/console/exports",
        f"/console/invoices/{invoice['id']}",
    ):
        shown = console.get(page)
        assert shown.status_code == 200, page
        assert_nowhere(secret_values, shown.text, page)
    engine = client.app.state.invoicetrail.engine  # type: ignore[attr-defined]
    assert_replay_copies_expire_within_a_day(engine, api.account_id)


# --- 6. rate limits -----------------------------------------------------------------------------

RATE_PER_SECOND = 0.5  # slow refill: a refused key stays refused while the test looks
RATE_BURST = 3


@pytest.fixture
def limited(db_url: str) -> Iterator[TestClient]:
    """The real app with a small bucket per key."""
    settings = make_settings(
        db_url, rate_limit_per_second=RATE_PER_SECOND, rate_limit_burst=RATE_BURST
    )
    with TestClient(create_app(settings), base_url="http://testserver") as limited_client:
        yield limited_client


def first_refusal(api: Api, attempts: int) -> httpx.Response:
    for _ in range(attempts):
        response = api.get("/v1/customers")
        if response.status_code == 429:
            return response
        assert response.status_code == 200, response.text
    raise AssertionError(f"no 429 within {attempts} requests")


def test_a_key_past_its_bucket_gets_429_with_retry_after(limited: TestClient) -> None:
    state = limited.app.state.invoicetrail  # type: ignore[attr-defined]
    a = Api(limited, *create_account(state))
    b = Api(limited, *create_account(state))
    for _ in range(RATE_BURST):
        assert a.get("/v1/customers").status_code == 200
    refused = first_refusal(a, 2)
    retry_after = refused.headers["Retry-After"]
    assert re.fullmatch(r"[1-9][0-9]*", retry_after), retry_after  # whole seconds, ≥ 1
    error = refused.json()["error"]
    assert (error["code"], error["retryable"], error["param"]) == ("rate_limited", True, None)
    assert error["request_id"] == refused.headers["Request-Id"]
    assert b.get("/v1/customers").status_code == 200  # another key has its own bucket

    # A refused write writes nothing, so the same Idempotency-Key is a first request later.
    before = row_counts(a)
    key = f"limited-{uuid.uuid4().hex}"
    write = a.post("/v1/customers", {"name": "Limited", "address": {"country": "DE"}}, key=key)
    assert write.status_code == 429, write.text
    assert row_counts(a) == before
    time.sleep(int(write.headers["Retry-After"]))
    again = a.post("/v1/customers", {"name": "Limited", "address": {"country": "DE"}}, key=key)
    assert again.status_code == 200, again.text
    assert "Idempotent-Replayed" not in again.headers


def test_each_secret_key_has_its_own_bucket(limited: TestClient) -> None:
    state = limited.app.state.invoicetrail  # type: ignore[attr-defined]
    a = Api(limited, *create_account(state))
    rotated = a.ok(a.post("/v1/api_keys/rotate", {}))["secret_key"]  # one token of the old key
    first_refusal(a, RATE_BURST + 1)
    newer = Api(limited, a.account_id, rotated)
    for _ in range(RATE_BURST):
        assert newer.get("/v1/customers").status_code == 200


def test_health_docs_static_and_provider_webhooks_are_not_counted(limited: TestClient) -> None:
    state = limited.app.state.invoicetrail  # type: ignore[attr-defined]
    a = Api(limited, *create_account(state))
    owner = Api(limited, *create_account(state))
    endpoint = owner.ok(
        owner.post("/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": SW_SECRET})
    )
    for _ in range(RATE_BURST + 3):
        for path in (
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/docs",
            "/console/static/console.css",
            "/console/login",
        ):
            response = limited.get(path, headers=a.auth)
            assert response.status_code == 200, (path, response.status_code)
        webhook = limited.post(
            endpoint["url"], content=b'{"type": "x"}', headers={**a.auth, "webhook-id": "m"}
        )
        assert webhook.status_code == 400, webhook.text  # refused as unsigned, never 429
    for _ in range(RATE_BURST):  # A's bucket is still full
        assert a.get("/v1/customers").status_code == 200


def test_the_bucket_arithmetic() -> None:
    off = RateLimiter(0, 1)
    for _ in range(50):
        off.check("key_off")  # 0 per second: no limit
    slow = RateLimiter(0.1, 2)
    slow.check("key_a")
    slow.check("key_a")
    with pytest.raises(ApiError) as refused:
        slow.check("key_a")
    assert refused.value.status_code == 429
    assert refused.value.headers["Retry-After"] == "10"  # 1 token at 0.1/s, rounded up
    slow.check("key_b")  # per key


# --- 6. pagination ------------------------------------------------------------------------------


def paginated_routes(client: TestClient) -> list[str]:
    spec = client.get("/openapi.json").json()
    return sorted(
        path
        for path, operations in spec["paths"].items()
        if "{" not in path
        and "get" in operations
        and any(p["name"] == "limit" for p in operations["get"].get("parameters", []))
    )


@pytest.mark.parametrize("limit", ["0", "101", "-1", "1000000", "abc", "1.5", "", "1e2"])
def test_a_limit_outside_1_to_100_is_400_on_every_list(
    client: TestClient, api: Api, limit: str
) -> None:
    routes = paginated_routes(client)
    assert len(routes) >= 14
    for path in routes:
        response = api.get(path, {"limit": limit})
        assert response.status_code == 400, (path, limit, response.text)
        error = response.json()["error"]
        assert error["param"] == "limit", (path, error)
        assert error["retryable"] is False


def test_a_page_holds_at_most_100(api: Api) -> None:
    created = [api.customer(name=f"Paged {i}")["id"] for i in range(101)]
    default = api.ok(api.get("/v1/customers"))
    assert len(default["data"]) == 10 and default["has_more"] is True
    first = api.ok(api.get("/v1/customers", {"limit": 100}))
    assert len(first["data"]) == 100 and first["has_more"] is True
    rest = api.ok(
        api.get("/v1/customers", {"limit": 100, "starting_after": first["data"][-1]["id"]})
    )
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    assert [c["id"] for c in first["data"] + rest["data"]] == list(reversed(created))
    events = api.ok(api.get("/v1/events", {"limit": 100}))
    assert len(events["data"]) == 100 and events["has_more"] is True


# --- 6. exports and reconciliation runs: bounded, cancellable -----------------------------------


def test_jobs_take_one_bounded_scope(api: Api) -> None:
    """An export is one format × one month of one account; its acknowledgement at most
    ACK_ROWS_MAX rows in a body within the size limit; a run reconciles up to today."""
    invoice = api.open_invoice()
    for period in ("2026-13", "2026-1", "2026-11-01", "", "202611", "2026-00", "all"):
        refused = api.post("/v1/exports", {"format": "csv", "period": period})
        assert refused.status_code == 400, (period, refused.text)
        assert refused.json()["error"]["param"] == "period"
    period = api.ok(api.get("/v1/journal_entries", {"invoice": invoice["id"]}))["data"][0]["period"]
    export = api.ok(api.post("/v1/exports", {"format": "csv", "period": period}))
    too_many = [{"id": f"exr_{i}", "erp_record_id": "1"} for i in range(ACK_ROWS_MAX + 1)]
    refused = api.post(f"/v1/exports/{export['id']}/acknowledge", {"rows": too_many})
    assert refused.status_code == 400, refused.text[:300]
    assert refused.json()["error"]["param"] == "rows"
    huge = [{"id": "exr_" + "x" * 100, "error": "e" * 1000} for _ in range(2000)]
    assert api.post(f"/v1/exports/{export['id']}/acknowledge", {"rows": huge}).status_code == 413
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    refused = api.post("/v1/reconciliation_runs", {"as_of": tomorrow})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "as_of"


@contextmanager
def holding(engine: Any, statement: str, params: dict[str, Any]) -> Iterator[None]:
    """Another transaction holds a lock the job needs, until the block ends."""
    with engine.connect() as blocker, blocker.begin():
        blocker.execute(text(statement), params)
        yield


@pytest.mark.postgres_only
def test_a_job_past_its_time_bound_rolls_back_and_answers_503(pg_url: str) -> None:
    """PostgreSQL: no statement of an export build or a reconciliation run runs or waits
    longer than INVOICETRAIL_JOB_STATEMENT_TIMEOUT_SECONDS; the job is cancelled, rolls back
    whole (no batch, no run, no idempotency record) and a retry with the same key succeeds."""
    settings = make_settings(pg_url, job_statement_timeout_seconds=0.5)
    with TestClient(create_app(settings), base_url="http://testserver") as bounded:
        state = bounded.app.state.invoicetrail  # type: ignore[attr-defined]
        api = Api(bounded, *create_account(state))
        invoice = api.open_invoice()
        entries = api.ok(api.get("/v1/journal_entries", {"invoice": invoice["id"]}))["data"]
        export_body = {"format": "csv", "period": entries[0]["period"]}
        jobs = [
            (
                "/v1/exports",
                export_body,
                "LOCK TABLE export_batches IN ACCESS EXCLUSIVE MODE",
                "/v1/exports",
            ),
            (
                "/v1/reconciliation_runs",
                {},
                "SELECT id FROM accounts WHERE id = :a FOR UPDATE",
                "/v1/reconciliation_runs",
            ),
        ]
        for path, body, lock, listing in jobs:
            key = f"bounded-{uuid.uuid4().hex}"
            before = account_rows(state.engine, [api.account_id])
            with holding(state.engine, lock, {"a": api.account_id}):
                started = time.monotonic()
                cancelled = api.post(path, body, key=key)
                waited = time.monotonic() - started
            assert cancelled.status_code == 503, cancelled.text
            error = cancelled.json()["error"]
            assert (error["code"], error["retryable"]) == ("storage_unavailable", True)
            assert waited < 10, waited
            assert account_rows(state.engine, [api.account_id]) == before  # rolled back whole
            done = api.post(path, body, key=key)
            assert done.status_code == 200, done.text
            assert "Idempotent-Replayed" not in done.headers
            assert len(api.ok(api.get(listing))["data"]) == 1


def test_an_abandoned_export_download_stops_reading() -> None:
    """A client that goes away mid-download: the read-ahead thread stops and closes the
    cursor; at most a couple of partitions were read ahead."""
    produced: list[int] = []
    closed = threading.Event()

    def partitions() -> Iterator[list[int]]:
        try:
            n = 0
            while True:
                produced.append(n)
                yield [n]
                n += 1
        finally:
            closed.set()

    reader = exports_service._read_ahead(partitions())  # type: ignore[arg-type]
    assert next(reader) == [0]
    reader.close()
    assert closed.wait(5)
    assert len(produced) <= 4
    assert not [t for t in threading.enumerate() if t.name == "export-read-ahead" and t.is_alive()]


# --- 8. the console's security headers and cookies ---------------------------------------------

STRICT_REFERRER = {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}


def csp_of(response: httpx.Response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def assert_secure_page(response: httpx.Response, where: str) -> None:
    assert response.headers["Content-Type"].startswith("text/html"), where
    csp = csp_of(response)
    assert csp.get("frame-ancestors") in (["'none'"], ["'self'"]), (where, csp)
    assert csp.get("default-src") == ["'self'"], (where, csp)
    for directive in ("script-src", "style-src", "default-src"):
        sources = csp.get(directive, csp["default-src"])
        assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources, where
        assert "*" not in sources and "data:" not in sources, where
    assert csp.get("form-action") == ["'self'"], (where, csp)
    assert "base-uri" in csp, (where, csp)
    assert response.headers["X-Content-Type-Options"] == "nosniff", where
    assert response.headers["Referrer-Policy"] in STRICT_REFERRER, where
    frame_options = response.headers.get("X-Frame-Options")
    assert frame_options is None or frame_options.upper() in ("DENY", "SAMEORIGIN"), where
    assert "no-store" in response.headers.get("Cache-Control", ""), where


def test_console_pages_send_security_headers(client: TestClient, api: Api) -> None:
    app = client.app
    invoice = api.open_invoice()
    anonymous = TestClient(app, base_url="http://testserver")
    sign_in = anonymous.get("/console/login")
    assert_secure_page(sign_in, "sign-in page")
    unsigned = anonymous.get("/console", follow_redirects=False)
    assert unsigned.status_code in (200, 303)
    if unsigned.status_code == 200:
        assert_secure_page(unsigned, "/console signed out")
    token = re.search(r'name="csrf_token" value="([^"]+)"', sign_in.text)
    assert token is not None
    wrong = anonymous.post(
        "/console/login", data={"csrf_token": token.group(1), "secret_key": "sk_wrong"}
    )
    assert wrong.status_code == 401
    assert_secure_page(wrong, "wrong key")
    forged = anonymous.post("/console/login", data={"csrf_token": "forged", "secret_key": "x"})
    assert forged.status_code == 403
    assert_secure_page(forged, "CSRF refusal")

    console = Console(app, api.secret_key)  # type: ignore[arg-type]
    for path in (
        "/console",
        "/console/invoices",
        f"/console/invoices/{invoice['id']}",
        "/console/exceptions",
        "/console/payments",
        "/console/reconciliation",
        "/console/exports",
        "/console/invoices/in_unknown",
    ):
        page = console.get(path)
        assert page.status_code in (200, 404), path
        assert_secure_page(page, path)
        assert 'type="password"' not in page.text, path  # no key field once signed in
    for path in ("/console/static/console.js", "/console/static/console.css"):
        asset = anonymous.get(path)
        assert asset.status_code == 200 and asset.headers["X-Content-Type-Options"] == "nosniff"
    pdf = console.get(f"/console/invoices/{invoice['id']}/pdf")
    assert pdf.status_code == 200 and pdf.headers["X-Content-Type-Options"] == "nosniff"
    assert re.search(r'<form[^>]*method="post"', sign_in.text, re.IGNORECASE), (
        "the key is posted, never put in a URL (access logs, history, Referer)"
    )


def cookies_set(response: httpx.Response) -> dict[str, dict[str, str]]:
    """name → attributes (lowercased; `value` is the cookie's value) of every Set-Cookie."""
    out: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        name, _, value = first.partition("=")
        parsed = {"value": value}
        for attribute in attributes:
            key, _, attribute_value = attribute.partition("=")
            parsed[key.lower()] = attribute_value.lower()
        out[name] = parsed
    return out


def assert_cookie(cookie: dict[str, str], *, secure: bool) -> None:
    assert "httponly" in cookie, cookie
    assert cookie.get("samesite") in ("lax", "strict"), cookie
    assert cookie.get("path") in ("/console", "/"), cookie
    assert ("secure" in cookie) is secure, cookie


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure-cookies"])
def test_console_cookies(db_url: str, monkeypatch: pytest.MonkeyPatch, secure: bool) -> None:
    if secure:
        monkeypatch.setenv("INVOICETRAIL_CONSOLE_SECURE_COOKIES", "true")
    app = create_app(make_settings(db_url))
    assert app.state.invoicetrail.settings.console_secure_cookies is secure
    with TestClient(app, base_url="http://testserver") as browser:
        _account, key = create_account(app.state.invoicetrail)
        form = browser.get("/console/login")
        login_cookie = cookies_set(form)["it_login_csrf"]
        assert_cookie(login_cookie, secure=secure)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        data = {"csrf_token": token.group(1), "secret_key": key + "x"}
        headers = {"Cookie": f"it_login_csrf={login_cookie['value']}"}
        wrong = browser.post("/console/login", data=data, headers=headers)
        assert wrong.status_code == 401
        assert_cookie(cookies_set(wrong)["it_login_csrf"], secure=secure)
        signed = browser.post(
            "/console/login",
            data={**data, "secret_key": key},
            headers=headers,
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        session = cookies_set(signed)["it_console"]
        assert_cookie(session, secure=secure)
        assert 0 < int(session["max-age"]) <= 12 * 3600
        # Only the session token's hash is stored.
        with app.state.invoicetrail.engine.connect() as connection:
            stored = repr(connection.execute(text("SELECT * FROM console_sessions")).all())
        assert session["value"] not in stored
        assert hashlib.sha256(session["value"].encode()).hexdigest() in stored
