"""Hostile input (Reliability suite, item 3): whatever arrives, the answer is a documented 4xx
(or the 2xx SPEC names), never a 5xx, never a body that breaks `/openapi.json`, and a refused
request changes nothing.

- schemathesis, in-process against the real ASGI app and a real database: every operation of
  `/openapi.json` (examples + fuzzing, and in the full run the coverage phase), then stateful
  scenarios along the links schemathesis infers (the document declares none).
- The provider webhook route under hypothesis: random bytes, broken JSON, wrong encodings,
  garbled and huge signature headers, huge header values, bodies at and over the limit.
- Direct cases: JSON nesting at 64/65 levels, body and header limits, Unicode in names.

`make test` runs a fast subset (schemathesis: 5 examples per operation, SQLite only);
`make reliability` (INVOICETRAIL_RELIABILITY_FULL=1) runs 100 examples per operation plus the
coverage phase on SQLite and PostgreSQL. The webhook and direct cases run on both backends.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from schemathesis import Case
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text
from starlette.testclient import TestClient

from conftest import (
    PG_TEST_DB,
    Api,
    create_account,
    make_settings,
    prepare_postgres_database,
    prepare_sqlite_database,
    row_counts,
)
from invoicetrail.api import create_app
from invoicetrail.core.http import AppState
from invoicetrail.invoices import dunning
from reliability import FULL, scaled
from servers import running_server

STRIPE_SECRET = "whsec_hostile_stripe_secret_0123456789"
SW_SECRET = "whsec_" + base64.b64encode(b"hostile standard webhooks key!!!").decode()
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
BODY_BYTES_MAX = 1_048_576  # the default INVOICETRAIL_BODY_BYTES_MAX the shared app runs with
JSON_DEPTH_MAX = 64
SPEC_HEADER_BYTES = 16 * 1024


# === schemathesis against /openapi.json ========================================================

FUZZ_EXAMPLES = scaled(5, 100)
STATEFUL_SCENARIOS = scaled(8, 100)
STATEFUL_STEPS = scaled(6, 12)
FUZZ_BACKENDS = ["sqlite", "postgresql"] if FULL else ["sqlite"]


def request_id_is_repeated(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """SPEC: every response carries `Request-Id`; an error body repeats it."""
    request_ids = response.headers.get("request-id") or []
    assert request_ids and request_ids[0].startswith("req_"), "no Request-Id header"
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert body["error"]["request_id"] == request_ids[0], "error.request_id != Request-Id"
    return None


# Status code conformance is meaningful here: SPEC says /openapi.json lists every status each
# operation returns. Not chosen: positive_data_acceptance (the API also checks what JSON Schema
# cannot say: ISO codes, ids that exist, JSON integers rather than 1.0) and negative_data_rejection.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    request_id_is_repeated,
]


@dataclass
class FuzzTarget:
    """One app on one database, one account with one object of every kind, and what was sent."""

    backend: str
    app: FastAPI
    secret_key: str
    seeds: dict[str, list[str]]
    schema: Any = None
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)

    def prepare(self, case: Case) -> None:
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {self.secret_key}"
        if case.method.upper() in WRITE_METHODS:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        case.headers = headers

    def record(self, case: Case, response: Any) -> None:
        self.answers[(case.operation.label, response.status_code)] += 1
        if case.operation.path == "/v1/api_keys/rotate" and response.status_code == 200:
            # A rotation may retire the old key at once; keep fuzzing with the new one.
            self.secret_key = json.loads(response.content)["secret_key"]


def _seed(api: Api) -> dict[str, list[str]]:
    """One object of every kind, so fuzzed ids and bodies reach past `404`."""
    today = datetime.now(UTC).date()
    period = today.strftime("%Y-%m")
    customer = api.customer(email="seed@example.com", external_reference="seed-customer")
    draft = api.draft(customer["id"])
    open_invoice = api.open_invoice()
    paid = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{paid['id']}/pay", {"reference": "seed-pay", "method": "cash"}))
    void = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{void['id']}/void"))
    uncollectible = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{uncollectible['id']}/mark_uncollectible"))
    note = api.ok(
        api.post("/v1/credit_notes", {"invoice": open_invoice["id"], "reason": "x", "amount": 1})
    )
    stripe_pe = api.ok(
        api.post("/v1/provider_endpoints", {"provider": "stripe", "secret": STRIPE_SECRET})
    )
    sw_pe = api.ok(
        api.post("/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": SW_SECRET})
    )
    hook = api.ok(api.post("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hook"}))
    # An unmatched transfer: parked cash and an exception item.
    transfer = {
        "type": "transfer.received",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "payment_reference": "seed-transfer",
            "amount": 500,
            "currency": "eur",
            "method": "bank_transfer",
            "reference_code": "NOMATCH",
            "occurred_at": datetime.now(UTC).isoformat(),
        },
    }
    body = json.dumps(transfer).encode()
    assert post_webhook(api.client, sw_pe["url"], body, sign_sw(body)).status_code == 200
    export = api.ok(api.post("/v1/exports", {"format": "csv", "period": period}))
    run = api.ok(api.post("/v1/reconciliation_runs", {"as_of": today.isoformat()}))

    def ids(path: str) -> list[str]:
        rows = api.ok(api.get(path, {"limit": 100}))["data"]
        return [row.get("id") or row["name"] for row in rows]

    return {
        "invoice": [draft["id"], open_invoice["id"], paid["id"], void["id"], uncollectible["id"]],
        "customer": [customer["id"]],
        "legal_entity": ids("/v1/legal_entities"),
        "credit_note": [note["id"]],
        "payment": ids("/v1/payments"),
        "endpoint": [stripe_pe["id"], sw_pe["id"], hook["id"]],
        "event": ids("/v1/events")[:20] + ids("/v1/provider_events")[:10],
        "exception_item": ids("/v1/exception_items"),
        "export": [export["id"]],
        "export_row": ids(f"/v1/exports/{export['id']}/rows") or ["exr_none"],
        "run": [run["id"]],
        "launch_gate": ids("/v1/launch_gates"),
        "journal_entry": ids("/v1/journal_entries")[:20],
        "period": [period, (today - timedelta(days=40)).strftime("%Y-%m")],
        "provider": ["stripe", "standard_webhooks", "simulated"],
        "currency": ["eur", "EUR", "usd", "jpy", "kwd", "mxn"],
        "country": ["DE", "de", "FR", "NL", "MX", "MY", "US"],
    }


# Which seeded values a parameter draws from (half the time; the rest is schemathesis's own).
BINDINGS = {
    "path.invoice_id": "invoice",
    "path.customer_id": "customer",
    "path.entity_id": "legal_entity",
    "path.note_id": "credit_note",
    "path.payment_id": "payment",
    "path.endpoint_id": "endpoint",
    "path.event_id": "event",
    "path.item_id": "exception_item",
    "path.export_id": "export",
    "path.row_id": "export_row",
    "path.run_id": "run",
    "path.entry_id": "journal_entry",
    "path.name": "launch_gate",
    "path.period": "period",
    "path.provider": "provider",
    "query.invoice": "invoice",
    "query.customer": "customer",
    "query.period": "period",
    "query.starting_after": "invoice",
    "body.customer": "customer",
    "body.invoice": "invoice",
    "body.legal_entity": "legal_entity",
    "body.currency": "currency",
    "body.country": "country",
    "body.address.country": "country",
}


def _schemathesis_config(seeds: dict[str, list[str]]) -> Any:
    return schemathesis.Config.from_dict(
        {
            "dictionaries": {name: {"values": values} for name, values in seeds.items()},
            "parameters": {
                key: {"dictionary": name, "probability": 0.5} for key, name in BINDINGS.items()
            },
            "generation": {"mode": "all"},
            "phases": {
                # Every boundary value the schema defines: many cases, so only in the full run.
                "coverage": {"enabled": FULL},
                # Scenarios should get somewhere: valid data along the links.
                "stateful": {"generation": {"mode": "positive"}},
            },
        }
    )


@pytest.fixture(scope="module", params=FUZZ_BACKENDS)
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    if request.param == "sqlite":
        url = prepare_sqlite_database(tmp_path_factory.mktemp("hostile"))
    else:
        url = prepare_postgres_database(PG_TEST_DB + "_hostile")
    app = create_app(make_settings(url, allow_private_webhook_targets=True))
    state: AppState = app.state.invoicetrail
    account_id, secret_key = create_account(state)
    seeds = _seed(Api(TestClient(app), account_id, secret_key))
    target = FuzzTarget(backend=request.param, app=app, secret_key=secret_key, seeds=seeds)
    target.schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=_schemathesis_config(seeds)
    )
    yield target
    state.engine.dispose()


@pytest.fixture
def fuzz_schema(fuzz_target: FuzzTarget) -> Any:
    return fuzz_target.schema


fuzzed = schemathesis.pytest.from_fixture("fuzz_schema")


@fuzzed.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
def test_every_operation_answers_as_documented(case: Case, fuzz_target: FuzzTarget) -> None:
    fuzz_target.prepare(case)
    response = case.call()
    fuzz_target.record(case, response)
    case.validate_response(response, checks=CHECKS)


def test_stateful_scenarios_along_inferred_links(fuzz_target: FuzzTarget) -> None:
    """The document declares no OpenAPI links; schemathesis infers them (create → get, update,
    actions) from the response and body schemas, and we walk them with valid data."""
    schema = fuzz_target.schema
    base = schema.as_state_machine()
    assert schema.statistic.transitions.total > 0, "no links inferred"
    target = fuzz_target
    failures: list[Exception] = []
    scenarios = Counter[str]()

    class Scenarios(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            scenarios["started"] += 1

        def before_call(self, case: Case) -> None:
            target.prepare(case)

        def after_call(self, response: Any, case: Case) -> None:
            scenarios["steps"] += 1
            target.record(case, response)

        def validate_response(
            self,
            response: Any,
            case: Case,
            additional_checks: Any = None,
            **kwargs: Any,
        ) -> None:
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as failure:
                failures.append(failure)
                raise

    # The database outlives each scenario, so Hypothesis cannot replay one exactly (it may stop
    # with `Flaky`): generate only, keep our own record of check failures, and, as schemathesis's
    # own runner does, start again after a `Flaky` until the scenarios are done.
    for _ in range(10):
        try:
            Scenarios.run(
                settings=settings(
                    max_examples=STATEFUL_SCENARIOS,
                    stateful_step_count=STATEFUL_STEPS,
                    phases=[Phase.generate],
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                )
            )
        except Flaky:
            if failures:
                raise failures[0] from None
        assert not failures
        if scenarios["started"] >= STATEFUL_SCENARIOS:
            break
    assert scenarios["started"] >= STATEFUL_SCENARIOS
    print(
        f"\n[{target.backend}] {scenarios['started']} scenarios, {scenarios['steps']} steps, "
        f"{schema.statistic.transitions.total} inferred links"
    )


def test_fuzzing_reached_every_operation_with_a_working_key(fuzz_target: FuzzTarget) -> None:
    """Guards the two tests above: they ran, were authenticated, and got past validation."""
    answers = fuzz_target.answers
    if not answers:
        pytest.skip("the schemathesis tests did not run in this session")
    operations = {label for label, _ in answers}
    listed = [
        f"{method.upper()} {path}"
        for path, item in fuzz_target.app.openapi()["paths"].items()
        for method in item
    ]
    assert set(listed) <= operations, sorted(set(listed) - operations)
    statuses = Counter(status for _, status in answers.elements())
    assert not any(status >= 500 for status in statuses), statuses
    assert statuses[401] == 0, "the fuzzing key stopped working"
    # Seeded ids and codes get requests past validation and 404 (not every one: it is random).
    succeeded = {label for (label, status) in answers if 200 <= status < 300}
    assert len(succeeded) >= 10, sorted(succeeded)
    print(
        f"\n[{fuzz_target.backend}] {len(operations)} operations, {sum(statuses.values())} "
        f"requests; statuses {dict(sorted(statuses.items()))}"
    )


# === the provider webhook route under fuzzing ==================================================


def sign_stripe(
    body: bytes, *, secret: str = STRIPE_SECRET, at: int | None = None
) -> dict[str, str]:
    """As Stripe signs (HMAC-SHA256 over `t.` + the raw bytes, the secret string as key)."""
    timestamp = at if at is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={mac}"}


def sign_sw(
    body: bytes, *, secret: str = SW_SECRET, at: int | None = None, msg_id: str | None = None
) -> dict[str, str]:
    """As Standard Webhooks signs (HMAC-SHA256 over `id.timestamp.` + the raw bytes)."""
    timestamp = at if at is not None else int(time.time())
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


def post_webhook(
    client: TestClient, url: str, body: bytes, headers: dict[str, str] | list[tuple[bytes, bytes]]
) -> httpx.Response:
    """Through httpx's ASGI transport, which hands the app the header octets as sent (like a
    server); Starlette's TestClient would re-encode non-ASCII header values as UTF-8."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.post(url, content=body, headers=headers)

    return asyncio.run(send())


