"""The trace of one invoice: request → idempotency key → invoice → provider events → payments →
journal entries → export rows → ERP answers, plus its exception items and events.

Read-only and from stored records only: each link is a column written when the thing
happened (ids, `request_id`s, the request log), never a match guessed afterwards. A handful of
set-based reads, each by key with an IN list; nothing per row."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import selectinload

from invoicetrail.core.context import Ctx
from invoicetrail.core.idempotency import RequestLog
from invoicetrail.einvoicing import service as einvoicing
from invoicetrail.einvoicing.schemas import EInvoiceOut
from invoicetrail.events.models import Event
from invoicetrail.events.schemas import EventOut
from invoicetrail.exceptions.models import ExceptionItem
from invoicetrail.exceptions.schemas import ExceptionItemOut
from invoicetrail.exports import service as exports
from invoicetrail.exports.schemas import ExportRowOut
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.models import CreditNote
from invoicetrail.invoices.schemas import InvoiceOut
from invoicetrail.ledger.models import JournalEntry
from invoicetrail.ledger.schemas import JournalEntryOut
from invoicetrail.payments import inbox
from invoicetrail.payments.models import Payment
from invoicetrail.payments.schemas import PaymentOut, ProviderEventOut
from invoicetrail.trace.schemas import TraceOut, TraceRequestOut

Item = TypeVar("Item", bound=BaseModel)

# Items at the same instant: the request first, then what it caused, in chain order.
_RANKS: dict[type[BaseModel], int] = {
    TraceRequestOut: 0,
    ProviderEventOut: 1,
    PaymentOut: 2,
    JournalEntryOut: 3,
    ExportRowOut: 4,
    EInvoiceOut: 5,
    ExceptionItemOut: 6,
    EventOut: 7,
}


@dataclass(frozen=True)
class Step:
    """One item of the trace at the instant that orders it (created, received, exported or
    acknowledged)."""

    at: datetime
    seq: int
    item: BaseModel


@dataclass(frozen=True)
class Trace:
    out: TraceOut
    steps: list[Step]

    def timeline(self) -> list[Step]:
        """Every item of every list, in time order."""
        return sorted(self.steps, key=lambda s: (s.at, _RANKS[type(s.item)], s.seq))


def _ordered(found: Iterable[tuple[datetime, int, Item]]) -> list[tuple[datetime, int, Item]]:
    """Time order: the instant, then the creation sequence (a total order within a table)."""
    return sorted(found, key=lambda step: (step[0], step[1]))


def build(ctx: Ctx, invoice_id: str) -> Trace:
    """404 for an unknown id or another account's invoice, as `GET /v1/invoices/{id}`."""
    invoice = invoices.get(ctx, invoice_id)
    session = ctx.session
    payments = list(
        session.execute(
            select(Payment).where(
                Payment.account_id == ctx.account_id, Payment.invoice_id == invoice.id
            )
        ).scalars()
    )
    payment_ids = [payment.id for payment in payments]
    notes = session.execute(
        select(CreditNote.id, CreditNote.request_id).where(
            CreditNote.account_id == ctx.account_id, CreditNote.invoice_id == invoice.id
        )
    ).all()
    provider_events = inbox.for_invoice(ctx, invoice.id, payment_ids)
    entry_links: list[ColumnElement[bool]] = [JournalEntry.invoice_id == invoice.id]
    item_links: list[ColumnElement[bool]] = [ExceptionItem.invoice_id == invoice.id]
    if payment_ids:
        entry_links.append(JournalEntry.payment_id.in_(payment_ids))
        item_links.append(ExceptionItem.refs["payment"].as_string().in_(payment_ids))
    entries = list(
        session.execute(
            select(JournalEntry)
            .where(JournalEntry.account_id == ctx.account_id, or_(*entry_links))
            .options(selectinload(JournalEntry.lines))
        ).scalars()
    )
    export_rows = exports.rows_of_entries(ctx, entries)
    items = list(
        session.execute(
            select(ExceptionItem).where(
                ExceptionItem.account_id == ctx.account_id, or_(*item_links)
            )
        ).scalars()
    )
    object_ids = [invoice.id, *payment_ids, *(note_id for note_id, _ in notes)]
    event_objects = [*object_ids, *(item.id for item in items), *(e.id for e in entries)]
    events = list(
        session.execute(
            select(Event).where(
                Event.account_id == ctx.account_id, Event.object_id.in_(event_objects)
            )
        ).scalars()
    )
    request_ids = {
        invoice.request_id,
        *(payment.request_id for payment in payments),
        *(request_id for _, request_id in notes),
        *(entry.request_id for entry in entries),
        *(event.request_id for event in provider_events),
        *(view.answer.request_id for view, _ in export_rows if view.answer is not None),
        *(batch.request_id for _, batch in export_rows),
        *(entry.get("request_id") for item in items for entry in item.history),
        *(event.request_id for event in events),
    }
    requests = list(
        session.execute(
            select(RequestLog).where(
                RequestLog.account_id == ctx.account_id,
                or_(
                    RequestLog.request_id.in_(sorted(r for r in request_ids if r)),
                    RequestLog.object_id.in_(object_ids),
                ),
            )
        ).scalars()
    )

    request_steps = _ordered((row.created_at, row.seq, TraceRequestOut.of(row)) for row in requests)
    event_steps = _ordered(
        (event.received_at, event.seq, ProviderEventOut.of(event)) for event in provider_events
    )
    payment_steps = _ordered(
        (payment.created_at, payment.seq, PaymentOut.of(payment)) for payment in payments
    )
    entry_steps = _ordered(
        (entry.created_at, entry.seq, JournalEntryOut.of(entry)) for entry in entries
    )
    # Answered rows at their acknowledgement, the others when a batch first took them; the
    # rows of one line (one per format) in format-letter order.
    row_steps = _ordered(
        (
            view.answer.acknowledged_at if view.answer is not None else batch.created_at,
            view.line.seq,
            view.out(),
        )
        for view, batch in sorted(export_rows, key=lambda found: found[0].id)
    )
    submission_steps = _ordered(
        (row.created_at, row.seq, EInvoiceOut.of(row))
        for row in einvoicing.for_invoice(ctx, invoice.id)
    )
    item_steps = _ordered((item.created_at, item.seq, ExceptionItemOut.of(item)) for item in items)
    outbox_steps = _ordered((event.created_at, event.seq, EventOut.of(event)) for event in events)
    out = TraceOut(
        invoice=InvoiceOut.of(invoice),
        requests=[item for *_, item in request_steps],
        provider_events=[item for *_, item in event_steps],
        payments=[item for *_, item in payment_steps],
        journal_entries=[item for *_, item in entry_steps],
        export_rows=[item for *_, item in row_steps],
        einvoice_submissions=[item for *_, item in submission_steps],
        exceptions=[item for *_, item in item_steps],
        events=[item for *_, item in outbox_steps],
    )
    groups: list[list[tuple[datetime, int, BaseModel]]] = [
        list(request_steps),
        list(event_steps),
        list(payment_steps),
        list(entry_steps),
        list(row_steps),
        list(submission_steps),
        list(item_steps),
        list(outbox_steps),
    ]
    return Trace(
        out=out, steps=[Step(at, seq, item) for group in groups for at, seq, item in group]
    )


def trace(ctx: Ctx, invoice_id: str) -> TraceOut:
    return build(ctx, invoice_id).out
