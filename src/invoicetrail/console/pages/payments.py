"""Console pages: payments with filters, and applying an unmatched transfer to an invoice.

The apply form is `POST /v1/payments/{id}/apply` run through `api_write`: the same body model,
command, transaction and idempotency key as the API, so the exception item it resolves and the
trace show it like any API call."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from invoicetrail.console.pages.invoices import PAGE_SIZE, page_url, query_value
from invoicetrail.console.web import Page, action, api_write, page, redirect
from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import ValidationFailed
from invoicetrail.core.http import LIST_LIMIT_MAX
from invoicetrail.core.http import Page as ListPage
from invoicetrail.core.money import format_display
from invoicetrail.payments import service as payments
from invoicetrail.payments.models import Payment
from invoicetrail.payments.schemas import ApplyPayment, PaymentOut
from invoicetrail.payments.states import PaymentStatus

# Included by `console/routes.py`, whose router carries the `/console` prefix.
router = APIRouter(include_in_schema=False)

STATUSES = tuple(status.value for status in PaymentStatus)
METHODS = ("card", "ach", "bank_transfer", "cash", "check", "other")
PROVIDERS = ("stripe", "standard_webhooks", "simulated", payments.MANUAL_PROVIDER)
# `payments.list_payments` filters by invoice, status and unapplied in SQL; method and provider
# are matched here over at most this many rows per page view (the page then links on from
# where the scan stopped, so nothing is skipped).
SCAN_ROWS_MAX = 2_000


@dataclass(frozen=True)
class Filters:
    status: str | None
    method: str | None
    provider: str | None
    unmatched: bool
    invoice: str | None

    @classmethod
    def of(cls, request: Request) -> Filters:
        status = query_value(request, "status")
        if status is not None and status not in STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}", param="status")
        return cls(
            status=status,
            method=query_value(request, "method"),
            provider=query_value(request, "provider"),
            unmatched=query_value(request, "unmatched") in ("1", "true", "on"),
            invoice=query_value(request, "invoice"),
        )

    def url(self) -> str:
        return page_url(
            "/console/payments",
            {
                "status": self.status,
                "method": self.method,
                "provider": self.provider,
                "unmatched": "1" if self.unmatched else None,
                "invoice": self.invoice,
            },
        )

    def matches(self, payment: Payment) -> bool:
        return (self.method is None or payment.method == self.method) and (
            self.provider is None or payment.provider == self.provider
        )


def _page(
    ctx: Ctx, filters: Filters, starting_after: str | None
) -> tuple[list[Payment], str | None]:
    """A page of payments newest first and the cursor of the next page (None: no more)."""

    def read(cursor: str | None, limit: int) -> tuple[list[Payment], bool]:
        return payments.list_payments(
            ctx,
            ListPage(limit=limit, starting_after=cursor),
            invoice_id=filters.invoice,
            status=filters.status,
            unapplied=True if filters.unmatched else None,
        )

    if filters.method is None and filters.provider is None:
        rows, has_more = read(starting_after, PAGE_SIZE)
        return rows, rows[-1].id if has_more and rows else None
    found: list[Payment] = []
    cursor, scanned = starting_after, 0
    while True:
        batch, has_more = read(cursor, LIST_LIMIT_MAX)
        for row in batch:
            cursor, scanned = row.id, scanned + 1
            if filters.matches(row):
                found.append(row)
                if len(found) > PAGE_SIZE:  # one more than a page: there is a next page
                    return found[:PAGE_SIZE], found[PAGE_SIZE - 1].id
        if not has_more:
            return found, None
        if scanned >= SCAN_ROWS_MAX:
            return found, cursor


@dataclass(frozen=True)
class PaymentRow:
    id: str
    reference: str
    invoice: str | None
    provider: str
    method: str
    status: str
    amount: int
    currency: str
    received_at: str | None
    created: str | None
    can_apply: bool


def _row(payment: Payment) -> PaymentRow:
    return PaymentRow(
        id=payment.id,
        reference=payment.reference,
        invoice=payment.invoice_id,
        provider=payment.provider,
        method=payment.method,
        status=payment.status,
        amount=payment.amount_minor,
        currency=payment.currency,
        received_at=iso_instant(payment.received_at),
        created=iso_instant(payment.created_at),
        # An unmatched transfer (or other parked money): received, on no invoice.
        can_apply=payment.invoice_id is None and payment.received_at is not None,
    )


def _list(current: Page, *, error: str | None = None, status_code: int = 200) -> Response:
    request = current.request
    filters = Filters.of(request)
    starting_after = query_value(request, "starting_after")
    rows, next_cursor = _page(current.ctx, filters, starting_after)
    base_url = filters.url()
    next_url = None
    if next_cursor is not None:
        joiner = "&" if "?" in base_url else "?"
        next_url = f"{base_url}{joiner}starting_after={quote(next_cursor)}"
    return current.render(
        "payments.html.j2",
        status_code=status_code,
        title="Unmatched payments" if filters.unmatched else "Payments",
        error=error,
        rows=[_row(payment) for payment in rows],
        filters=filters,
        statuses=STATUSES,
        methods=METHODS,
        providers=PROVIDERS,
        base_url=base_url,
        next_url=next_url,
        paged=starting_after is not None,
        # The apply forms post back with this page's query: an error re-renders this view.
        query=request.url.query,
    )


@router.get("/payments")
def payments_page(request: Request) -> Response:
    return page(request, _list)


@router.post("/payments/{payment_id}/apply")
async def apply_payment(request: Request, payment_id: str) -> Response:
    """`POST /v1/payments/{id}/apply {"invoice"}`, keyed by the form's idempotency key."""

    def do(current: Page, form: dict[str, str]) -> Response:
        outcome = api_write(
            current,
            form,
            path=f"/v1/payments/{payment_id}/apply",
            payload={"invoice": form.get("invoice", "").strip()},
            body_model=ApplyPayment,
            command=lambda ctx, body: PaymentOut.of(payments.apply_parked(ctx, payment_id, body)),
            object_name="payment",
            action="apply a payment",
        )
        if not outcome.ok:
            return page(
                request,
                lambda again: _list(
                    again,
                    error=outcome.message or "The payment could not be applied.",
                    status_code=outcome.status_code,
                ),
            )
        applied = outcome.body
        amount = format_display(applied["amount"], applied["currency"])
        return redirect(
            f"/console/invoices/{applied['invoice']}",
            f"Applied payment {applied['reference']} ({amount}) to this invoice.",
        )

    return await action(request, do)