def _stored_event(state: AppState, request_id: str) -> dict[str, Any]:
    with state.engine.connect() as connection:
        row = (
            connection.execute(
                text(
                    "SELECT body, body_bytes, body_truncated, headers, verification, outcome "
                    "FROM provider_events WHERE request_id = :r"
                ),
                {"r": request_id},
            )
            .mappings()
            .one()
        )
    stored = dict(row)
    stored["body"] = bytes(stored["body"])
    stored["body_truncated"] = bool(stored["body_truncated"])  # SQLite answers 0/1
    if isinstance(stored["headers"], str):
        stored["headers"] = json.loads(stored["headers"])
    return stored


def money_state(api: Api) -> dict[str, Any]:
    """Everything hostile webhook input must not move: invoices, payments, books, credits."""
    snapshot: dict[str, Any] = {"rows": row_counts(api)}
    for path in ("/v1/invoices", "/v1/payments", "/v1/journal_entries", "/v1/customers"):
        snapshot[path] = api.ok(api.get(path, {"limit": 100}))["data"]
    snapshot["exceptions"] = len(api.ok(api.get("/v1/exception_items", {"limit": 100}))["data"])
    return snapshot


@dataclass(frozen=True)
class Delivery:
    provider: str  # stripe | standard_webhooks
    body: bytes
    signature: str  # valid | none | garbage | wrong_secret | stale
    garbage: bytes  # the signature header value when `signature == "garbage"`
    extra_headers: tuple[tuple[bytes, bytes], ...]


