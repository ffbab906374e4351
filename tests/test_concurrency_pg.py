"""Real concurrency against a real server on PostgreSQL: idempotency in flight, gapless
numbering, one finalize per draft, business-key dedupe and payments that never overshoot.

The server is `invoicetrail serve` in a subprocess; clients are threads with real HTTP
connections. Nothing here measures time: every assertion is about what was written.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, text

from invoicetrail.accounts import service as accounts
from invoicetrail.core.clock import SystemClock
from invoicetrail.core.config import Settings
from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
from invoicetrail.core.idempotency import advisory_lock_key
from servers import Server, running_server

pytestmark = pytest.mark.postgres_only

T = TypeVar("T")

CLIENTS = 50
BARRIER_SECONDS_MAX = 120.0
IN_USE_RETRIES_MAX = 200
NUMBER_PATTERN = re.compile(r"^INV-(\d{4})-(\d{6})$")


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir: Path = tmp_path_factory.mktemp("serve-logs")
    # Two API processes, as in production and the benchmark: locks must hold across them.
    with running_server(pg_url, workers=2, log_dir=log_dir) as running:
        yield running


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[Engine]:
    created = make_engine(Settings(database_url=pg_url, db_pool_size=2))
    yield created
    created.dispose()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """One client shared by every thread (httpx's pool is thread-safe), one connection each."""
    limits = httpx.Limits(max_connections=2 * CLIENTS, max_keepalive_connections=2 * CLIENTS)
    with httpx.Client(base_url=server.base_url, limits=limits, timeout=120.0) as client:
        yield client


@dataclass
class Tenant:
    """One fresh account seen through the real server."""

    http: httpx.Client
    account_id: str
    secret_key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}

    def post(self, path: str, body: Any = None, *, key: str | None = None) -> httpx.Response:
        headers = {**self.auth, "Idempotency-Key": key or uuid.uuid4().hex}
        if body is None:
            return self.http.post(path, headers=headers)
        return self.http.post(path, json=body, headers=headers)

    def get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.get(path, params=params, headers=self.auth)

    def customer(self) -> dict[str, Any]:
        return ok(self.post("/v1/customers", {"name": "Buyer", "address": {"country": "DE"}}))

    def draft(self, customer_id: str, **fields: Any) -> dict[str, Any]:
        return ok(self.post("/v1/invoices", invoice_body(customer_id, **fields)))

    def list_all(self, collection: str, **params: Any) -> list[dict[str, Any]]:
        """Every object of a list, page by page (newest first)."""
        out: list[dict[str, Any]] = []
        starting_after: str | None = None
        while True:
            query: dict[str, Any] = {"limit": 100, **params}
            if starting_after is not None:
                query["starting_after"] = starting_after
            page = ok(self.get(f"/v1/{collection}", query))
            out.extend(page["data"])
            if not page["has_more"]:
                return out
            starting_after = page["data"][-1]["id"]


@pytest.fixture
def new_tenant(engine: Engine, http: httpx.Client) -> Callable[[], Tenant]:
    sessions = make_sessionmaker(engine)

    def create() -> Tenant:
        with write_transaction(sessions) as session:
            created = accounts.create_account(
                session, name="Concurrency test", country=None, now=SystemClock().now()
            )
            session.commit()
        return Tenant(http=http, account_id=created.account.id, secret_key=created.secret_key)

    return create


# --- helpers ------------------------------------------------------------------------------


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def invoice_body(customer_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "customer": customer_id,
        "currency": "eur",
        "lines": [
            {"description": "Widget", "quantity": "2", "unit_amount": 1050, "tax_rate": "19"},
            {"description": "Service", "quantity": "1.5", "unit_amount": 2000, "tax_rate": "7"},
            {"description": "Shipping", "quantity": "1", "unit_amount": 499, "tax_rate": "0"},
        ],
        **fields,
    }


def error_code(response: httpx.Response) -> str | None:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(code)


