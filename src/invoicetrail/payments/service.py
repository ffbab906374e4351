"""Payments: the only writer of payments; money reaches invoices through `invoices.service`."""

from __future__ import annotations

from sqlalchemy import select

from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import DuplicateExternalReference, NotFound
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.customers import service as customers
from invoicetrail.events import service as events
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.models import Invoice
from invoicetrail.invoices.states import require_action
from invoicetrail.payments.models import Payment
from invoicetrail.payments.schemas import PayInvoice, PaymentOut
from invoicetrail.payments.states import PaymentStatus, transition

MANUAL_PROVIDER = "manual"


def find_by_reference(ctx: Ctx, invoice_id: str, reference: str) -> Payment | None:
    return ctx.session.execute(
        select(Payment).where(
            Payment.account_id == ctx.account_id,
            Payment.invoice_id == invoice_id,
            Payment.reference == reference,
        )
    ).scalar_one_or_none()


def pay_invoice(ctx: Ctx, invoice_id: str, body: PayInvoice) -> Invoice:
    """Out-of-band payment: one payment per (invoice, reference), however often it is reported."""
    invoice = invoices.get_for_update(ctx, invoice_id)
    existing = find_by_reference(ctx, invoice.id, body.reference)
    if existing is not None and existing.status == PaymentStatus.SUCCEEDED.value:
        return invoice  # the same money reported again: nothing more to apply
    require_action(invoice, "pay")
    amount_minor = body.amount or (invoice.total_minor - invoice.amount_paid_minor)
    if existing is None:
        if body.external_reference is not None:
            taken = ctx.session.execute(
                select(Payment.id).where(
                    Payment.account_id == ctx.account_id,
                    Payment.external_reference == body.external_reference,
                )
            ).scalar_one_or_none()
            if taken is not None:
                raise DuplicateExternalReference("payment", taken, body.external_reference)
        payment = Payment(
            id=new_id("pay"),
            account_id=ctx.account_id,
            invoice_id=invoice.id,
            customer_id=invoice.customer_id,
            reference=body.reference,
            provider=MANUAL_PROVIDER,
            method=body.method,
            amount_minor=amount_minor,
            currency=invoice.currency,
            status=PaymentStatus.SUCCEEDED.value,
            provider_event_ids=[],
            external_reference=body.external_reference,
            created_at=ctx.now,
            updated_at=ctx.now,
            request_id=ctx.request_id,
        )
        ctx.session.add(payment)
        ctx.session.flush()
        events.record(ctx, "payment.created", PaymentOut.of(payment))
    else:
        payment = existing
        transition(payment, PaymentStatus.SUCCEEDED)
        payment.amount_minor = amount_minor
        payment.updated_at = ctx.now
        ctx.session.flush()
    events.record(ctx, "payment.succeeded", PaymentOut.of(payment))
    surplus_minor = invoices.apply_payment(ctx, invoice, amount_minor)
    if surplus_minor > 0:
        customers.add_credit(ctx, invoice.customer_id, invoice.currency, surplus_minor)
    return invoice


def get(ctx: Ctx, payment_id: str) -> Payment:
    payment = ctx.session.execute(
        select(Payment).where(Payment.id == payment_id, Payment.account_id == ctx.account_id)
    ).scalar_one_or_none()
    if payment is None:
        raise NotFound("payment", payment_id)
    return payment


def list_payments(
    ctx: Ctx, page: Page, *, invoice_id: str | None, status: str | None
) -> tuple[list[Payment], bool]:
    filters = []
    if invoice_id is not None:
        filters.append(Payment.invoice_id == invoice_id)
    if status is not None:
        filters.append(Payment.status == status)
    return list_page(ctx, Payment, page, *filters, object_name="payment")
