"""Provider events in any order: a payment ends where the transition table says.

For one invoice and one payment reference, hypothesis draws a realistic lifecycle (the order a
provider means its events in), how many times each event is delivered (the same
`webhook-id`) and a permutation of those deliveries. Checked against two expectations made
without the server: the same lifecycle delivered in order (on another fresh invoice), and a
small model of SPEC "Payment evidence" (the first event creates the payment in its state;
allowed moves `pending | processing → succeeded | failed`, `succeeded → refunded | disputed`;
anything else is recorded as a stale or contradictory item and changes nothing).
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from conftest import Api

SECRET = "whsec_" + base64.b64encode(b"permutations-of-provider-events!").decode()
LIFECYCLES: tuple[tuple[str, ...], ...] = (
    ("processing", "succeeded"),
    ("processing", "failed"),
    ("succeeded",),
    ("failed",),
    ("succeeded", "refunded"),
    ("processing", "succeeded", "refunded"),
)
ALLOWED = frozenset(
    {
        ("pending", "processing"),
        ("pending", "succeeded"),
        ("pending", "failed"),
        ("processing", "succeeded"),
        ("processing", "failed"),
        ("succeeded", "refunded"),
        ("succeeded", "disputed"),
    }
)
MONEY = frozenset({"succeeded", "refunded", "disputed"})
LATE_KINDS = ("stale_event", "contradictory_event")


@dataclass(frozen=True)
class Stream:
    lifecycle: tuple[str, ...]
    deliveries: tuple[int, ...]  # indexes into `lifecycle`, in delivery order
    partial: bool  # the payment covers a third of the invoice, not all of it

    @property
    def first_arrivals(self) -> list[int]:
        seen: list[int] = []
        for index in self.deliveries:
            if index not in seen:
                seen.append(index)
        return seen

    @property
    def inverted(self) -> bool:
        """A later state of the lifecycle was delivered before an earlier one."""
        return self.first_arrivals != sorted(self.first_arrivals)


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    lifecycle = draw(st.sampled_from(LIFECYCLES))
    copies = [draw(st.integers(min_value=1, max_value=3)) for _ in lifecycle]
    deliveries = [index for index, count in enumerate(copies) for _ in range(count)]
    order = draw(st.permutations(deliveries))
    return Stream(lifecycle, tuple(order), draw(st.booleans()))


@dataclass(frozen=True)
class Expected:
    status: str
    amount_paid: int
    items: int


def model(stream: Stream, amount: int) -> Expected:
    """SPEC "Payment evidence", independently of the implementation."""
    state: str | None = None
    items = 0
    for index in stream.first_arrivals:
        status = stream.lifecycle[index]
        if state is None:
            state = status  # the first event creates the payment in its state
        elif status == state:
            continue
        elif (state, status) in ALLOWED:
            state = status
        else:
            items += 1
    assert state is not None
    return Expected(state, amount if state in MONEY else 0, items)


@dataclass
class Outcome:
    status: str
    amount_paid: int
    invoice_status: str
    items: list[dict[str, Any]]
    event_ids: list[str]
    answers: list[str]


@dataclass
class Fixture:
    """What every example of one test run shares: the endpoint, a customer, in-order results."""

    api: Api
    url: str
    customer_id: str
    in_order: dict[tuple[tuple[str, ...], bool], Outcome] = field(default_factory=dict)


_FIXTURES: dict[str, Fixture] = {}


def fixture_for(api: Api) -> Fixture:
    if api.account_id not in _FIXTURES:
        endpoint = api.ok(
            api.post("/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": SECRET})
        )
        _FIXTURES[api.account_id] = Fixture(api, endpoint["url"], api.customer()["id"])
    return _FIXTURES[api.account_id]


def send(fixture: Fixture, msg_id: str, body: dict[str, Any]) -> dict[str, Any]:
    payload = json.dumps(body)
    now = datetime.now(UTC)
    signature = Webhook(SECRET).sign(msg_id=msg_id, timestamp=now, data=payload)
    response = fixture.api.client.post(
        fixture.url,
        content=payload.encode(),
        headers={
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        },
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def deliver(fixture: Fixture, stream: Stream) -> tuple[dict[str, Any], int, Outcome]:
    """A fresh open invoice, the stream delivered to it, and what the API then shows."""
    api = fixture.api
    invoice = api.open_invoice(customer_id=fixture.customer_id)
    amount = invoice["total"] // 3 if stream.partial else invoice["total"]
    reference = f"ref-{uuid.uuid4().hex[:10]}"
    msg_ids = [f"msg_{uuid.uuid4().hex}" for _ in stream.lifecycle]
    method = "ach" if "processing" in stream.lifecycle else "card"
    answers = []
    for index in stream.deliveries:
        status = stream.lifecycle[index]
        body = {
            "type": f"payment.{status}",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {
                "payment_reference": reference,
                "invoice": invoice["id"],
                "amount": amount,
                "currency": invoice["currency"],
                "method": method,
                "occurred_at": datetime.now(UTC).isoformat(),
            },
        }
        answers.append(send(fixture, msg_ids[index], body)["outcome"])
    [payment] = api.ok(api.get("/v1/payments", {"invoice": invoice["id"]}))["data"]
    assert payment["reference"] == reference
    assert set(payment["provider_event_ids"]) == set(msg_ids)
    after = api.ok(api.get(f"/v1/invoices/{invoice['id']}"))
    assert after["amount_paid"] + after["amount_remaining"] == after["total"]
    items = [
        item
        for item in api.ok(
            api.get("/v1/exception_items", {"invoice": invoice["id"], "limit": 100})
        )["data"]
        if item["kind"] in LATE_KINDS
    ]
    outcome = Outcome(
        payment["status"],
        after["amount_paid"],
        after["status"],
        items,
        payment["provider_event_ids"],
        answers,
    )
    return invoice, amount, outcome


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(stream=streams())
def test_any_delivery_order_ends_where_the_table_says(api: Api, stream: Stream) -> None:
    event("inverted" if stream.inverted else "in lifecycle order")
    event(" → ".join(stream.lifecycle))
    fixture = fixture_for(api)
    key = (stream.lifecycle, stream.partial)
    if key not in fixture.in_order:
        ordered = Stream(stream.lifecycle, tuple(range(len(stream.lifecycle))), stream.partial)
        fixture.in_order[key] = deliver(fixture, ordered)[2]
    in_order = fixture.in_order[key]
    assert in_order.items == []

    invoice, amount, got = deliver(fixture, stream)
    expected = model(stream, amount)

    # Repeats of a webhook-id are acknowledged and change nothing.
    assert got.answers.count("duplicate") == len(stream.deliveries) - len(stream.lifecycle)
    # Exactly what the table says: final status, money counted once, one item per refused event.
    assert (got.status, got.amount_paid, len(got.items)) == (
        expected.status,
        expected.amount_paid,
        expected.items,
    ), (stream, got)
    assert got.invoice_status == ("paid" if got.amount_paid == invoice["total"] else "open")
    for item in got.items:
        assert item["refs"]["invoice"] == invoice["id"]
        assert item["refs"]["payment"] is not None
    if stream.inverted:
        # A later state came first: either the result is still the in-order one, or the
        # refused event is on the exception queue (never a silent backward move).
        assert got.items, (stream, got)
    else:
        assert (got.status, got.amount_paid) == (in_order.status, in_order.amount_paid)
        assert got.items == []