def fire(calls: Sequence[Callable[[], T]], *, batch: int = CLIENTS) -> list[T]:
    """Runs the calls on `batch` threads; each consecutive batch of calls is released at once
    by a barrier, so every call of a batch is in flight at the same moment."""
    results: list[T | None] = [None] * len(calls)
    starts = range(0, len(calls), batch)
    barriers = [threading.Barrier(min(batch, len(calls) - start)) for start in starts]

    def run(index: int) -> None:
        barriers[index // batch].wait(timeout=BARRIER_SECONDS_MAX)
        results[index] = calls[index]()

    with ThreadPoolExecutor(max_workers=min(batch, len(calls))) as pool:
        for future in [pool.submit(run, index) for index in range(len(calls))]:
            future.result()
    return [result for result in results if result is not None]


def assert_no_server_errors(responses: Sequence[httpx.Response]) -> None:
    failed = [(r.status_code, r.text[:300]) for r in responses if r.status_code >= 500]
    assert not failed, f"server errors under concurrency: {failed[:5]}"


def counter_of(number: str, year: int) -> int:
    match = NUMBER_PATTERN.match(number)
    assert match is not None, number
    assert int(match.group(1)) == year, number
    return int(match.group(2))


def sequence_last_value(engine: Engine, account_id: str) -> int:
    with engine.connect() as connection:
        value = connection.execute(
            text(
                "SELECT COALESCE(SUM(s.last_value), 0) FROM number_sequences s "
                "JOIN legal_entities e ON e.id = s.legal_entity_id WHERE e.account_id = :a"
            ),
            {"a": account_id},
        ).scalar_one()
    return int(value)


def invoice_count(engine: Engine, account_id: str, external_reference: str | None = None) -> int:
    sql = "SELECT COUNT(*) FROM invoices WHERE account_id = :a"
    params: dict[str, Any] = {"a": account_id}
    if external_reference is not None:
        sql += " AND external_reference = :r"
        params["r"] = external_reference
    with engine.connect() as connection:
        return int(connection.execute(text(sql), params).scalar_one())


def finalize_all(tenants_and_ids: Sequence[tuple[Tenant, str]]) -> list[httpx.Response]:
    calls = [
        partial(tenant.post, f"/v1/invoices/{invoice_id}/finalize")
        for tenant, invoice_id in tenants_and_ids
    ]
    return fire(calls, batch=len(calls))


def assert_gapless(responses: Sequence[httpx.Response], count: int) -> None:
    """Every finalize succeeded and the numbers are exactly 1..count, each once."""
    assert_no_server_errors(responses)
    assert [r.status_code for r in responses] == [200] * count, [
        (r.status_code, r.text[:200]) for r in responses if r.status_code != 200
    ]
    invoices = [r.json() for r in responses]
    assert all(invoice["status"] == "open" for invoice in invoices)
    counters = [
        counter_of(invoice["number"], int(invoice["finalized_at"][:4])) for invoice in invoices
    ]
    assert sorted(counters) == list(range(1, count + 1)), Counter(counters).most_common(3)
    references = [invoice["bank_transfer_reference"] for invoice in invoices]
    assert len(set(references)) == count


# --- (a) idempotency keys in flight ---------------------------------------------------------


@dataclass
class KeyedOutcome:
    final: httpx.Response
    not_final: list[httpx.Response]


def post_until_final(tenant: Tenant, path: str, body: dict[str, Any], key: str) -> KeyedOutcome:
    """The documented client contract: 409 idempotency_key_in_use is retried after a short
    backoff with the same key and body; any other answer is final."""
    not_final: list[httpx.Response] = []
    for attempt in range(IN_USE_RETRIES_MAX):
        response = tenant.post(path, body, key=key)
        if not (response.status_code == 409 and error_code(response) == "idempotency_key_in_use"):
            return KeyedOutcome(final=response, not_final=not_final)
        not_final.append(response)
        time.sleep(min(0.2, 0.01 * 2 ** min(attempt, 5)) * (0.5 + random.random()))
    pytest.fail(f"key {key} still in use after {IN_USE_RETRIES_MAX} attempts")


def test_same_key_in_flight_creates_one_invoice_per_key(
    new_tenant: Callable[[], Tenant], engine: Engine
) -> None:
    tenant = new_tenant()
    customer_id = tenant.customer()["id"]
    keys = [f"conc-create-{n:02d}-{uuid.uuid4().hex[:8]}" for n in range(20)]
    bodies = {key: invoice_body(customer_id, metadata={"key": key}) for key in keys}
    # Grouped by key, one barrier per group: the 50 requests of a key are in flight together.
    plan = [key for key in keys for _ in range(CLIENTS)]
    outcomes = fire(
        [partial(post_until_final, tenant, "/v1/invoices", bodies[key], key) for key in plan]
    )
    assert len(outcomes) == len(plan)

    every_response = [o.final for o in outcomes] + [r for o in outcomes for r in o.not_final]
    assert_no_server_errors(every_response)
    for response in (r for o in outcomes for r in o.not_final):
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "idempotency_key_in_use"
        assert error["retryable"] is True
        assert "Idempotent-Replayed" not in response.headers

    invoice_ids: set[str] = set()
    for key in keys:
        finals = [o.final for o, k in zip(outcomes, plan, strict=True) if k == key]
        assert len(finals) == CLIENTS
        assert {r.status_code for r in finals} == {200}, {(r.status_code, r.text) for r in finals}
        assert len({r.content for r in finals}) == 1, f"key {key}: final answers differ"
        originals = [r for r in finals if r.headers.get("Idempotent-Replayed") != "true"]
        assert len(originals) == 1, f"key {key}: {len(originals)} requests were not replays"
        assert all(r.headers["Idempotent-Replayed"] == "true" for r in finals if r not in originals)
        invoice = finals[0].json()
        assert invoice["metadata"] == {"key": key}
        invoice_ids.add(invoice["id"])

    assert len(invoice_ids) == len(keys)
    listed = tenant.list_all("invoices")
    assert {invoice["id"] for invoice in listed} == invoice_ids
    assert len(listed) == len(keys)
    assert invoice_count(engine, tenant.account_id) == len(keys)
    with engine.connect() as connection:
        created_events = connection.execute(
            text("SELECT COUNT(*) FROM events WHERE account_id = :a AND type = 'invoice.created'"),
            {"a": tenant.account_id},
        ).scalar_one()
    assert created_events == len(keys)


def test_every_caller_of_a_key_held_in_flight_gets_409_in_use(
    new_tenant: Callable[[], Tenant], engine: Engine, pg_url: str
) -> None:
    """Deterministic in-flight window: this connection holds the very lock a live request
    with the key holds, so every concurrent caller must be refused, and nothing written."""
    tenant = new_tenant()
    body = {"name": "Held", "address": {"country": "DE"}}
    key = f"held-{uuid.uuid4().hex}"
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (advisory_lock_key(tenant.account_id, key),))
        try:
            refused = fire([(lambda: tenant.post("/v1/customers", body, key=key))] * CLIENTS)
        finally:
            holder.execute("SELECT pg_advisory_unlock_all()")

    assert_no_server_errors(refused)
    assert {(r.status_code, error_code(r)) for r in refused} == {(409, "idempotency_key_in_use")}
    assert all(r.json()["error"]["retryable"] is True for r in refused)
    assert tenant.list_all("customers") == []
    first = tenant.post("/v1/customers", body, key=key)
    replay = tenant.post("/v1/customers", body, key=key)
    assert first.status_code == 200
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"