# Header values as they can arrive on the wire: latin-1 octets, no CR, LF or NUL.
HEADER_OCTETS = st.sampled_from([*range(0x20, 0x7F), *range(0x80, 0x100), 0x09])


def header_values(max_size: int) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.lists(HEADER_OCTETS, max_size=64).map(bytes),
        st.builds(lambda n, c: bytes([c]) * n, st.integers(0, max_size), HEADER_OCTETS),
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
EVENT_TYPES = st.sampled_from(
    [
        "payment_intent.succeeded",
        "payment_intent.processing",
        "payment_intent.payment_failed",
        "charge.refunded",
        "charge.dispute.created",
        "payment.succeeded",
        "payment.refunded",
        "transfer.received",
        "customer.created",
    ]
)


def _event_like(event_type: str, fields: dict[str, Any], data: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, **fields, "data": {"object": data, **data}}).encode()


def _broken_json(value: Any, cut: int, junk: bytes) -> bytes:
    encoded = json.dumps(value).encode()
    cut = cut % (len(encoded) + 1)
    return encoded[:cut] + junk + encoded[cut:]


BODIES = st.one_of(
    st.binary(max_size=512),
    st.builds(_broken_json, JSON_VALUES, st.integers(0, 400), st.binary(min_size=1, max_size=4)),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    # Events with the right shape and wrong or random field types.
    st.builds(
        _event_like,
        EVENT_TYPES,
        st.dictionaries(st.sampled_from(["id", "created", "timestamp"]), JSON_VALUES),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "amount",
                    "amount_received",
                    "currency",
                    "metadata",
                    "payment_method_types",
                    "payment_intent",
                    "payment_reference",
                    "reference_code",
                    "invoice",
                    "method",
                    "occurred_at",
                ]
            ),
            JSON_VALUES,
        ),
    ),
    # Wrong encodings of a JSON document.
    st.builds(
        lambda v, codec: json.dumps(v, ensure_ascii=False).encode(codec, errors="replace"),
        JSON_VALUES,
        st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252"]),
    ),
    # UTF-8 with a BOM, overlong forms, encoded surrogates, truncated sequences.
    st.sampled_from(
        [
            b'\xef\xbb\xbf{"id": "evt_bom", "type": "x"}',
            b'{"id": "\xc0\xaf", "type": "x"}',
            b'{"id": "\xed\xa0\x80", "type": "x"}',
            b'{"id": "\xf0\x9f\x98", "type": "x"}',
            b'{"id": "evt_\\u0000", "type": "x\\ud800"}',
            b'{"id": 1e999, "type": NaN, "created": -Infinity}',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
            b"",
            b"null",
        ]
    ),
    # At and just over the body limit (the 413 is the route's, before any parsing).
    st.integers(-2, 2).map(lambda d: b"{" + b" " * (BODY_BYTES_MAX + d - 2) + b"}"),
)

