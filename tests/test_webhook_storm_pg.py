"""A storm of signed provider webhooks against a real `invoicetrail serve` (2 API processes) on
PostgreSQL: duplicates, shuffled order, forged and stale copies, Stripe and Standard Webhooks
endpoints of one account, all at once.

Expectations are computed from what this file sent (not from what the server says): the money
each invoice received by payment reference, each reference's final status by the transition
table, the customers' credit, the parked transfers and the exception items the late events
must have raised. Afterwards everything is read back through the API.

Wave 1 sends every lifecycle shuffled; a later event arriving first is then possible but not
certain, so the client-side send/answer times decide which inversions are certain (must have
an item), impossible (must not) or undecided (may). Wave 2 sends late events whose earlier
state is already committed: each must raise its item and change nothing.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from stripe import WebhookSignature

from conftest import make_settings
from invoicetrail.accounts import service as accounts
from invoicetrail.core.clock import SystemClock
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
from invoicetrail.core.ids import new_id
from invoicetrail.customers import service as customers
from invoicetrail.customers.schemas import CustomerCreate
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.schemas import InvoiceCreate
from servers import Server, running_server

pytestmark = pytest.mark.postgres_only

SEED = 20261125
INVOICE_COUNT = 500
CUSTOMER_COUNT = 100
SENDERS = 24
BAD_SHARE = 0.05  # of the genuine deliveries: forged copies (tampered body or wrong secret)
STALE_SHARE = 0.05  # of the genuine deliveries: genuine signatures, timestamp > 300 s off
CONCURRENT_COPIES_SHARE = 0.3  # both copies of an event sent side by side
REQUEST_SECONDS_MAX = 60.0

SW_SECRET = "whsec_" + base64.b64encode(b"storm-standard-webhooks-key-0001").decode()
SW_WRONG_SECRET = "whsec_" + base64.b64encode(b"not-the-endpoint-secret-at-all!!").decode()
STRIPE_SECRET = "whsec_storm_stripe_endpoint_secret"
STRIPE_WRONG_SECRET = "whsec_someone_else_entirely"

Provider = Literal["stripe", "standard_webhooks"]
Variant = Literal["genuine", "tampered", "wrong_secret", "stale"]

# The transition table of SPEC "Payment evidence", as a rank: a chain only moves up.
RANK = {"processing": 1, "succeeded": 2, "failed": 2, "refunded": 3, "disputed": 3}
ALLOWED = {
    ("pending", "processing"),
    ("pending", "succeeded"),
    ("pending", "failed"),
    ("processing", "succeeded"),
    ("processing", "failed"),
    ("succeeded", "refunded"),
    ("succeeded", "disputed"),
}
MONEY = {"succeeded", "refunded", "disputed"}
# A later event that denies the committed outcome is contradictory; one that merely comes
# after it (processing after an outcome, a payment after its refund) is stale.
LATE_KIND = {
    ("succeeded", "processing"): "stale_event",
    ("failed", "processing"): "stale_event",
    ("refunded", "succeeded"): "stale_event",
    ("disputed", "succeeded"): "stale_event",
    ("refunded", "processing"): "stale_event",
    ("succeeded", "failed"): "contradictory_event",
    ("failed", "succeeded"): "contradictory_event",
    ("refunded", "failed"): "contradictory_event",
}


# --- what is sent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededInvoice:
    id: str
    customer_id: str
    total: int
    bank_transfer_reference: str


@dataclass
class Genuine:
    """One provider event as the provider means it (sent twice, maybe with bad copies)."""

    provider: Provider
    event_id: str  # Stripe `evt_…` or the Standard Webhooks `webhook-id`
    body: dict[str, Any]
    reference: str
    invoice_id: str | None  # None: a transfer that matches nothing
    status: str
    amount: int
    wave: int
    late_after: str | None = None  # wave 2: the committed status it arrives after


@dataclass
class Delivery:
    event: Genuine
    variant: Variant
    skew_seconds: int = 0
    status_code: int | None = None
    answer: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    started: float = 0.0
    ended: float = 0.0


@dataclass
class Plan:
    events: list[Genuine] = field(default_factory=list)
    # (invoice or None for parked cash, reference) → the chain of statuses, in lifecycle order
    chains: dict[tuple[str | None, str], list[Genuine]] = field(default_factory=dict)
    unmatched: list[Genuine] = field(default_factory=list)

    def add(self, event: Genuine) -> Genuine:
        self.events.append(event)
        key = (event.invoice_id, event.reference)
        self.chains.setdefault(key, []).append(event)
        if event.invoice_id is None:
            self.unmatched.append(event)
        return event

    def chains_of(self, invoice_id: str) -> list[list[tuple[str, str, int, int]]]:
        """For failure messages: what was sent for one invoice."""
        return [
            [(e.provider, e.status, e.amount, e.wave) for e in chain]
            for (owner, _), chain in self.chains.items()
            if owner == invoice_id
        ]


def stripe_payment_intent(
    event_type: str, *, pi: str, invoice_id: str, amount: int, method: str
) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": pi,
                "object": "payment_intent",
                "amount": amount,
                "amount_received": amount if event_type == "payment_intent.succeeded" else 0,
                "currency": "eur",
                "metadata": {"invoice": invoice_id},
                "payment_method_types": [method],
            }
        },
    }


def stripe_charge(event_type: str, *, pi: str, amount: int) -> dict[str, Any]:
    refunded = event_type == "charge.refunded"
    charge: dict[str, Any] = {
        "id": f"{'ch' if refunded else 'dp'}_{uuid.uuid4().hex[:20]}",
        "object": "charge" if refunded else "dispute",
        "payment_intent": pi,
        "amount": amount,
        "currency": "eur",
    }
    if refunded:
        charge |= {"amount_refunded": amount, "refunded": True}
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": charge},
    }


def sw_body(
    event_type: str,
    *,
    reference: str,
    amount: int,
    method: str,
    invoice_id: str | None = None,
    reference_code: str | None = None,
) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    data: dict[str, Any] = {
        "payment_reference": reference,
        "amount": amount,
        "currency": "eur",
        "method": method,
        "occurred_at": now,
    }
    if invoice_id is not None:
        data["invoice"] = invoice_id
    if reference_code is not None:
        data["reference_code"] = reference_code
    return {"type": event_type, "timestamp": now, "data": data}


STRIPE_TYPES = {
    "processing": "payment_intent.processing",
    "succeeded": "payment_intent.succeeded",
    "failed": "payment_intent.payment_failed",
    "refunded": "charge.refunded",
    "disputed": "charge.dispute.created",
}
STRIPE_METHODS = {"card": "card", "ach": "us_bank_account"}


def stripe_event(
    plan: Plan, status: str, *, pi: str, invoice: SeededInvoice, amount: int, method: str, wave: int
) -> Genuine:
    if status in ("refunded", "disputed"):
        body = stripe_charge(STRIPE_TYPES[status], pi=pi, amount=amount)
    else:
        body = stripe_payment_intent(
            STRIPE_TYPES[status],
            pi=pi,
            invoice_id=invoice.id,
            amount=amount,
            method=STRIPE_METHODS[method],
        )
    return plan.add(Genuine("stripe", body["id"], body, pi, invoice.id, status, amount, wave=wave))


def sw_event(
    plan: Plan,
    status: str,
    *,
    reference: str,
    invoice: SeededInvoice,
    amount: int,
    method: str,
    wave: int,
) -> Genuine:
    body = sw_body(
        f"payment.{status}",
        reference=reference,
        amount=amount,
        method=method,
        invoice_id=invoice.id,
    )
    msg_id = f"msg_{uuid.uuid4().hex}"
    return plan.add(
        Genuine("standard_webhooks", msg_id, body, reference, invoice.id, status, amount, wave)
    )


def transfer_event(
    plan: Plan, *, reference: str, reference_code: str, amount: int, invoice_id: str | None
) -> Genuine:
    body = sw_body(
        "transfer.received",
        reference=reference,
        amount=amount,
        method="bank_transfer",
        reference_code=reference_code,
    )
    msg_id = f"msg_{uuid.uuid4().hex}"
    return plan.add(
        Genuine("standard_webhooks", msg_id, body, reference, invoice_id, "succeeded", amount, 1)
    )


def messy(reference_code: str, rng: random.Random) -> str:
    """How people type a reference: any case, spaces or hyphens anywhere."""
    compact = reference_code.replace("-", "")
    out = "".join(ch.lower() if rng.random() < 0.5 else ch for ch in compact)
    return f"{out[:3]} {out[3:6]}-{out[6:]}"


def broken_reference(reference_code: str) -> str:
    """One character changed: the check character must refuse it (never guess an invoice)."""
    chars = list(reference_code)
    chars[0] = "2" if chars[0] != "2" else "3"
    return "".join(chars)


SCENARIOS: tuple[tuple[str, int], ...] = (
    ("card_stripe", 50),
    ("card_sw", 50),
    ("ach_ok_stripe", 40),
    ("ach_ok_sw", 40),
    ("ach_fail_stripe", 30),
    ("ach_fail_sw", 30),
    ("refund_sw", 30),
    ("refund_stripe", 20),
    ("dispute_stripe", 10),
    ("same_reference_both_providers", 30),
    ("split_two_references", 30),
    ("transfer_exact", 30),
    ("transfer_partial", 40),
    ("transfer_over_one", 25),
    ("transfer_over_two", 45),
)
# Wave 2: the invoice's first events are committed, then this late event arrives.
LATE: dict[str, tuple[tuple[str, int], ...]] = {
    "card_stripe": (("processing", 8), ("failed", 8)),
    "card_sw": (("processing", 8), ("failed", 8)),
    "ach_fail_sw": (("succeeded", 8), ("processing", 6)),
    "ach_fail_stripe": (("succeeded", 6),),
    "refund_sw": (("succeeded", 6), ("failed", 6)),
}
UNMATCHED_TRANSFERS = 30


def build_plan(rng: random.Random, seeded: list[SeededInvoice]) -> Plan:
    assert sum(count for _, count in SCENARIOS) == len(seeded)
    plan = Plan()
    pool = list(seeded)
    rng.shuffle(pool)
    by_scenario: dict[str, list[SeededInvoice]] = {}
    for scenario, count in SCENARIOS:
        by_scenario[scenario], pool = pool[:count], pool[count:]
    for scenario, group in by_scenario.items():
        for invoice in group:
            total = invoice.total
            tag = uuid.uuid4().hex[:12]
            pi = f"pi_{tag}"
            stripe = partial(stripe_event, plan, pi=pi, invoice=invoice, wave=1)
            sw = partial(sw_event, plan, invoice=invoice, wave=1)
            transfer = partial(transfer_event, plan, invoice_id=invoice.id)
            code = invoice.bank_transfer_reference
            if scenario == "card_stripe":
                stripe("succeeded", amount=total, method="card")
            elif scenario == "card_sw":
                sw("succeeded", reference=f"card-{tag}", amount=total, method="card")
            elif scenario in ("ach_ok_stripe", "ach_fail_stripe"):
                for status in ("processing", "succeeded" if "_ok_" in scenario else "failed"):
                    stripe(status, amount=total, method="ach")
            elif scenario in ("ach_ok_sw", "ach_fail_sw"):
                for status in ("processing", "succeeded" if "_ok_" in scenario else "failed"):
                    sw(status, reference=f"ach-{tag}", amount=total, method="ach")
            elif scenario == "refund_sw":
                for status in ("succeeded", "refunded"):
                    sw(status, reference=f"card-{tag}", amount=total, method="card")
            elif scenario in ("refund_stripe", "dispute_stripe"):
                for status in (
                    "succeeded",
                    "refunded" if scenario == "refund_stripe" else "disputed",
                ):
                    stripe(status, amount=total, method="card")
            elif scenario == "same_reference_both_providers":
                # One payment reported by both providers: one payment, its money once.
                stripe("succeeded", amount=total, method="card")
                sw("succeeded", reference=pi, amount=total, method="card")
            elif scenario == "split_two_references":
                first = max(1, total * rng.randint(20, 80) // 100)
                stripe("succeeded", amount=first, method="card")
                sw("succeeded", reference=f"card-{tag}", amount=total - first, method="card")
            elif scenario == "transfer_exact":
                transfer(reference=f"bt-{tag}", reference_code=messy(code, rng), amount=total)
            elif scenario == "transfer_partial":
                amount = max(1, total * rng.randint(10, 90) // 100)
                transfer(reference=f"bt-{tag}", reference_code=code, amount=amount)
            elif scenario == "transfer_over_one":
                amount = total + rng.randint(1, 5000)
                transfer(reference=f"bt-{tag}", reference_code=code, amount=amount)
            elif scenario == "transfer_over_two":
                # Each alone leaves the invoice open (so both match it); together they overpay.
                for index in range(2):
                    amount = max(1, total * rng.randint(55, 95) // 100)
                    transfer(
                        reference=f"bt-{tag}-{index}",
                        reference_code=messy(code, rng),
                        amount=amount,
                    )
            else:  # pragma: no cover - the table above is the whole list
                raise AssertionError(scenario)
    for scenario, lates in LATE.items():
        candidates = list(by_scenario[scenario])
        rng.shuffle(candidates)
        method = "ach" if scenario.startswith("ach") else "card"
        for late_status, count in lates:
            for invoice in candidates[:count]:
                [chain] = [c for (owner, _), c in plan.chains.items() if owner == invoice.id]
                committed = max(chain, key=lambda e: RANK[e.status])
                if committed.provider == "stripe":
                    late = stripe_event(
                        plan,
                        late_status,
                        pi=committed.reference,
                        invoice=invoice,
                        amount=invoice.total,
                        method=method,
                        wave=2,
                    )
                else:
                    late = sw_event(
                        plan,
                        late_status,
                        reference=committed.reference,
                        invoice=invoice,
                        amount=invoice.total,
                        method=method,
                        wave=2,
                    )
                late.late_after = committed.status
            candidates = candidates[count:]
    for index in range(UNMATCHED_TRANSFERS):
        victim = rng.choice(seeded)
        code = broken_reference(victim.bank_transfer_reference) if index % 2 else f"ZZZZ-{index}"
        reference = f"bt-lost-{index}-{uuid.uuid4().hex[:6]}"
        amount = rng.randint(100, 90_000)
        # A third of them the bank reports twice under two event ids, sent at the same time:
        # still one parked payment, its money once.
        for _ in range(2 if index % 3 == 0 else 1):
            transfer_event(
                plan, reference=reference, reference_code=code, amount=amount, invoice_id=None
            )
    return plan


def deliveries_for(rng: random.Random, events: list[Genuine]) -> list[Delivery]:
    """Every event twice (side by side or apart), plus forged and stale copies, shuffled."""
    units: list[list[Delivery]] = []
    together: dict[str, list[Delivery]] = {}  # one transfer reported under two ids: side by side
    for event in events:
        copies = [Delivery(event, "genuine"), Delivery(event, "genuine")]
        if event.invoice_id is None:
            if event.reference not in together:
                together[event.reference] = []
                units.append(together[event.reference])
            together[event.reference].extend(copies)
        elif rng.random() < CONCURRENT_COPIES_SHARE:
            units.append(copies)
        else:
            units.extend([copy] for copy in copies)
    genuine_count = 2 * len(events)
    bad_count = max(2, round(BAD_SHARE * genuine_count))
    stale_count = max(2, round(STALE_SHARE * genuine_count))
    for index, event in enumerate(rng.sample(events, bad_count)):
        units.append([Delivery(event, "tampered" if index % 2 else "wrong_secret")])
    for index, event in enumerate(rng.sample(events, stale_count)):
        skew = rng.randint(310, 3600) * (1 if index % 4 == 0 else -1)
        units.append([Delivery(event, "stale", skew_seconds=skew)])
    rng.shuffle(units)
    return [delivery for unit in units for delivery in unit]


# --- how it is sent -------------------------------------------------------------------------


def forged(body: dict[str, Any], provider: Provider) -> dict[str, Any]:
    """The same event id saying something else: ten times the money, and success."""
    copy: dict[str, Any] = json.loads(json.dumps(body))
    if provider == "stripe":
        obj = copy["data"]["object"]
        if copy["type"].startswith("payment_intent."):
            copy["type"] = "payment_intent.succeeded"
            obj["amount"] = obj["amount_received"] = obj["amount"] * 10
        else:
            obj["amount"] = obj["amount"] * 10
    else:
        if copy["type"] != "transfer.received":
            copy["type"] = "payment.succeeded"
        copy["data"]["amount"] *= 10
    return copy


def request_for(delivery: Delivery) -> tuple[bytes, dict[str, str]]:
    event = delivery.event
    signed = json.dumps(event.body)
    sent = signed
    now = datetime.now(UTC) + timedelta(seconds=delivery.skew_seconds)
    if delivery.variant == "tampered":
        sent = json.dumps(forged(event.body, event.provider))  # signature made over `signed`
    if delivery.variant == "wrong_secret":
        signed = sent = json.dumps(forged(event.body, event.provider))
    if event.provider == "stripe":
        secret = STRIPE_WRONG_SECRET if delivery.variant == "wrong_secret" else STRIPE_SECRET
        header = WebhookSignature.generate_signature_header(
            signed, secret, timestamp=int(now.timestamp())
        )
        return sent.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}
    secret = SW_WRONG_SECRET if delivery.variant == "wrong_secret" else SW_SECRET
    signature = Webhook(secret).sign(msg_id=event.event_id, timestamp=now, data=signed)
    return sent.encode(), {
        "webhook-id": event.event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def storm(server: Server, urls: dict[Provider, str], deliveries: list[Delivery]) -> None:
    """Sends everything from SENDERS threads, each with its own keep-alive connection."""
    position = iter(range(len(deliveries)))
    lock = threading.Lock()

    def sender() -> None:
        with httpx.Client(base_url=server.base_url, timeout=REQUEST_SECONDS_MAX) as client:
            while True:
                with lock:
                    index = next(position, None)
                if index is None:
                    return
                delivery = deliveries[index]
                content, headers = request_for(delivery)
                delivery.started = time.monotonic()
                response = client.post(
                    urls[delivery.event.provider], content=content, headers=headers
                )
                delivery.ended = time.monotonic()
                delivery.status_code = response.status_code
                delivery.request_id = response.headers.get("Request-Id")
                try:
                    delivery.answer = response.json()
                except ValueError:
                    delivery.answer = {"raw": response.text[:500]}

    with ThreadPoolExecutor(SENDERS) as pool:
        for done in [pool.submit(sender) for _ in range(SENDERS)]:
            done.result()


# --- set-up ---------------------------------------------------------------------------------


def seed(pg_url: str, rng: random.Random) -> tuple[str, str, list[SeededInvoice]]:
    """One account, its customers and open invoices, written through the services directly
    (the storm, not the set-up, is under test; the API path for these is tested elsewhere)."""
    settings = make_settings(pg_url, db_pool_size=2)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    clock = SystemClock()
    seeded: list[SeededInvoice] = []
    try:
        with write_transaction(sessions) as session:
            created = accounts.create_account(session, name="Storm", country=None, now=clock.now())
            session.commit()
            account_id, secret_key = created.account.id, created.secret_key
        customer_ids: list[str] = []
        batch = 50
        for start in range(0, INVOICE_COUNT, batch):
            with write_transaction(sessions) as session:
                ctx = Ctx(
                    session=session,
                    account_id=account_id,
                    request_id=new_id("req"),
                    now=clock.now(),
                    settings=settings,
                )
                while len(customer_ids) < CUSTOMER_COUNT:
                    body = CustomerCreate.model_validate(
                        {"name": f"Storm buyer {len(customer_ids)}", "address": {"country": "DE"}}
                    )
                    customer_ids.append(customers.create(ctx, body).id)
                for index in range(start, min(start + batch, INVOICE_COUNT)):
                    draft = invoices.create(
                        ctx,
                        InvoiceCreate.model_validate(
                            {
                                "customer": customer_ids[index % CUSTOMER_COUNT],
                                "currency": "eur",
                                "lines": [
                                    {
                                        "description": "Storm item",
                                        "quantity": "1",
                                        "unit_amount": rng.randint(1_000, 90_000),
                                        "tax_rate": rng.choice(["0", "7", "19"]),
                                    }
                                ],
                            }
                        ),
                    )
                    opened = invoices.finalize(ctx, draft.id)
                    assert opened.bank_transfer_reference is not None
                    seeded.append(
                        SeededInvoice(
                            opened.id,
                            opened.customer_id,
                            opened.total_minor,
                            opened.bank_transfer_reference,
                        )
                    )
                session.commit()
    finally:
        engine.dispose()
    return account_id, secret_key, seeded


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir: Path = tmp_path_factory.mktemp("storm-logs")
    with running_server(pg_url, workers=2, log_dir=log_dir) as running:
        yield running


# --- reading back ---------------------------------------------------------------------------


class Reader:
    def __init__(self, client: httpx.Client, secret_key: str) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {secret_key}"}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(
            path, json=body, headers={**self.auth, "Idempotency-Key": uuid.uuid4().hex}
        )
        assert response.status_code in (200, 201), response.text
        created: dict[str, Any] = response.json()
        return created

    def all(self, path: str, **filters: str) -> list[dict[str, Any]]:
        """Every page of a list, oldest first."""
        rows: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, **filters}
            if after:
                params["starting_after"] = after
            response = self.client.get(path, params=params, headers=self.auth)
            assert response.status_code == 200, response.text
            page = response.json()
            rows.extend(page["data"])
            if not page["has_more"]:
                return rows[::-1]
            after = page["data"][-1]["id"]


# --- the test -------------------------------------------------------------------------------


def early_refund_possible(chain: list[Genuine]) -> bool:
    """A Stripe `charge.refunded` / `charge.dispute.created` carries no invoice: only the
    payment it refers to, which may not have arrived yet."""
    return chain[-1].provider == "stripe" and chain[-1].status in ("refunded", "disputed")


def first_answer(copies: list[Delivery]) -> float:
    return min(d.ended for d in copies)


def first_send(copies: list[Delivery]) -> float:
    return min(d.started for d in copies)


def test_webhook_storm(pg_url: str, server: Server) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    _account_id, secret_key, seeded = seed(pg_url, rng)
    by_id = {invoice.id: invoice for invoice in seeded}
    seed_seconds = time.monotonic() - began
    plan = build_plan(rng, seeded)
    wave1 = deliveries_for(rng, [e for e in plan.events if e.wave == 1])
    wave2 = deliveries_for(rng, [e for e in plan.events if e.wave == 2])

    limits = httpx.Limits(max_connections=4)
    with httpx.Client(base_url=server.base_url, timeout=REQUEST_SECONDS_MAX, limits=limits) as http:
        api = Reader(http, secret_key)
        urls: dict[Provider, str] = {
            "stripe": api.post(
                "/v1/provider_endpoints", {"provider": "stripe", "secret": STRIPE_SECRET}
            )["url"],
            "standard_webhooks": api.post(
                "/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": SW_SECRET}
            )["url"],
        }
        storm_began = time.monotonic()
        storm(server, urls, wave1)
        storm(server, urls, wave2)
        storm_seconds = time.monotonic() - storm_began
        sent = wave1 + wave2

        # 1. Every answer is 200 (genuine) or 400 with the right code (forged, stale); no 5xx.
        statuses = Counter(d.status_code for d in sent)
        assert set(statuses) <= {200, 400}, (statuses, server.log_tail())
        for delivery in sent:
            if delivery.variant == "genuine":
                assert delivery.status_code == 200, (delivery.event, delivery.answer)
                assert delivery.answer["outcome"] not in ("failed", "unprocessable"), (
                    delivery.answer
                )
                continue
            expected_code = (
                "timestamp_out_of_tolerance" if delivery.variant == "stale" else "signature_invalid"
            )
            assert delivery.status_code == 400, (delivery.variant, delivery.answer)
            error = delivery.answer["error"]
            assert error["code"] == expected_code, (delivery.variant, error)
            assert error["request_id"] == delivery.request_id
        # The second copy of an event (and only it) is acknowledged as a duplicate.
        copies: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in sent:
            if delivery.variant == "genuine":
                copies[delivery.event.event_id].append(delivery)
        for event_id, pair in copies.items():
            outcomes = sorted(d.answer["outcome"] for d in pair)
            assert outcomes.count("duplicate") == 1, (event_id, outcomes)

        assert "Traceback" not in server.log_path.read_text(errors="replace"), server.log_tail()

        # 2. Refused requests are kept, each one, under its verification code.
        for code, variants in (
            ("signature_invalid", ("tampered", "wrong_secret")),
            ("timestamp_out_of_tolerance", ("stale",)),
        ):
            refused = {d.answer["error"]["provider_event"] for d in sent if d.variant in variants}
            kept = api.all("/v1/provider_events", verification=code)
            assert {e["id"] for e in kept} == refused, code
            assert len(kept) == len(refused) == sum(d.variant in variants for d in sent)
            assert all(e["outcome"] == "refused" for e in kept)

        # 3. Expected money and statuses, computed from what was sent. Within wave 1 the order
        # two events of one payment were applied in is certain only when one was answered
        # before the other was sent.
        order: dict[tuple[str, str], str] = {}
        for chain in plan.chains.values():
            wave1_chain = [e for e in chain if e.wave == 1]
            for earlier, later in pairwise(wave1_chain):
                earlier_copies, later_copies = copies[earlier.event_id], copies[later.event_id]
                if first_send(earlier_copies) > first_answer(later_copies):
                    order[(earlier.event_id, later.event_id)] = "reversed"
                elif first_send(later_copies) > first_answer(earlier_copies):
                    order[(earlier.event_id, later.event_id)] = "in_order"
                else:
                    order[(earlier.event_id, later.event_id)] = "overlap"
        expected_status: dict[tuple[str | None, str], set[str]] = {}
        for key, chain in plan.chains.items():
            first_wave = [e for e in chain if e.wave == 1]
            latest = max(first_wave, key=lambda e: RANK[e.status]).status
            expected_status[key] = {latest}
            if early_refund_possible(chain):
                # A Stripe refund or dispute names no invoice: arriving before its payment, it
                # is recorded as an item and the payment stays succeeded (never parked cash).
                expected_status[key] = {
                    "in_order": {latest},
                    "reversed": {"succeeded"},
                    "overlap": {latest, "succeeded"},
                }[order[(chain[0].event_id, chain[1].event_id)]]
        received: dict[str, int] = defaultdict(int)
        for (invoice_id, _), chain in plan.chains.items():
            if invoice_id is not None and any(e.status in MONEY for e in chain if e.wave == 1):
                # One payment per reference: its amount once, however many events carry it.
                amounts = {e.amount for e in chain if e.status in MONEY and e.wave == 1}
                assert len(amounts) == 1, amounts
                received[invoice_id] += amounts.pop()
        expected_credit: dict[str, int] = defaultdict(int)
        for invoice in seeded:
            surplus = received[invoice.id] - invoice.total
            if surplus > 0:
                expected_credit[invoice.customer_id] += surplus

        # 4. Invoices: amount_paid = min(total, money received by reference); totals tie out.
        listed_invoices = {i["id"]: i for i in api.all("/v1/invoices")}
        assert set(listed_invoices) == set(by_id)
        for invoice in seeded:
            got = listed_invoices[invoice.id]
            paid = min(invoice.total, received[invoice.id])
            assert got["total"] == invoice.total
            assert got["amount_paid"] == paid, (invoice.id, got, plan.chains_of(invoice.id))
            assert got["amount_paid"] + got["amount_remaining"] == got["total"]
            assert got["status"] == ("paid" if paid == invoice.total else "open"), got

        # 5. Payments: one per (invoice, reference), final status by the table, every genuine
        # event id linked and nothing else; parked payments are exactly the unmatched transfers.
        payments = api.all("/v1/payments")
        per_key = Counter((p["invoice"], p["reference"]) for p in payments)
        assert max(per_key.values()) == 1, [k for k, n in per_key.items() if n > 1][:5]
        assert set(per_key) == set(plan.chains), set(per_key) ^ set(plan.chains)
        payment_by_key = {(p["invoice"], p["reference"]): p for p in payments}
        early_refunds: dict[str, Genuine] = {}  # provider event id → the refund that came first
        for key, chain in plan.chains.items():
            payment = payment_by_key[key]
            sent_here = [(e.provider, e.status, e.wave) for e in chain]
            assert payment["status"] in expected_status[key], (key, payment, sent_here)
            linked = {e.event_id for e in chain}
            if early_refund_possible(chain) and payment["status"] == "succeeded":
                early_refunds[chain[-1].event_id] = chain[-1]
                linked.discard(chain[-1].event_id)
            assert set(payment["provider_event_ids"]) == linked, (key, sent_here)
            assert len(payment["provider_event_ids"]) == len(linked)
            if payment["status"] in MONEY:
                assert payment["amount"] == max(e.amount for e in chain if e.status in MONEY)
        unapplied = [p for p in payments if p["invoice"] is None]
        assert {(p["reference"], p["amount"], p["status"]) for p in unapplied} == {
            (e.reference, e.amount, "succeeded") for e in plan.unmatched
        }

        # 6. No status ever moved backward: each payment's recorded statuses follow the table.
        history: dict[str, list[str]] = defaultdict(list)
        for recorded in api.all("/v1/events"):
            if recorded["type"].startswith("payment."):
                payment_object = recorded["data"]["object"]
                if recorded["type"] != "payment.updated":
                    history[payment_object["id"]].append(payment_object["status"])
        for payment in payments:
            walk = [
                s
                for i, s in enumerate(history[payment["id"]])
                if i == 0 or s != history[payment["id"]][i - 1]
            ]
            assert walk, payment["id"]
            for from_status, to_status in pairwise(walk):
                assert (from_status, to_status) in ALLOWED, (payment["id"], walk)
            assert walk[-1] == payment["status"]

        # 7. Credit: each customer's balance is exactly the surplus of its invoices.
        for customer in api.all("/v1/customers"):
            surplus = expected_credit.get(customer["id"], 0)
            assert customer["credit_balance"] == ({"eur": surplus} if surplus else {}), customer

        # 8. Late events: wave 2 ones must each have their item; wave 1 inversions that the
        # client saw happen for certain must too, those it saw not happen must not.
        items: dict[str, list[dict[str, Any]]] = {
            kind: api.all("/v1/exception_items", kind=kind)
            for kind in (
                "stale_event",
                "contradictory_event",
                "unmatched_transfer",
                "payment_without_invoice",
                "payment_for_closed_invoice",
                "unprocessable_event",
                "duplicate_payment_reference",
                "amount_mismatch",
            )
        }
        for kind in (
            "payment_for_closed_invoice",
            "unprocessable_event",
            "duplicate_payment_reference",
            "amount_mismatch",
        ):
            assert items[kind] == [], (kind, items[kind][:3])
        orphans = {i["detail"]["provider_event_id"]: i for i in items["payment_without_invoice"]}
        assert set(orphans) == set(early_refunds), set(orphans) ^ set(early_refunds)
        for event_id, refund in early_refunds.items():
            assert orphans[event_id]["refs"]["payment"] is None
            assert orphans[event_id]["detail"]["payment_reference"] == refund.reference
        raised: dict[str, dict[str, Any]] = {}
        for kind in ("stale_event", "contradictory_event"):
            for item in items[kind]:
                raised[item["detail"]["provider_event_id"]] = item
                assert item["refs"]["invoice"] is not None, item
                assert item["refs"]["payment"] is not None, item
        must: dict[str, str] = {}
        may: set[str] = set()
        for chain in plan.chains.values():
            wave1_chain = [e for e in chain if e.wave == 1]
            for late in (e for e in chain if e.wave == 2):
                assert late.late_after is not None
                must[late.event_id] = LATE_KIND[(late.late_after, late.status)]
            if early_refund_possible(chain):
                continue  # checked above: an early Stripe refund has no invoice to go with
            for earlier, later in pairwise(wave1_chain):
                if RANK[earlier.status] == RANK[later.status]:
                    continue  # the same state twice (two providers): a repeat, never an item
                seen = order[(earlier.event_id, later.event_id)]
                if seen == "reversed":
                    must[earlier.event_id] = LATE_KIND[(later.status, earlier.status)]
                elif seen == "overlap":
                    may.add(earlier.event_id)  # either order was possible
        events_by_id = {e.event_id: e for e in plan.events}
        for event_id, kind in must.items():
            event = events_by_id[event_id]
            assert event_id in raised, (kind, event)
            item = raised[event_id]
            assert item["kind"] == kind, (item, event)
            assert item["refs"]["invoice"] == event.invoice_id
            assert (
                item["refs"]["payment"] == payment_by_key[(event.invoice_id, event.reference)]["id"]
            )
        unexpected = set(raised) - set(must) - may
        assert not unexpected, [raised[e] for e in list(unexpected)[:3]]

        # 9. Unmatched transfers: each event has its item, pointing at the one parked payment.
        parked = {p["reference"]: p for p in unapplied}
        unmatched_items = {i["detail"]["provider_event_id"]: i for i in items["unmatched_transfer"]}
        assert set(unmatched_items) == {e.event_id for e in plan.unmatched}
        for event in plan.unmatched:
            item = unmatched_items[event.event_id]
            assert item["refs"]["payment"] == parked[event.reference]["id"]
            assert item["detail"]["payment_reference"] == event.reference
            assert item["detail"]["reference_code"] == event.body["data"]["reference_code"]

        twice = [c for (owner, _), c in plan.chains.items() if owner is None and len(c) == 2]
        overlapping = sum(
            first_send(copies[a.event_id]) < first_answer(copies[b.event_id])
            and first_send(copies[b.event_id]) < first_answer(copies[a.event_id])
            for a, b in twice
        )

    elapsed = time.monotonic() - began
    print(
        f"\nstorm: {len(sent)} requests ({statuses}) for {len(plan.events)} events on "
        f"{INVOICE_COUNT} invoices in {storm_seconds:.1f} s (set-up {seed_seconds:.1f} s, "
        f"whole test {elapsed:.1f} s); "
        f"{len(must)} certain and {len(may)} possible inversions, "
        f"{len(early_refunds)} Stripe refunds/disputes before their payment, "
        f"{overlapping} of {len(twice)} doubly reported transfers in flight together"
    )
