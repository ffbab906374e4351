"""Outbound events to subscriber endpoints (SPEC "Outbound events and deliveries"), on both
backends, against a real HTTP receiver on a loopback port.

The receiver verifies every delivery with the `standardwebhooks` library (the way a subscriber
would), records the `webhook-id`, insists on a `Content-Length` (no chunked bodies) and can be
told to answer 500 or to time out. Deliveries are driven by the delivery job itself
(`deliver_due`, or `Worker.run_once`) on the app's `ManualClock`, so the retry schedule is
walked by moving the clock, never by sleeping.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.testclient import TestClient

from conftest import Api, create_account, make_settings
from invoicetrail.api import create_app
from invoicetrail.core.clock import ManualClock
from invoicetrail.core.config import Settings
from invoicetrail.core.http import AppState
from invoicetrail.webhooks.delivery import deliver_due
from invoicetrail.worker import Worker

HOST = "127.0.0.1"
# SPEC: retries after a failed attempt, each ±10 % jitter; then every 24 h until 3 days.
SCHEDULE = [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 57600]
LATER = 86_400
WINDOW = timedelta(days=3)
JITTER = 0.10
# The job's HTTP timeout in these tests (SPEC: 10 s); the receiver's "timeout" outlasts it.
TIMEOUT_SECONDS = 1.0
RECEIVER_STALL_SECONDS = 1.6


# --- the receiver -----------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    webhook_id: str
    body: bytes
    headers: dict[str, str]
    verified_with: frozenset[str]  # labels of the registered secrets that verify it
    answer: int | str  # the status answered, or "timeout"


@dataclass
class Receiver:
    """A subscriber: `ThreadingHTTPServer` on a free loopback port."""

    stall_seconds: float = RECEIVER_STALL_SECONDS
    received: list[Received] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Called (in the request's thread) before the answer goes out.
    on_request: Callable[[Received], None] | None = None
    _secrets: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    _script: dict[str, deque[int | str]] = field(default_factory=lambda: defaultdict(deque))
    _failing_paths: dict[str, int] = field(default_factory=dict)
    _failing_ids: dict[str, int] = field(default_factory=dict)
    # Requests being answered right now, per path, and the most seen at once.
    inflight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    max_inflight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # -- control --

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The answer's headers and body go out in two writes: without this, Nagle and
            # the sender's delayed ACK cost ~40 ms per keep-alive request.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((HOST, 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str) -> str:
        assert self._server is not None
        return f"http://{HOST}:{self._server.server_address[1]}{path}"

    def expect(self, path: str, label: str, secret: str) -> None:
        """Deliveries to `path` must verify with one of its registered secrets."""
        with self._lock:
            self._secrets[path][label] = secret

    def fail_next(self, path: str, *answers: int | str) -> None:
        """The next requests to `path` get these answers (a status or "timeout")."""
        with self._lock:
            self._script[path].extend(answers)

    def fail_always(self, path: str, status: int | None = 503) -> None:
        with self._lock:
            if status is None:
                self._failing_paths.pop(path, None)
            else:
                self._failing_paths[path] = status

    def fail_event(self, webhook_id: str, status: int | None = 500) -> None:
        with self._lock:
            if status is None:
                self._failing_ids.pop(webhook_id, None)
            else:
                self._failing_ids[webhook_id] = status

    # -- what arrived --

    def of(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def ids(self, path: str) -> list[str]:
        return [r.webhook_id for r in self.of(path)]

    def first_ids(self, path: str) -> list[str]:
        """Webhook ids in the order of their first arrival."""
        seen: dict[str, None] = {}
        for webhook_id in self.ids(path):
            seen.setdefault(webhook_id, None)
        return list(seen)

    def check(self) -> None:
        with self._lock:
            assert not self.problems, self.problems

    # -- the request --

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path
        with self._lock:
            self.inflight[path] += 1
            self.max_inflight[path] = max(self.max_inflight[path], self.inflight[path])
        try:
            self._answer(request, path)
        finally:
            with self._lock:
                self.inflight[path] -= 1

    def _answer(self, request: BaseHTTPRequestHandler, path: str) -> None:
        problems: list[str] = []
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "transfer-encoding" in headers:
            problems.append(f"{path}: Transfer-Encoding {headers['transfer-encoding']}")
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            problems.append(f"{path}: no Content-Length")
            body = b""
            request.close_connection = True
        else:
            body = request.rfile.read(int(length))
        if not headers.get("content-type", "").startswith("application/json"):
            problems.append(f"{path}: content-type {headers.get('content-type')!r}")
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            secrets = dict(self._secrets.get(path, {}))
        verified = set()
        for label, secret in secrets.items():
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.add(label)
        if not verified:
            problems.append(f"{path}: {webhook_id} verifies with none of {sorted(secrets)}")
        try:
            if json.loads(body).get("id") != webhook_id:
                problems.append(f"{path}: webhook-id {webhook_id} is not the event's id")
        except ValueError:
            problems.append(f"{path}: body is not JSON")
        with self._lock:
            answer: int | str
            if problems:
                answer = 400
                self.problems.extend(problems)
            elif path in self._failing_paths:
                answer = self._failing_paths[path]
            elif webhook_id in self._failing_ids:
                answer = self._failing_ids[webhook_id]
            elif self._script[path]:
                answer = self._script[path].popleft()
            else:
                answer = 200
            record = Received(path, webhook_id, body, headers, frozenset(verified), answer)
            self.received.append(record)
        if self.on_request is not None:
            self.on_request(record)
        if answer == "timeout":
            time.sleep(self.stall_seconds)
            answer = 200
        assert isinstance(answer, int)
        text_out = (
            f"received {webhook_id}" if answer < 300 else f"failing on purpose: {answer}"
        ).encode()
        try:
            request.send_response(answer)
            request.send_header("Content-Type", "text/plain")
            request.send_header("Content-Length", str(len(text_out)))
            request.end_headers()
            request.wfile.write(text_out)
        except OSError:  # the sender gave up (timeout) or died
            request.close_connection = True


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    try:
        yield started
    finally:
        started.stop()


# --- an app and the delivery job on one clock -----------------------------------------------


@dataclass
class Hooks:
    api: Api
    clock: ManualClock
    settings: Settings
    state: AppState
    receiver: Receiver
    accounts: list[str]
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def account(self) -> Api:
        account_id, key = create_account(self.state)
        self.accounts.append(account_id)
        return Api(client=self.api.client, account_id=account_id, secret_key=key)

    def endpoint(
        self, path: str, events: list[str] | None = None, api: Api | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"url": self.receiver.url(path)}
        if events is not None:
            body["events"] = events
        endpoint = (api or self.api).ok((api or self.api).post("/v1/webhook_endpoints", body))
        self.receiver.expect(path, "first", endpoint["secret"])
        return endpoint

    def deliver(self) -> int:
        """One pass of the delivery job at the clock's current time."""
        return deliver_due(
            self.state.sessions, self.clock, self.settings, "test-worker", rng=self.rng
        )

    def tick(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    def deliveries(self, event_id: str, api: Api | None = None) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = (api or self.api).ok(
            (api or self.api).get(f"/v1/events/{event_id}/deliveries")
        )["data"]
        return data


@pytest.fixture
def hooks(db_url: str, receiver: Receiver) -> Iterator[Hooks]:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    settings = make_settings(
        db_url,
        allow_private_webhook_targets=True,
        webhook_timeout_seconds=TIMEOUT_SECONDS,
        reconcile_daily=False,
    )
    app = create_app(settings, clock)
    state: AppState = app.state.invoicetrail
    with TestClient(app, base_url="http://testserver") as client:
        account_id, key = create_account(state)
        made = Hooks(
            api=Api(client=client, account_id=account_id, secret_key=key),
            clock=clock,
            settings=settings,
            state=state,
            receiver=receiver,
            accounts=[account_id],
        )
        try:
            yield made
            receiver.check()
        finally:
            # Leave nothing for the next test's passes (they share the database).
            with state.engine.begin() as connection:
                for owner in made.accounts:
                    connection.execute(
                        text(
                            "UPDATE webhook_endpoints SET status = 'disabled' WHERE account_id = :a"
                        ),
                        {"a": owner},
                    )


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def all_events(api: Api) -> list[dict[str, Any]]:
    """Every event of the account as `GET /v1/events` lists it, oldest first."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = api.ok(api.get("/v1/events", params))
        events.extend(page["data"])
        if not page["has_more"]:
            return events[::-1]
        params["starting_after"] = page["data"][-1]["id"]


def event_of(api: Api, event_type: str, object_id: str) -> dict[str, Any]:
    listed: list[dict[str, Any]] = api.ok(
        api.get("/v1/events", {"type": event_type, "object": object_id})
    )["data"]
    [event] = listed
    return event


def signatures(received: Received) -> list[str]:
    return received.headers["webhook-signature"].split(" ")


def error_of(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# --- creation ---------------------------------------------------------------------------------


def test_endpoint_creation_answer_and_the_secret_shown_once(api: Api) -> None:
    response = api.post("/v1/webhook_endpoints", {"url": "https://example.com/hooks"})
    created = api.ok(response)
    assert created["id"].startswith("we_")
    assert created["object"] == "webhook_endpoint"
    assert created["url"] == "https://example.com/hooks"
    assert created["events"] == ["*"]
    assert created["status"] == "enabled"
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[len("whsec_") :], validate=True)) == 32

    typed = api.ok(
        api.post(
            "/v1/webhook_endpoints",
            {"url": "https://example.com/b", "events": ["invoice.paid", "customer.created"]},
        )
    )
    assert sorted(typed["events"]) == ["customer.created", "invoice.paid"]
    assert typed["secret"] != secret

    one = api.get(f"/v1/webhook_endpoints/{created['id']}")
    listed = api.get("/v1/webhook_endpoints", {"limit": 100})
    for answer in (one, listed):
        assert answer.status_code == 200
        assert secret not in answer.text and typed["secret"] not in answer.text
    assert one.json().get("secret") is None
    assert {e["id"] for e in listed.json()["data"]} >= {created["id"], typed["id"]}
    assert all(e.get("secret") is None for e in listed.json()["data"])
    assert one.json()["url"] == created["url"] and one.json()["events"] == ["*"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "http://127.8.9.10:8080/hooks",
        "https://10.1.2.3/hooks",
        "http://172.16.5.4/",
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9000/hooks",
        "http://100.100.100.200/latest/meta-data",  # shared (CGNAT) range: a cloud metadata host
        "http://[fe80::1]/hooks",
        "http://[fd00::5]/hooks",
        "http://localhost/hooks",
        "http://LOCALHOST:8000/hooks",
        "https://api.localhost/hooks",
        "http://0.0.0.0/hooks",
    ],
)
def test_private_targets_are_refused(api: Api, url: str) -> None:
    response = api.post("/v1/webhook_endpoints", {"url": url})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert (error["code"], error["param"]) == ("url_not_allowed", "url")
    listed = api.ok(api.get("/v1/webhook_endpoints", {"limit": 100}))["data"]
    assert url not in {e["url"] for e in listed}


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hooks",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "example.com/hooks",
        "//example.com/hooks",
        "https://",
        "https://user:pass@example.com/hooks",
    ],
)
def test_only_absolute_http_urls_are_accepted(api: Api, url: str) -> None:
    response = api.post("/v1/webhook_endpoints", {"url": url})
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == "url"


def test_private_targets_are_accepted_when_allowed(hooks: Hooks) -> None:
    endpoint = hooks.endpoint("/allowed")
    assert endpoint["url"] == hooks.receiver.url("/allowed")
    patched = hooks.api.patch(
        f"/v1/webhook_endpoints/{endpoint['id']}", {"url": "http://localhost:1/x"}
    )
    assert hooks.api.ok(patched)["url"] == "http://localhost:1/x"


def test_a_url_changed_to_a_private_target_is_refused(api: Api) -> None:
    created = api.ok(api.post("/v1/webhook_endpoints", {"url": "https://example.com/hooks"}))
    response = api.patch(f"/v1/webhook_endpoints/{created['id']}", {"url": "http://10.0.0.1/"})
    assert response.status_code == 400
    assert (error_of(response)["code"], error_of(response)["param"]) == ("url_not_allowed", "url")
    assert api.ok(api.get(f"/v1/webhook_endpoints/{created['id']}"))["url"] == created["url"]


# --- what an endpoint receives ----------------------------------------------------------------


def test_star_receives_exactly_the_listed_events_after_registration(hooks: Hooks) -> None:
    api, other = hooks.api, hooks.account()
    api.customer(name="Before registration")
    other.customer(name="Another account, before")
    hooks.deliver()  # fans the early events out (to nobody)
    before = {e["id"] for e in all_events(api)}
    hooks.tick(1)
    star = hooks.endpoint("/all")
    typed = hooks.endpoint("/finalized", events=["invoice.finalized"])
    theirs = hooks.endpoint("/theirs", api=other)
    hooks.tick(1)

    api.customer(name="After registration")
    hooks.tick(1)
    invoice = api.open_invoice()
    other.customer(name="Another account, after")
    other.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/void"))
    hooks.deliver()
    assert hooks.deliver() == 0  # nothing is sent twice

    mine = [e for e in all_events(api) if e["id"] not in before]
    assert {e["type"] for e in mine} >= {
        "customer.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.voided",
    }
    # Exactly the listed events, each once, first attempts in creation order; no pings.
    assert hooks.receiver.ids("/all") == [e["id"] for e in mine]
    finalized = [e["id"] for e in mine if e["type"] == "invoice.finalized"]
    assert (
        hooks.receiver.ids("/finalized")
        == finalized
        == [event_of(api, "invoice.finalized", invoice["id"])["id"]]
    )
    theirs_listed = [e["id"] for e in all_events(other)]
    assert set(hooks.receiver.ids("/theirs")) <= set(theirs_listed)
    assert not set(hooks.receiver.ids("/theirs")) & {e["id"] for e in all_events(api)}
    assert len(hooks.receiver.ids("/theirs")) >= 4  # customer, invoice created/finalized…

    # The body is the event exactly as `GET /v1/events/{id}` returns it.
    for received in hooks.receiver.of("/all"):
        assert json.loads(received.body) == api.ok(api.get(f"/v1/events/{received.webhook_id}"))
        assert received.headers["webhook-id"].startswith("evt_")
        assert received.verified_with == {"first"}
        assert [s.split(",")[0] for s in signatures(received)] == ["v1"]
    for endpoint in (star, typed):
        for event_id in hooks.receiver.ids("/finalized"):
            [delivery] = [
                d for d in hooks.deliveries(event_id) if d["webhook_endpoint"] == endpoint["id"]
            ]
            assert delivery["status"] == "succeeded" and delivery["attempt_count"] == 1
    assert theirs["id"] not in {
        d["webhook_endpoint"] for e in mine for d in hooks.deliveries(e["id"])
    }


# --- retries ----------------------------------------------------------------------------------


def test_retries_follow_the_schedule_and_stop_after_success(hooks: Hooks) -> None:
    receiver = hooks.receiver
    endpoint = hooks.endpoint("/flaky", events=["customer.created"])
    receiver.fail_next("/flaky", 500, "timeout", 502)
    hooks.tick(1)
    event = event_of(hooks.api, "customer.created", hooks.api.customer()["id"])

    hooks.deliver()
    assert len(receiver.of("/flaky")) == 1
    for failures, delay in enumerate(SCHEDULE[:3], start=1):
        [delivery] = hooks.deliveries(event["id"])
        assert delivery["status"] == "pending"
        assert delivery["attempt_count"] == failures
        waited = instant(delivery["next_attempt_at"]) - instant(delivery["attempts"][-1]["at"])
        assert (
            delay * (1 - JITTER) - 0.002 <= waited.total_seconds() <= delay * (1 + JITTER) + 0.002
        )
        # Before the earliest jittered retry time nothing goes out …
        hooks.tick(delay * (1 - JITTER) - 0.05)
        hooks.deliver()
        assert len(receiver.of("/flaky")) == failures
        # … after the latest it has.
        hooks.tick(delay * 2 * JITTER + 0.1)
        hooks.deliver()
        assert len(receiver.of("/flaky")) == failures + 1

    [delivery] = hooks.deliveries(event["id"])
    assert delivery["webhook_endpoint"] == endpoint["id"]
    assert delivery["event"] == event["id"]
    assert (delivery["status"], delivery["attempt_count"]) == ("succeeded", 4)
    assert delivery["next_attempt_at"] is None
    attempts = delivery["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert [a["status_code"] for a in attempts] == [500, None, 502, 200]
    assert "failing on purpose: 500" in attempts[0]["response_snippet"]
    assert "failing on purpose: 502" in attempts[2]["response_snippet"]
    assert attempts[3]["response_snippet"] == f"received {event['id']}"
    assert "timeout" in (attempts[1]["error"] or "").lower()
    assert attempts[1]["latency_ms"] >= TIMEOUT_SECONDS * 1000 * 0.9
    assert all(isinstance(a["latency_ms"], int) and a["latency_ms"] >= 0 for a in attempts)
    assert all(a["error"] is None for a in attempts if a["status_code"] is not None)
    times = [instant(a["at"]) for a in attempts]
    assert times == sorted(times)

    # The same webhook-id and body on every attempt, each verified.
    arrived = receiver.of("/flaky")
    assert [r.webhook_id for r in arrived] == [event["id"]] * 4
    assert len({r.body for r in arrived}) == 1
    assert all(r.verified_with == {"first"} for r in arrived)

    # After a 2xx no automatic attempt follows.
    for step in (60, 3600, 86_400, 3 * 86_400):
        hooks.tick(step)
        hooks.deliver()
    assert len(receiver.of("/flaky")) == 4
    assert hooks.deliveries(event["id"])[0]["attempt_count"] == 4


def test_an_always_failing_delivery_fails_after_three_days_then_redelivers(hooks: Hooks) -> None:
    api, receiver = hooks.api, hooks.receiver
    endpoint = hooks.endpoint("/down", events=["invoice.finalized"])
    receiver.fail_always("/down", 503)
    hooks.tick(1)
    invoice = api.open_invoice()
    event = event_of(api, "invoice.finalized", invoice["id"])

    hooks.deliver()
    for _ in range(40):
        [delivery] = hooks.deliveries(event["id"])
        if delivery["status"] != "pending":
            break
        due = instant(delivery["next_attempt_at"])
        # The answer shows milliseconds: a millisecond later is surely due.
        hooks.tick((due - hooks.clock.now()).total_seconds() + 0.001)
        count = len(receiver.of("/down"))
        hooks.deliver()
        assert len(receiver.of("/down")) == count + 1
    assert delivery["status"] == "failed"
    assert delivery["next_attempt_at"] is None
    times = [instant(a["at"]) for a in delivery["attempts"]]
    assert all(a["status_code"] == 503 for a in delivery["attempts"])
    assert len(times) == delivery["attempt_count"] == len(receiver.of("/down"))
    first = times[0]
    gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
    for index, gap in enumerate(gaps):
        base = SCHEDULE[index] if index < len(SCHEDULE) else LATER
        if abs(times[index + 1] - (first + WINDOW)) <= timedelta(milliseconds=2):
            assert gap <= base * (1 + JITTER) + 0.002  # the last try lands on the 3-day mark
        else:
            assert base * (1 - JITTER) - 0.002 <= gap <= base * (1 + JITTER) + 0.002, (index, gap)
    assert len(gaps) >= len(SCHEDULE) + 1  # the 24 h retries happened
    assert times[-1] <= first + WINDOW + timedelta(milliseconds=2)
    assert times[-1] >= first + WINDOW - timedelta(seconds=LATER * (1 + JITTER))

    # Exactly one exception item, naming the event, the endpoint and the invoice.
    def items() -> list[dict[str, Any]]:
        listed = api.ok(
            api.get("/v1/exception_items", {"kind": "webhook_delivery_failed", "limit": 100})
        )["data"]
        return [i for i in listed if i["refs"].get("event") == event["id"]]

    [item] = items()
    assert item["kind"] == "webhook_delivery_failed"
    assert item["status"] == "open"
    assert item["refs"]["webhook_endpoint"] == endpoint["id"]
    assert item["refs"]["invoice"] == invoice["id"]
    assert item["next_action"]

    # No further automatic attempts.
    for _ in range(3):
        hooks.tick(2 * 86_400)
        hooks.deliver()
    assert len(receiver.of("/down")) == len(times)
    assert len(items()) == 1

    # Fixed receiver, then a redelivery: one more delivery, same webhook-id.
    receiver.fail_always("/down", None)
    redelivered = api.post(
        f"/v1/events/{event['id']}/redeliver", {"webhook_endpoint": endpoint["id"]}
    )
    assert redelivered.status_code == 200, redelivered.text
    [queued] = redelivered.json()["data"]
    assert queued["event"] == event["id"] and queued["webhook_endpoint"] == endpoint["id"]
    hooks.deliver()
    arrived = receiver.of("/down")
    assert len(arrived) == len(times) + 1
    assert arrived[-1].webhook_id == event["id"] and arrived[-1].answer == 200
    assert arrived[-1].verified_with == {"first"}
    statuses = sorted(d["status"] for d in hooks.deliveries(event["id"]))
    assert statuses == ["failed", "succeeded"]
    hooks.tick(86_400)
    hooks.deliver()
    assert len(receiver.of("/down")) == len(times) + 1
    assert len(items()) == 1


def test_redeliver_after_success_and_to_every_subscriber(hooks: Hooks) -> None:
    api, receiver = hooks.api, hooks.receiver
    hooks.endpoint("/one", events=["customer.created"])
    hooks.endpoint("/two")
    hooks.endpoint("/unrelated", events=["invoice.paid"])
    hooks.tick(1)
    event = event_of(api, "customer.created", api.customer()["id"])
    hooks.deliver()
    assert receiver.ids("/one") == receiver.ids("/two") == [event["id"]]

    response = api.post(f"/v1/events/{event['id']}/redeliver")
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    hooks.deliver()
    assert receiver.ids("/one") == receiver.ids("/two") == [event["id"]] * 2
    assert receiver.ids("/unrelated") == []
    assert [d["status"] for d in hooks.deliveries(event["id"])] == ["succeeded"] * 4


# --- secrets ----------------------------------------------------------------------------------


def test_rotation_signs_with_both_secrets_during_the_overlap_then_only_the_new(
    hooks: Hooks,
) -> None:
    api, receiver = hooks.api, hooks.receiver
    endpoint = hooks.endpoint("/rotating", events=["customer.created"])
    hooks.tick(1)
    api.customer()
    hooks.deliver()
    [before] = receiver.of("/rotating")
    assert before.verified_with == {"first"} and len(signatures(before)) == 1

    response = api.post(
        f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret",
        {"expire_previous_after_seconds": 3600},
    )
    rotated = api.ok(response)
    new_secret = rotated["secret"]
    assert new_secret.startswith("whsec_") and new_secret != endpoint["secret"]
    assert len(base64.b64decode(new_secret[len("whsec_") :])) == 32
    assert instant(rotated["previous_secret_expires_at"]) == hooks.clock.now() + timedelta(hours=1)
    shown = api.get(f"/v1/webhook_endpoints/{endpoint['id']}").text
    assert new_secret not in shown and endpoint["secret"] not in shown
    receiver.expect("/rotating", "second", new_secret)

    hooks.tick(1800)
    api.customer()
    hooks.deliver()
    during = receiver.of("/rotating")[-1]
    assert during.verified_with == {"first", "second"}
    assert len(signatures(during)) == 2

    hooks.tick(1801)
    api.customer()
    hooks.deliver()
    after = receiver.of("/rotating")[-1]
    assert after.verified_with == {"second"}
    assert len(signatures(after)) == 1
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint["secret"]).verify(after.body, after.headers)
    assert len(receiver.of("/rotating")) == 3


# --- order ------------------------------------------------------------------------------------


def test_first_attempts_in_creation_order_and_a_failure_holds_nothing_back(hooks: Hooks) -> None:
    api, receiver = hooks.api, hooks.receiver
    hooks.endpoint("/ordered", events=["customer.created"])
    hooks.tick(1)
    created = [
        event_of(api, "customer.created", api.customer(name=f"Buyer {i}")["id"])["id"]
        for i in range(6)
    ]
    receiver.fail_event(created[1], 500)
    hooks.deliver()
    assert receiver.ids("/ordered") == created
    [stuck] = hooks.deliveries(created[1])
    assert stuck["status"] == "pending"

    # A later event goes out while the failed one waits for its retry.
    hooks.tick(1)
    created.append(event_of(api, "customer.created", api.customer(name="Later")["id"])["id"])
    hooks.deliver()
    assert receiver.ids("/ordered") == [*created[:6], created[6]]

    receiver.fail_event(created[1], None)
    hooks.tick(SCHEDULE[0] * (1 + JITTER))
    hooks.deliver()
    assert receiver.ids("/ordered") == [*created, created[1]]
    assert receiver.first_ids("/ordered") == created
    assert all(
        d["status"] == "succeeded" for event_id in created for d in hooks.deliveries(event_id)
    )


# --- disabled endpoints and tenancy -------------------------------------------------------------


def test_a_disabled_endpoint_gets_nothing_until_enabled(hooks: Hooks) -> None:
    api, receiver = hooks.api, hooks.receiver
    worker = Worker(hooks.settings, hooks.clock)
    try:
        endpoint = hooks.endpoint("/paused", events=["customer.created"])
        hooks.tick(1)
        retried = event_of(api, "customer.created", api.customer(name="Fails first")["id"])
        receiver.fail_next("/paused", 500)
        worker.run_once()
        assert receiver.ids("/paused") == [retried["id"]]

        queued = event_of(api, "customer.created", api.customer(name="Before disable")["id"])
        disabled = api.ok(api.post(f"/v1/webhook_endpoints/{endpoint['id']}/disable"))
        assert disabled["status"] == "disabled"
        hooks.tick(1)
        while_off = event_of(api, "customer.created", api.customer(name="While off")["id"])
        for step in (1, 60, 3600):
            hooks.tick(step)
            worker.run_once()
        assert receiver.ids("/paused") == [retried["id"]]
        assert api.ok(api.get(f"/v1/webhook_endpoints/{endpoint['id']}"))["status"] == "disabled"

        enabled = api.ok(api.post(f"/v1/webhook_endpoints/{endpoint['id']}/enable"))
        assert enabled["status"] == "enabled"
        worker.run_once()
        # SPEC: `*`/typed endpoints get every subscribed event created after registration.
        assert receiver.ids("/paused") == [
            retried["id"],
            retried["id"],
            queued["id"],
            while_off["id"],
        ]
    finally:
        worker.close()


def test_another_accounts_key_sees_404(hooks: Hooks) -> None:
    api, other = hooks.api, hooks.account()
    endpoint = hooks.endpoint("/private", events=["customer.created"])
    hooks.tick(1)
    event = event_of(api, "customer.created", api.customer()["id"])
    their_event = event_of(other, "customer.created", other.customer()["id"])
    hooks.deliver()
    base = f"/v1/webhook_endpoints/{endpoint['id']}"

    answers = {
        "get": other.get(base),
        "patch": other.patch(base, {"events": ["*"]}),
        "disable": other.post(f"{base}/disable"),
        "enable": other.post(f"{base}/enable"),
        "rotate": other.post(f"{base}/rotate_secret", {"expire_previous_after_seconds": 0}),
        "redeliver": other.post(f"/v1/events/{event['id']}/redeliver"),
        "deliveries": other.get(f"/v1/events/{event['id']}/deliveries"),
        "redeliver to mine": other.post(
            f"/v1/events/{their_event['id']}/redeliver", {"webhook_endpoint": endpoint["id"]}
        ),
    }
    for name, response in answers.items():
        assert response.status_code == 404, (name, response.text)
        assert endpoint["secret"] not in response.text
    assert endpoint["id"] not in other.get("/v1/webhook_endpoints", {"limit": 100}).text

    # Nothing changed and nothing more was sent.
    mine = api.ok(api.get(base))
    assert (mine["status"], mine["events"], mine["url"]) == (
        "enabled",
        ["customer.created"],
        endpoint["url"],
    )
    hooks.deliver()
    assert hooks.receiver.ids("/private") == [event["id"]]
    assert len(hooks.deliveries(event["id"])) == 1
    hooks.tick(5)
    api.customer()
    hooks.deliver()
    assert [r.verified_with for r in hooks.receiver.of("/private")] == [{"first"}] * 2


def test_a_lease_taken_over_meanwhile_is_not_sent_on(hooks: Hooks) -> None:
    """Worker A claims two endpoints; while it is busy with the first, its claim on the
    second expires and worker B takes that one over. A must then leave it to B: one sender
    at a time per endpoint, so no event twice and never two requests at once."""
    api, receiver, clock = hooks.api, hooks.receiver, hooks.clock
    hooks.endpoint("/first", events=["customer.created"])
    hooks.endpoint("/second", events=["customer.created"])
    hooks.tick(1)
    created = [event_of(api, "customer.created", api.customer()["id"])["id"] for _ in range(2)]
    lease = hooks.settings.webhook_lease_seconds
    b_sending, a_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def worker_b() -> None:
        try:
            deliver_due(hooks.state.sessions, clock, hooks.settings, "worker-b")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    b_thread = threading.Thread(target=worker_b, daemon=True)

    def script(received: Received) -> None:
        count = len(receiver.of(received.path))
        if received.path == "/first" and count == 1:
            clock.advance(timedelta(seconds=lease / 2))  # A renews /first when it records
        elif received.path == "/first" and count == 2:
            # Past A's claim on /second (never renewed): B claims it and starts sending.
            clock.advance(timedelta(seconds=lease / 2 + 10))
            b_thread.start()
            assert b_sending.wait(10), "worker B did not take /second over"
        elif received.path == "/second" and count == 1:
            b_sending.set()
            a_done.wait(10)  # B's first request is answered once A has finished its pass

    receiver.on_request = script
    try:
        deliver_due(hooks.state.sessions, clock, hooks.settings, "worker-a")
    finally:
        a_done.set()
        b_thread.join(10)
        receiver.on_request = None
    assert not errors, errors
    assert receiver.ids("/first") == created
    assert receiver.ids("/second") == created, "an endpoint was sent by two workers"
    assert receiver.max_inflight["/second"] == 1
    for event_id in created:
        assert [d["attempt_count"] for d in hooks.deliveries(event_id)] == [1, 1]