DELIVERIES = st.builds(
    Delivery,
    provider=st.sampled_from(["stripe", "standard_webhooks"]),
    body=BODIES,
    signature=st.sampled_from(["valid", "none", "garbage", "wrong_secret", "stale"]),
    garbage=st.one_of(
        header_values(20_000),
        st.builds(
            lambda t, v: f"t={t},v1={v}".encode("latin-1"),
            st.one_of(st.integers(), st.text(max_size=10).map(lambda s: s.encode().hex())),
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=70),
        ),
    ),
    extra_headers=st.lists(
        st.tuples(
            st.sampled_from([b"x-hostile", b"x-forwarded-for", b"user-agent", b"cookie"]),
            header_values(40_000),
        ),
        max_size=3,
        unique_by=lambda pair: pair[0],
    ).map(tuple),
)


def _headers_for(delivery: Delivery) -> list[tuple[bytes, bytes]]:
    sign = sign_stripe if delivery.provider == "stripe" else sign_sw
    signed: dict[str, str] = {}
    if delivery.signature == "valid":
        signed = sign(delivery.body)
    elif delivery.signature == "wrong_secret":
        other = "whsec_" + base64.b64encode(b"some other provider key 12345678").decode()
        signed = sign(delivery.body, secret=other)
    elif delivery.signature == "stale":
        signed = sign(delivery.body, at=int(time.time()) - 3600)
    elif delivery.signature == "garbage":
        signed = sign(delivery.body)
        name = "Stripe-Signature" if delivery.provider == "stripe" else "webhook-signature"
        signed[name] = delivery.garbage.decode("latin-1")
    headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in signed.items()]
    return headers + list(delivery.extra_headers)


@dataclass
class Inbox:
    api: Api
    urls: dict[str, str]

    @property
    def state(self) -> AppState:
        state: AppState = self.api.client.app.state.invoicetrail  # type: ignore[attr-defined]
        return state