# --- (b), (c) gapless numbering -------------------------------------------------------------


def test_concurrent_finalizes_number_gaplessly(
    new_tenant: Callable[[], Tenant], engine: Engine
) -> None:
    tenant = new_tenant()
    customer_id = tenant.customer()["id"]
    drafts = fire([(lambda: tenant.draft(customer_id)) for _ in range(50)])
    assert len({draft["id"] for draft in drafts}) == 50

    responses = finalize_all([(tenant, draft["id"]) for draft in drafts])

    assert_gapless(responses, 50)
    assert sequence_last_value(engine, tenant.account_id) == 50
    stored = {i["id"]: i["number"] for i in tenant.list_all("invoices", status="open")}
    assert stored == {r.json()["id"]: r.json()["number"] for r in responses}


def test_two_accounts_finalizing_at_once_each_number_from_one(
    new_tenant: Callable[[], Tenant], engine: Engine
) -> None:
    first, second = new_tenant(), new_tenant()
    plan: list[tuple[Tenant, str]] = []
    for tenant in (first, second):
        customer_id = tenant.customer()["id"]
        drafts = fire([partial(tenant.draft, customer_id) for _ in range(30)])
        plan.extend((tenant, draft["id"]) for draft in drafts)
    # Interleaved, so both accounts' finalizes are in flight together.
    plan = [pair for pairs in zip(plan[:30], plan[30:], strict=True) for pair in pairs]

    responses = finalize_all(plan)

    assert_no_server_errors(responses)
    for tenant in (first, second):
        own = [r for (t, _), r in zip(plan, responses, strict=True) if t is tenant]
        assert_gapless(own, 30)
        assert sequence_last_value(engine, tenant.account_id) == 30
        assert {i["id"] for i in tenant.list_all("invoices", status="open")} == {
            r.json()["id"] for r in own
        }


# --- (d) one finalize per draft -------------------------------------------------------------


def test_concurrent_finalizes_of_one_draft_succeed_once(
    new_tenant: Callable[[], Tenant], engine: Engine
) -> None:
    tenant = new_tenant()
    draft = tenant.draft(tenant.customer()["id"])
    path = f"/v1/invoices/{draft['id']}/finalize"

    responses = fire([(lambda: tenant.post(path)) for _ in range(40)])

    assert_no_server_errors(responses)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 409: 39}, statuses
    winner = next(r for r in responses if r.status_code == 200).json()
    assert counter_of(winner["number"], int(winner["finalized_at"][:4])) == 1
    for refused in (r for r in responses if r.status_code == 409):
        error = refused.json()["error"]
        assert error["code"] == "invalid_state_transition"
        assert error["retryable"] is False
        assert draft["id"] in error["message"]
        assert "open" in error["message"]
        assert "finalize" in error["message"]

    assert ok(tenant.get(f"/v1/invoices/{draft['id']}")) == winner
    assert sequence_last_value(engine, tenant.account_id) == 1
    finalized_events = tenant.list_all("events", type="invoice.finalized", object=draft["id"])
    assert len(finalized_events) == 1


