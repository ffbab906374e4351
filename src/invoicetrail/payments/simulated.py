"""The built-in `simulated` provider: schedules signed events for the worker to send in-process
through the same store-raw → verify → apply path as the HTTP route."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import ValidationFailed
from invoicetrail.core.ids import new_id
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.states import require_action
from invoicetrail.payments import endpoints
from invoicetrail.payments.models import SimulatedEvent
from invoicetrail.payments.schemas import SimulatedPaymentCreate, SimulatedPaymentOut

# ACH settles in about four business days; the simulation's default.
ACH_SETTLE_SECONDS_DEFAULT = 4 * 86_400
LEASE_SECONDS = 60


def _event_body(event_type: str, when: datetime, data: dict[str, Any]) -> bytes:
    return json.dumps(
        {"type": event_type, "timestamp": iso_instant(when), "data": data},
        separators=(",", ":"),
    ).encode()


def schedule(ctx: Ctx, body: SimulatedPaymentCreate) -> SimulatedPaymentOut:
    invoice = invoices.get(ctx, body.invoice, param="invoice")
    require_action(invoice, "pay")
    if body.method == "bank_transfer" and body.outcome == "failed":
        raise ValidationFailed(
            "a bank transfer either arrives or does not; outcome failed needs card or ach",
            param="outcome",
            object_name="simulated_payment",
        )
    endpoint = endpoints.find_simulated(ctx)
    if endpoint is None:
        endpoint, _ = endpoints.create(ctx, "simulated", None)
    simulation_id = new_id("sim")
    reference = f"sim_pi_{simulation_id.removeprefix('sim_')}"
    amount_minor = body.amount or invoice.amount_remaining_minor
    settle_seconds = body.settle_after_seconds
    if settle_seconds is None:
        settle_seconds = ACH_SETTLE_SECONDS_DEFAULT if body.method == "ach" else 0
    data: dict[str, Any] = {
        "payment_reference": reference,
        "amount": amount_minor,
        "currency": invoice.currency,
        "method": body.method,
    }
    planned: list[tuple[str, datetime, dict[str, Any]]] = []
    settle_at = ctx.now + timedelta(seconds=settle_seconds)
    if body.method == "bank_transfer":
        code = body.reference_code or invoice.bank_transfer_reference or ""
        planned.append(("transfer.received", settle_at, {**data, "reference_code": code}))
    else:
        data["invoice"] = invoice.id
        if body.method == "ach":
            planned.append(("payment.processing", ctx.now, data))
        planned.append((f"payment.{body.outcome}", settle_at, data))
    scheduled = []
    for event_type, due_at, event_data in planned:
        ctx.session.add(
            SimulatedEvent(
                id=new_id("sime"),
                account_id=ctx.account_id,
                endpoint_id=endpoint.id,
                simulation_id=simulation_id,
                body=_event_body(
                    event_type, due_at, {**event_data, "occurred_at": iso_instant(due_at)}
                ),
                due_at=due_at,
                attempts=0,
            )
        )
        scheduled.append({"type": event_type, "due_at": iso_instant(due_at)})
    ctx.session.flush()
    return SimulatedPaymentOut(
        id=simulation_id,
        invoice=invoice.id,
        method=body.method,
        outcome=body.outcome,
        amount=amount_minor,
        currency=invoice.currency,
        payment_reference=reference,
        provider_endpoint=endpoint.id,
        events=scheduled,
    )


def claim_due(session: Session, now: datetime, limit: int = 100) -> list[SimulatedEvent]:
    """Leases due events for a minute; a crashed worker's lease runs out and they are resent
    (the inbox dedupes by event id, so a resend never doubles money)."""
    stmt = (
        select(SimulatedEvent)
        .where(SimulatedEvent.delivered_at.is_(None), SimulatedEvent.due_at <= now)
        .order_by(SimulatedEvent.due_at, SimulatedEvent.seq)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    due = list(session.execute(stmt).scalars())
    for event in due:
        event.attempts += 1
        event.due_at = now + timedelta(seconds=LEASE_SECONDS)
    session.flush()
    return due


def mark_delivered(
    session: Session, event_id: str, provider_event: str | None, now: datetime
) -> None:
    session.execute(
        update(SimulatedEvent)
        .where(SimulatedEvent.id == event_id)
        .values(delivered_at=now, provider_event=provider_event)
    )