@pytest.fixture
def inbox(api: Api) -> Inbox:
    urls = {}
    for provider, secret in (("stripe", STRIPE_SECRET), ("standard_webhooks", SW_SECRET)):
        created = api.ok(
            api.post("/v1/provider_endpoints", {"provider": provider, "secret": secret})
        )
        urls[provider] = created["url"]
    # Invoices in the states money can move: an open one and a partly paid one.
    api.open_invoice()
    partly = api.open_invoice()
    api.ok(
        api.post(
            f"/v1/invoices/{partly['id']}/pay",
            {"reference": f"part-{uuid.uuid4().hex}", "amount": 100},
        )
    )
    return Inbox(api=api, urls=urls)


def test_webhook_fuzz_is_refused_kept_and_changes_nothing(inbox: Inbox) -> None:
    api = inbox.api

    @settings(
        max_examples=scaled(20, 400),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(delivery=DELIVERIES)
    def deliver(delivery: Delivery) -> None:
        headers = _headers_for(delivery)
        before = money_state(api)
        response = post_webhook(api.client, inbox.urls[delivery.provider], delivery.body, headers)
        status = response.status_code
        assert status < 500, response.text
        request_id = response.headers["Request-Id"]
        answer = response.json()
        stored = _stored_event(inbox.state, request_id)
        too_large = len(delivery.body) > BODY_BYTES_MAX
        signed_utf8 = delivery.signature == "valid"
        try:
            delivery.body.decode("utf-8")
        except UnicodeDecodeError:
            signed_utf8 = False
        if too_large:
            assert status == 413, response.text
            assert answer["error"]["code"] == "payload_too_large"
            assert stored["body_truncated"] is True
            assert stored["body_bytes"] == len(delivery.body)
        elif signed_utf8:
            # Verified: SPEC answers 200 once its effects (if any) are committed.
            assert status == 200, response.text
            assert stored["verification"] == "verified"
        else:
            assert status == 400, response.text
            assert answer["error"]["code"] in ("signature_invalid", "timestamp_out_of_tolerance")
            assert answer["error"]["request_id"] == request_id
            assert stored["verification"] == answer["error"]["code"]
            assert stored["outcome"] == "refused"
        # The raw request is kept as it came (headers lower-cased, credentials dropped).
        if not too_large:
            assert stored["body"] == delivery.body
            assert stored["body_bytes"] == len(delivery.body)
        for name, value in headers:
            if name in (b"cookie", b"authorization"):
                assert name.decode() not in stored["headers"]
            else:
                assert stored["headers"][name.decode()] == value.decode("latin-1")
        after = money_state(api)
        if status == 200:
            # Verified garbage may raise an exception item or park unmatched cash; it never
            # touches an invoice (random references name none of this account's).
            assert after["/v1/invoices"] == before["/v1/invoices"]
        else:
            assert after == before

    deliver()


# --- signed events with hostile contents (regressions of what the fuzzing found) -------------

SIGNED_HOSTILE_STRIPE = [  # created: NaN, ±huge; a list as method; int currency; NUL; surrogate …
    b'{"id": "evt_nan", "type": "customer.created", "created": NaN}',
    b'{"id": "evt_inf", "type": "customer.created", "created": 1e999}',
    b'{"id": "evt_huge", "type": "customer.created", "created": -1e20}',
    b'{"id": "evt_big", "type": "customer.created", "created": 99999999999999999999}',
    b'{"id": "evt_pmt", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1",'
    b' "amount_received": 100, "currency": "eur", "payment_method_types": [[]]}}}',
    b'{"id": "evt_cur", "type": "charge.refunded", "data": {"object":'
    b' {"payment_intent": "pi_1", "currency": 5}}}',
    b'{"id": "evt_nul\\u0000", "type": "customer.created"}',
    b'{"id": "evt_sur", "type": "customer.created\\ud800"}',
    b'{"id": "evt_nul2", "type": "payment_intent.succeeded", "data": {"object": {"id":'
    b' "pi_\\u0000", "amount_received": 100, "currency": "eur"}}}',
    b'{"id": "evt_long", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_'
    + b"x" * 300
    + b'", "amount_received": 100, "currency": "eur"}}}',
    b'{"id": "evt_c50", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_2",'
    b' "amount_received": 100, "currency": "' + b"e" * 50 + b'"}}}',
]
SIGNED_HOSTILE_SW = [
    b'{"type": "payment.succeeded", "data": {"payment_reference": "r\\u0000", "amount": 5,'
    b' "currency": "eur"}}',
    b'{"type": "transfer.received", "data": {"payment_reference": "r1", "amount": 5,'
    b' "currency": "eur\\ud800", "reference_code": "X"}}',
    b'{"type": "transfer.received", "data": {"payment_reference": "' + b"r" * 300 + b'",'
    b' "amount": 5, "currency": "eur", "reference_code": "X"}}',
    b'{"type": "transfer.received", "data": {"payment_reference": "r2", "amount": 5,'
    b' "currency": "' + b"e" * 50 + b'", "reference_code": "X"}}',
    b'{"type": "payment.succeeded", "data": {"payment_reference": "r3", "amount": 5,'
    b' "currency": "eur", "occurred_at": "9999-12-31T23:59:59-23:59"}}',
    b'{"type": "payment.succeeded", "data": {"payment_reference": "r4", "amount": 5,'
    b' "currency": "eur", "method": ["ach"], "invoice": {"id": 1}}}',
]


def test_signed_events_with_hostile_contents_are_kept_never_5xx(inbox: Inbox) -> None:
    """Verified events are the provider's word: SPEC answers 200 for every one of them, and a
    content no column can hold is kept as `unprocessable` with an exception item."""
    api = inbox.api
    cases = [("stripe", body) for body in SIGNED_HOSTILE_STRIPE]
    cases += [("standard_webhooks", body) for body in SIGNED_HOSTILE_SW]
    for provider, body in cases:
        before = money_state(api)
        sign = sign_stripe if provider == "stripe" else sign_sw
        response = post_webhook(api.client, inbox.urls[provider], body, sign(body))
        assert response.status_code == 200, (body[:120], response.text)
        outcome = response.json()["outcome"]
        assert outcome in ("unprocessable", "ignored", "unmatched"), body[:120]
        stored = _stored_event(inbox.state, response.headers["Request-Id"])
        assert stored["verification"] == "verified"
        assert stored["body"] == body
        after = money_state(api)
        assert after["/v1/invoices"] == before["/v1/invoices"], body[:120]
        if outcome == "unprocessable":
            assert after["/v1/payments"] == before["/v1/payments"], body[:120]
            assert after["exceptions"] == before["exceptions"] + 1, body[:120]


GARBLED_STRIPE_SIGNATURES = [
    "t=1,v1=" + "é" * 64,  # non-ASCII: the library's compare_digest raised TypeError
    "t=\u00ff,v1=abc",
    "v1=\u00e9,t=1",
    "t=" + "9" * 5000 + ",v1=ab",  # past int()'s digit limit
    "t=1," + "v1=ab," * 2000,
    ",,,=,=,t,v1",
]
HOSTILE_WEBHOOK_PATHS = [
    "/v1/providers/stripe/webhooks/pe_%00x",  # PostgreSQL text cannot hold U+0000
    "/v1/providers/str%00ipe/webhooks/pe_x",
    "/v1/providers/stripe/webhooks/%ED%A0%80",
    "/v1/providers/stripe/webhooks/" + "%F0%9F%98%80" * 200,
    "/v1/providers/" + "p" * 1000 + "/webhooks/pe_x",
]


def test_garbled_signatures_and_paths_are_400_kept_and_change_nothing(inbox: Inbox) -> None:
    api = inbox.api
    before = money_state(api)
    for signature in GARBLED_STRIPE_SIGNATURES:
        header = [(b"stripe-signature", signature.encode("latin-1"))]
        response = post_webhook(api.client, inbox.urls["stripe"], b"{}", header)
        assert response.status_code == 400, (signature[:40], response.text)
        assert response.json()["error"]["code"] == "signature_invalid"
        stored = _stored_event(inbox.state, response.headers["Request-Id"])
        assert stored["headers"]["stripe-signature"] == signature
    for path in HOSTILE_WEBHOOK_PATHS:
        response = post_webhook(api.client, path, b"{}", sign_stripe(b"{}"))
        assert response.status_code == 400, (path[:60], response.text)
        assert response.json()["error"]["code"] == "unknown_endpoint"
        assert _stored_event(inbox.state, response.headers["Request-Id"])["body"] == b"{}"
    assert money_state(api) == before


# === direct cases ===============================================================================


def nested(depth: int) -> Any:
    """`depth` levels of containers, alternating objects and arrays."""
    value: Any = "x"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def send_raw(api: Api, method: str, path: str, body: bytes) -> httpx.Response:
    headers = {
        **api.auth,
        "Idempotency-Key": uuid.uuid4().hex,
        "Content-Type": "application/json",
    }
    return api.client.request(method, path, content=body, headers=headers)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/customers"),
        ("POST", "/v1/invoices"),
        ("PATCH", "/v1/invoices/{draft}"),
        ("POST", "/v1/invoices/{draft}/finalize"),
        ("POST", "/v1/webhook_endpoints"),
        ("POST", "/v1/exports"),
        ("PUT", "/v1/dunning_settings"),
    ],
)
def test_nesting_over_64_levels_is_400_invalid_json_on_every_write(
    api: Api, method: str, path: str
) -> None:
    draft = api.draft()
    path = path.replace("{draft}", draft["id"])
    before = row_counts(api)
    # The whole body counts: the top-level object is level 1.
    deep = json.dumps({"metadata": nested(JSON_DEPTH_MAX)}).encode()
    response = send_raw(api, method, path, deep)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"
    within = json.dumps({"metadata": nested(JSON_DEPTH_MAX - 1)}).encode()
    response = send_raw(api, method, path, within)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] != "invalid_json"  # parsed, then validated
    assert row_counts(api) == before
    assert api.ok(api.get(f"/v1/invoices/{draft['id']}"))["status"] == "draft"


