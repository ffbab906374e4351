"""The trace of one invoice: the objects as their own endpoints return them, and the
one-line-per-item timeline `invoicetrail trace` prints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.idempotency import RequestLog
from invoicetrail.core.money import format_major
from invoicetrail.einvoicing.schemas import EInvoiceOut
from invoicetrail.events.schemas import EventOut
from invoicetrail.exceptions.schemas import ExceptionItemOut
from invoicetrail.exports.schemas import ExportRowOut
from invoicetrail.invoices.schemas import InvoiceOut
from invoicetrail.ledger.schemas import JournalEntryOut
from invoicetrail.payments.schemas import PaymentOut, ProviderEventOut


class TraceRequestOut(BaseModel):
    """A committed request that touched the invoice, from the request log. `object` is the id
    of the object the request answered with (`in_…`, `pay_…`, `pev_…`, `exp_…`), if any."""

    request_id: str
    idempotency_key: str | None
    method: str
    path: str
    status: int
    created: str | None
    object_id: str | None

    @classmethod
    def of(cls, row: RequestLog) -> TraceRequestOut:
        return cls(
            request_id=row.request_id,
            idempotency_key=row.idempotency_key,
            method=row.method,
            path=row.path,
            status=row.status_code,
            created=iso_instant(row.created_at),
            object_id=row.object_id,
        )


class TraceOut(BaseModel):
    invoice: InvoiceOut
    requests: list[TraceRequestOut]
    provider_events: list[ProviderEventOut]
    payments: list[PaymentOut]
    journal_entries: list[JournalEntryOut]
    export_rows: list[ExportRowOut]
    einvoice_submissions: list[EInvoiceOut]
    exceptions: list[ExceptionItemOut]
    events: list[EventOut]


# --- the terminal timeline -------------------------------------------------------------------

KIND_WIDTH = len("provider_event")


def _money(amount_minor: int, currency: str) -> str:
    return f"{format_major(amount_minor, currency)} {currency.upper()}"


def _entry_lines(entry: JournalEntryOut) -> str:
    sides = [
        f"Dr {line.account} {_money(line.debit, line.currency)}"
        if line.debit
        else f"Cr {line.account} {_money(line.credit, line.currency)}"
        for line in entry.lines
    ]
    return " / ".join(sides)


def describe(item: BaseModel) -> tuple[str, str]:
    """(kind, what) of one trace item, for a timeline line."""
    if isinstance(item, TraceRequestOut):
        text = f"{item.request_id} {item.method} {item.path} ({item.status})"
        text += f" key={item.idempotency_key or '-'}"
        return "request", text + (f" → {item.object_id}" if item.object_id else "")
    if isinstance(item, ProviderEventOut):
        text = f"{item.id} {item.provider_event_id or '-'} {item.type or '-'} {item.verification}"
        return "provider_event", f"{text} {item.outcome} sha256={item.body_sha256[:12]}"
    if isinstance(item, PaymentOut):
        amount = _money(item.amount, item.currency)
        return "payment", f"{item.id} {item.reference} {item.status} {amount} via {item.provider}"
    if isinstance(item, JournalEntryOut):
        return "journal_entry", f"{item.id} {item.business_key} {_entry_lines(item)}"
    if isinstance(item, ExportRowOut):
        text = f"{item.id} {item.format} {item.status} {item.journal_entry} {item.account}"
        if item.erp_record_id is not None:
            text += f" erp={item.erp_record_id}"
        if item.error is not None:
            text += f" error={item.error[:80]!r}"
        return "export_row", text
    if isinstance(item, EInvoiceOut):
        text = f"{item.id} {item.regime} {item.document_type} {item.status}"
        if item.external_id:
            text += f" external={item.external_id}"
        return "einvoice_submission", text + (" test" if item.test else "")
    if isinstance(item, ExceptionItemOut):
        return "exception", f"{item.id} {item.kind} {item.status} owner={item.owner}"
    if isinstance(item, EventOut):
        return "event", f"{item.id} {item.type}"
    raise TypeError(f"not a trace item: {type(item).__name__}")


def timeline_line(at: datetime, item: BaseModel) -> str:
    kind, what = describe(item)
    return f"{iso_instant(at)}  {kind:<{KIND_WIDTH}}  {what}"


def headline(invoice: InvoiceOut) -> str:
    return (
        f"invoice {invoice.id} {invoice.number or '(draft)'} {invoice.status} "
        f"total {_money(invoice.total, invoice.currency)} "
        f"amount_paid {_money(invoice.amount_paid, invoice.currency)} customer {invoice.customer}"
    )
