"""Console pages: the invoice list, one invoice with its trace as a timeline, and its PDF.

Read-only: every query is a service function the API uses (`invoices.list_invoices`,
`trace.build`, `render_invoice_pdf`), so the console shows what `GET /v1/…` answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from invoicetrail.console.web import Page, page
from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import ValidationFailed
from invoicetrail.core.http import Page as ListPage
from invoicetrail.customers import service as customers
from invoicetrail.exports import service as exports
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.models import INVOICE_STATUSES, Invoice
from invoicetrail.invoices.pdf import render_invoice_pdf
from invoicetrail.ledger import service as ledger
from invoicetrail.ledger.models import JournalEntry
from invoicetrail.ledger.schemas import JournalEntryOut
from invoicetrail.trace import service as traces
from invoicetrail.trace.schemas import describe

# Included by `console/routes.py`, whose router carries the `/console` prefix.
router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
FILTER_CHARS_MAX = 64
# An e-invoice submission without a parseable instant goes last in the timeline.
_LAST = datetime.max.replace(tzinfo=UTC)


def query_value(request: Request, name: str) -> str | None:
    """A filter from the query string: blank means unset; over-long is refused (400 page)."""
    value = request.query_params.get(name, "").strip()
    if len(value) > FILTER_CHARS_MAX:
        raise ValidationFailed(f"{name} is longer than {FILTER_CHARS_MAX} characters", param=name)
    return value or None


def page_url(path: str, filters: dict[str, str | None]) -> str:
    """The list URL with its active filters (the pager adds `starting_after`)."""
    active = {name: value for name, value in filters.items() if value}
    return path + ("?" + urlencode(active) if active else "")


# --- the list --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceRow:
    id: str
    number: str | None
    status: str
    overdue: bool
    customer_id: str
    customer_name: str
    currency: str
    total: int
    amount_remaining: int
    due_date: str | None
    created: str | None


def _customer_names(ctx: Ctx, rows: list[Invoice]) -> dict[str, str]:
    """Names as invoiced (the finalize snapshot); a draft's customer as it is now."""
    names: dict[str, str] = {}
    for invoice in rows:
        buyer = (invoice.parties or {}).get("buyer") or {}
        if buyer.get("name"):
            names.setdefault(invoice.customer_id, str(buyer["name"]))
    for invoice in rows:
        if invoice.customer_id not in names:
            name = customers.get(ctx, invoice.customer_id).name
            names[invoice.customer_id] = name or invoice.customer_id
    return names


def _is_overdue(ctx: Ctx, status: str, due_date: str | None) -> bool:
    return status == "open" and due_date is not None and due_date < ctx.now.date().isoformat()


def _list(current: Page) -> Response:
    request, ctx = current.request, current.ctx
    status = query_value(request, "status")
    customer = query_value(request, "customer")
    if status is not None and status not in INVOICE_STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(INVOICE_STATUSES)}", param="status"
        )
    rows, has_more = invoices.list_invoices(
        ctx,
        ListPage(limit=PAGE_SIZE, starting_after=query_value(request, "starting_after")),
        status=status,
        customer_id=customer,
    )
    names = _customer_names(ctx, rows)
    shown = [
        InvoiceRow(
            id=invoice.id,
            number=invoice.number,
            status=invoice.status,
            overdue=_is_overdue(
                ctx, invoice.status, invoice.due_date.isoformat() if invoice.due_date else None
            ),
            customer_id=invoice.customer_id,
            customer_name=names[invoice.customer_id],
            currency=invoice.currency,
            total=invoice.total_minor,
            amount_remaining=invoice.amount_remaining_minor,
            due_date=invoice.due_date.isoformat() if invoice.due_date else None,
            created=iso_instant(invoice.created_at),
        )
        for invoice in rows
    ]
    return current.render(
        "invoices.html.j2",
        title="Invoices",
        rows=shown,
        has_more=has_more,
        statuses=INVOICE_STATUSES,
        status=status or "",
        customer=customer or "",
        base_url=page_url("/console/invoices", {"status": status, "customer": customer}),
        paged=request.query_params.get("starting_after") is not None,
    )


@router.get("/invoices")
def invoices_page(request: Request) -> Response:
    return page(request, _list)


# --- one invoice -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One `li` of `ol#trace`: `kind` is its `data-kind`, `at` the instant that orders it."""

    kind: str
    at: str | None
    item: Any


def _timeline(built: traces.Trace) -> list[TimelineEntry]:
    """The trace's own time order, as `invoicetrail trace` prints it."""
    return [
        TimelineEntry(describe(step.item)[0], iso_instant(step.at), step.item)
        for step in built.timeline()
    ]


def _export_batches(ctx: Ctx, invoice_id: str, entries: list[JournalEntryOut]) -> dict[str, str]:
    """Export row id → the batch (`exp_…`) that first took it, for links to its page."""
    wanted = {entry.id for entry in entries}
    if not wanted:
        return {}
    found: list[JournalEntry] = [e for e in ledger.for_invoice(ctx, invoice_id) if e.id in wanted]
    have = {entry.id for entry in found}
    found += [ledger.get(ctx, entry_id) for entry_id in sorted(wanted - have)]
    return {view.id: batch.id for view, batch in exports.rows_of_entries(ctx, found)}


def _customer_name(ctx: Ctx, invoice_id: str, customer_id: str) -> str:
    model = invoices.get(ctx, invoice_id)
    return _customer_names(ctx, [model])[customer_id]


def _detail(current: Page, invoice_id: str) -> Response:
    ctx = current.ctx
    built = traces.build(ctx, invoice_id)  # NotFound (404 page) for another account's id
    trace = built.out
    invoice = trace.invoice
    return current.render(
        "invoice.html.j2",
        title=f"Invoice {invoice.number}" if invoice.number else "Draft invoice",
        invoice=invoice,
        overdue=_is_overdue(ctx, invoice.status, invoice.due_date),
        customer_name=_customer_name(ctx, invoice.id, invoice.customer),
        trace=trace,
        timeline=_timeline(built),
        export_batches=_export_batches(ctx, invoice.id, trace.journal_entries),
        payment_ids={payment.id for payment in trace.payments},
    )


@router.get("/invoices/{invoice_id}")
def invoice_page(request: Request, invoice_id: str) -> Response:
    return page(request, lambda current: _detail(current, invoice_id))


@router.get("/invoices/{invoice_id}/pdf")
def invoice_pdf(request: Request, invoice_id: str) -> Response:
    """The PDF `GET /v1/invoices/{id}/pdf` answers; a draft → the error page (409)."""

    def build(current: Page) -> Response:
        filename, content = render_invoice_pdf(current.ctx, invoice_id)
        return Response(
            content=content,
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'inline; filename="{filename}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return page(request, build)