def test_deeply_nested_signed_events_are_accepted_or_flagged(inbox: Inbox) -> None:
    """Provider payloads ignore unknown fields; depth alone never turns into a 5xx."""
    for depth in (JSON_DEPTH_MAX, JSON_DEPTH_MAX + 1, 100_000):
        if depth > 10_000:
            body = b'{"id": "evt_deep", "type": "x", "extra": ' + b"[" * depth + b"]" * depth
            body += b"}"
        else:
            body = json.dumps({"id": f"evt_{depth}", "type": "x", "extra": nested(depth)}).encode()
        response = post_webhook(inbox.api.client, inbox.urls["stripe"], body, sign_stripe(body))
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] in ("ignored", "unprocessable")


def test_body_limit_is_413_everywhere_and_exactly_the_limit_is_read(inbox: Inbox) -> None:
    api = inbox.api
    draft = api.draft()
    before = money_state(api)
    over = b"{" + b" " * (BODY_BYTES_MAX - 1) + b"}"
    for method, path in (
        ("POST", "/v1/customers"),
        ("PATCH", f"/v1/invoices/{draft['id']}"),
        ("POST", f"/v1/invoices/{draft['id']}/finalize"),
    ):
        response = send_raw(api, method, path, over)
        assert response.status_code == 413, (path, response.text)
        assert response.json()["error"]["code"] == "payload_too_large"
    for provider, url in inbox.urls.items():
        response = post_webhook(api.client, url, over, {})
        assert response.status_code == 413, (provider, response.text)
        stored = _stored_event(inbox.state, response.headers["Request-Id"])
        assert stored["body_truncated"] is True and stored["body_bytes"] == len(over)
        # Exactly the limit is read and verified (and refused for its missing signature).
        exact = over[:-2] + b"}"
        response = post_webhook(api.client, url, exact, {})
        assert response.status_code == 400, response.text
        assert _stored_event(inbox.state, response.headers["Request-Id"])["body"] == exact
    assert money_state(api) == before