# --- (e) external_reference dedupe ----------------------------------------------------------


def test_concurrent_creates_with_one_external_reference_create_one_invoice(
    new_tenant: Callable[[], Tenant], engine: Engine
) -> None:
    tenant = new_tenant()
    body = invoice_body(tenant.customer()["id"], external_reference="order-4711")

    responses = fire([(lambda: tenant.post("/v1/invoices", body)) for _ in range(CLIENTS)])

    assert_no_server_errors(responses)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 409: CLIENTS - 1}, statuses
    winner_id = next(r for r in responses if r.status_code == 200).json()["id"]
    for refused in (r for r in responses if r.status_code == 409):
        error = refused.json()["error"]
        assert error["code"] == "duplicate_external_reference"
        assert error["param"] == "external_reference"
        assert error["existing_id"] == winner_id
        assert winner_id in error["message"]

    assert invoice_count(engine, tenant.account_id, "order-4711") == 1
    assert invoice_count(engine, tenant.account_id) == 1
    assert [invoice["id"] for invoice in tenant.list_all("invoices")] == [winner_id]


# --- (f) concurrent payments ----------------------------------------------------------------


def test_concurrent_payments_never_overshoot_and_surplus_becomes_credit(
    new_tenant: Callable[[], Tenant],
) -> None:
    tenant = new_tenant()
    customer_id = tenant.customer()["id"]
    draft = tenant.draft(
        customer_id,
        lines=[{"description": "Plan", "quantity": "1", "unit_amount": 10_000, "tax_rate": "0"}],
    )
    invoice = ok(tenant.post(f"/v1/invoices/{draft['id']}/finalize"))
    total = invoice["total"]
    assert total == 10_000
    # Multiples of 3 against a total that is not: no set of payments can hit it exactly, so
    # the payment that crosses the total always leaves a surplus.
    amounts = {f"wire-{n:02d}": 300 + 39 * n for n in range(CLIENTS // 2)}
    assert sum(amounts.values()) > total
    assert total % 3 != 0
    path = f"/v1/invoices/{invoice['id']}/pay"

    responses = dict(
        zip(
            amounts,
            fire(
                [
                    partial(tenant.post, path, {"reference": ref, "amount": amount})
                    for ref, amount in amounts.items()
                ]
            ),
            strict=True,
        )
    )

    assert_no_server_errors(list(responses.values()))
    accepted = {ref: r.json() for ref, r in responses.items() if r.status_code == 200}
    refused = {ref: r for ref, r in responses.items() if r.status_code != 200}
    for response in refused.values():
        assert response.status_code == 409, response.text
        assert error_code(response) == "invalid_state_transition"
        assert response.json()["error"]["current_status"] == "paid"
    # Each accepted answer is the invoice right after that payment: replaying them in the
    # order of amount_paid must reproduce every applied amount (no lost update), with only
    # the last one capped at what was still due.
    ordered = sorted(accepted.items(), key=lambda item: item[1]["amount_paid"])
    paid_before = 0
    for position, (ref, snapshot) in enumerate(ordered):
        assert snapshot["amount_paid"] <= total
        assert snapshot["amount_paid"] + snapshot["amount_remaining"] == total
        expected = min(paid_before + amounts[ref], total)
        assert snapshot["amount_paid"] == expected, (ref, paid_before, snapshot["amount_paid"])
        is_last = position == len(ordered) - 1
        assert snapshot["status"] == ("paid" if is_last else "open")
        paid_before = snapshot["amount_paid"]
    assert paid_before == total

    final = ok(tenant.get(f"/v1/invoices/{invoice['id']}"))
    assert final["status"] == "paid"
    assert final["amount_paid"] == total
    assert final["amount_remaining"] == 0
    surplus = sum(amounts[ref] for ref in accepted) - total
    assert 0 < surplus < amounts[ordered[-1][0]]
    customer = ok(tenant.get(f"/v1/customers/{customer_id}"))
    assert customer["credit_balance"] == {"eur": surplus}
    payments = tenant.list_all("payments", invoice=invoice["id"])
    assert sorted(p["reference"] for p in payments) == sorted(accepted)
    assert all(p["status"] == "succeeded" for p in payments)
    assert sum(p["amount"] for p in payments) == final["amount_paid"] + surplus