def test_a_taken_number_prefix_is_409_not_500(api: Api) -> None:
    """Found by the fuzzing: a second legal entity with a used `number_prefix` hit the unique
    constraint (500); a default prefix could also collide with an explicitly chosen one."""
    first = api.ok(api.post("/v1/legal_entities", {"name": "A", "country": "DE"}))
    taken = first["number_prefix"]
    before = row_counts(api)
    for prefix in (taken, "INV"):  # INV: the account's default entity
        response = api.post(
            "/v1/legal_entities", {"name": "B", "country": "DE", "number_prefix": prefix}
        )
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("duplicate_number_prefix", "number_prefix")
    assert row_counts(api) == before
    # The next default prefix skips one chosen explicitly.
    count = len(api.ok(api.get("/v1/legal_entities", {"limit": 100}))["data"])
    ahead = f"INV{count + 2}"
    api.ok(api.post("/v1/legal_entities", {"name": "C", "country": "DE", "number_prefix": ahead}))
    defaulted = api.ok(api.post("/v1/legal_entities", {"name": "D", "country": "DE"}))
    assert defaulted["number_prefix"] not in (taken, ahead, "INV")


def test_calendar_edges_are_answered_never_5xx(inbox: Inbox) -> None:
    """Found by fuzzing dates: valid dates and instants at the ends of the calendar overflowed
    date arithmetic (500s, and a worker pass that crashed on every run)."""
    api = inbox.api
    run = api.post("/v1/reconciliation_runs", {"as_of": "0001-01-01"})
    assert run.status_code == 200, run.text
    for period in ("0000-01", "0001-01", "9999-12"):
        closed = api.post(f"/v1/periods/{period}/close")
        assert closed.status_code == 200, closed.text
        reopened = api.post(f"/v1/periods/{period}/reopen", {"reason": "hostile test"})
        assert reopened.status_code == 200, reopened.text
    transfer = {
        "type": "transfer.received",
        "data": {"payment_reference": "e", "amount": 5, "currency": "eur", "reference_code": "Q"},
    }
    body = json.dumps(transfer).encode()
    assert post_webhook(api.client, inbox.urls["standard_webhooks"], body, sign_sw(body)).is_success
    item = api.ok(api.get("/v1/exception_items", {"kind": "unmatched_transfer"}))["data"][0]
    for until in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        snoozed = api.post(f"/v1/exception_items/{item['id']}/snooze", {"until": until})
        assert snoozed.status_code == 400, snoozed.text
        assert snoozed.json()["error"]["param"] == "until"
    # The dunning plan of an invoice due in year 1 (offsets before the due date included).
    today = datetime.now(UTC).date()
    assert dunning.reminder_offset_due((-3, 0, 7, 14), date(1, 1, 1), today, set()) == 14
    assert dunning.reminder_offset_due((-3,), date(9999, 12, 31), today, set()) is None


def test_headers_up_to_16_kib_are_accepted_by_the_real_server(tmp_path: Path) -> None:
    url = prepare_sqlite_database(tmp_path)
    app = create_app(make_settings(url))
    _, secret_key = create_account(app.state.invoicetrail)
    app.state.invoicetrail.engine.dispose()
    auth = f"Bearer {secret_key}"
    with running_server(url) as server, httpx.Client(base_url=server.base_url) as http:
        # SPEC's 16 KiB in total, over a few headers (what httpx adds itself is small).
        pads = {f"X-Pad-{n}": "p" * (SPEC_HEADER_BYTES // 4 - 300) for n in range(4)}
        assert sum(len(k) + len(v) + 4 for k, v in pads.items()) <= SPEC_HEADER_BYTES
        listed = http.get("/v1/customers", headers={"Authorization": auth, **pads})
        assert listed.status_code == 200, listed.text
        created = http.post(
            "/v1/customers",
            json={"name": "Big headers"},
            headers={"Authorization": auth, "Idempotency-Key": "h" * 255, **pads},
        )
        assert created.status_code == 200, created.text
        webhook = http.post("/v1/providers/stripe/webhooks/pe_nope", content=b"{}", headers=pads)
        assert webhook.status_code == 400, webhook.text
        # Far past SPEC's 16 KiB: 431 before anything reads them (the webhook inbox would
        # store them), and the server stays up.
        for path in ("/v1/customers", "/v1/providers/stripe/webhooks/pe_nope"):
            for size in (64 * 1024, 1024 * 1024):
                huge = http.post(
                    path, content=b"{}", headers={"Authorization": auth, "X-Huge": "h" * size}
                )
                assert huge.status_code == 431, huge.text
                error = huge.json()["error"]
                assert (error["code"], error["retryable"]) == ("request_headers_too_large", False)
                assert error["request_id"] == huge.headers["Request-Id"]
        assert http.get("/healthz").status_code == 200


NAME_LIMIT = 256


HOSTILE_NAMES = [
    "😀" * NAME_LIMIT,  # 256 characters, 1024 UTF-8 bytes, 512 UTF-16 units
    "e\u0301" * (NAME_LIMIT // 2),  # combining marks: 256 code points, never normalised
    "👩\u200d👩\u200d👧 family " + "ß" * 100,  # ZWJ sequence
    "\u202eشركة العميل\u202c עברית",  # RTL text and bidi controls
    "\ufeffBOM\ufffe\uffff\U0010ffff\ue000",  # BOM, noncharacters, private use
    "line\u2028sep\u2029para\x85next\x7fdel\ttab",  # separators and controls
    "𝕴𝖓𝖛𝖔𝖎𝖈𝖊 \U0001f1e9\U0001f1ea 漢字",  # astral letters, flag, CJK
]


def test_unicode_names_are_stored_and_returned_unchanged(api: Api) -> None:
    for name in HOSTILE_NAMES:
        customer = api.customer(name=name, address={"country": "DE", "city": name})
        assert customer["name"] == name
        assert api.ok(api.get(f"/v1/customers/{customer['id']}"))["name"] == name
        assert api.ok(api.get("/v1/customers", {"limit": 1}))["data"][0]["name"] == name
        entity = api.ok(api.post("/v1/legal_entities", {"name": name, "country": "DE"}))
        assert api.ok(api.get(f"/v1/legal_entities/{entity['id']}"))["name"] == name
        line = {"description": name, "quantity": "1", "unit_amount": 1}
        draft = api.draft(customer["id"], lines=[line])
        assert api.ok(api.get(f"/v1/invoices/{draft['id']}"))["lines"][0]["description"] == name


def test_the_name_limit_counts_characters(api: Api) -> None:
    before = row_counts(api)
    over = ["😀" * (NAME_LIMIT + 1), "e\u0301" * (NAME_LIMIT // 2) + "e", "a" * (NAME_LIMIT + 1)]
    for name in over:
        for path, body in (
            ("/v1/customers", {"name": name, "address": {"country": "DE"}}),
            ("/v1/legal_entities", {"name": name, "country": "DE"}),
        ):
            response = api.post(path, body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == "name"
    assert row_counts(api) == before


def test_nul_and_lone_surrogates_in_names_are_400(api: Api) -> None:
    before = row_counts(api)
    escaped = [b'"a\\u0000b"', b'"\\u0000"', b'"\\ud800"', b'"x\\udfff"', b'"\\ude00\\ud83d"']
    for raw_name in escaped:
        for path, rest in (("/v1/customers", b""), ("/v1/legal_entities", b', "country": "DE"')):
            response = send_raw(api, "POST", path, b'{"name": ' + raw_name + rest + b"}")
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == "name", error
            assert error["code"] != "internal_error"
    # A surrogate encoded as UTF-8 bytes (not escaped) is no UTF-8 at all: invalid_json.
    response = send_raw(api, "POST", "/v1/customers", b'{"name": "\xed\xa0\x80"}')
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert row_counts(api) == before
