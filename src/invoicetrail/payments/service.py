"""Payments: the only writer of payments. Money reaches invoices through `invoices.service`
and customer credit through `customers.service`; every payment is counted exactly once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, text

from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import (
    Conflict,
    DuplicateExternalReference,
    NotFound,
    ParameterMissing,
    ValidationFailed,
)
from invoicetrail.core.http import Page
from invoicetrail.core.idempotency import advisory_lock_key
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.customers import service as customers
from invoicetrail.events import service as events
from invoicetrail.exceptions import service as exceptions
from invoicetrail.invoices import einvoices as invoice_einvoices
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.models import Invoice
from invoicetrail.invoices.states import ACTIONS, require_action
from invoicetrail.ledger import chart, rules
from invoicetrail.ledger import service as ledger
from invoicetrail.payments.models import Payment
from invoicetrail.payments.providers import Evidence
from invoicetrail.payments.schemas import ApplyPayment, PayInvoice, PaymentOut
from invoicetrail.payments.states import PaymentStatus, can_transition, transition

MANUAL_PROVIDER = "manual"
MONEY_STATUSES = frozenset({"succeeded", "refunded", "disputed"})
# A later event that denies an earlier outcome, rather than one that merely arrived late.
CONTRADICTIONS = frozenset(
    {
        ("succeeded", "failed"),
        ("failed", "succeeded"),
        ("refunded", "failed"),
        ("disputed", "failed"),
        ("failed", "refunded"),
        ("failed", "disputed"),
    }
)


@dataclass(frozen=True)
class Outcome:
    """What an inbound event did: stored on the provider event for everyone to see."""

    outcome: str
    detail: str
    payment: Payment | None = None
    invoice_id: str | None = None


def find_by_reference(ctx: Ctx, invoice_id: str | None, reference: str) -> Payment | None:
    invoice_filter = (
        Payment.invoice_id.is_(None) if invoice_id is None else Payment.invoice_id == invoice_id
    )
    if invoice_id is None and ctx.session.get_bind().dialect.name == "postgresql":
        # Unapplied cash has no invoice row to lock and NULL never collides in the unique key:
        # without this, two events for one reference at once would park the money twice.
        # (SQLite: BEGIN IMMEDIATE already runs writers one at a time.)
        ctx.session.execute(
            text("SELECT pg_advisory_xact_lock(:k)"),
            {"k": advisory_lock_key(ctx.account_id, f"unapplied-payment:{reference}")},
        )
    return ctx.session.execute(
        select(Payment)
        .where(Payment.account_id == ctx.account_id, invoice_filter, Payment.reference == reference)
        .with_for_update()
    ).scalar_one_or_none()


def _new_payment(
    ctx: Ctx,
    *,
    invoice: Invoice | None,
    reference: str,
    provider: str,
    method: str,
    amount_minor: int,
    currency: str,
    status: str,
    external_reference: str | None = None,
) -> Payment:
    payment = Payment(
        id=new_id("pay"),
        account_id=ctx.account_id,
        invoice_id=invoice.id if invoice else None,
        customer_id=invoice.customer_id if invoice else None,
        reference=reference,
        provider=provider,
        method=method,
        amount_minor=amount_minor,
        currency=currency,
        status=status,
        provider_event_ids=[],
        received_at=None,
        external_reference=external_reference,
        created_at=ctx.now,
        updated_at=ctx.now,
        request_id=ctx.request_id,
    )
    ctx.session.add(payment)
    ctx.session.flush()
    events.record(ctx, "payment.created", PaymentOut.of(payment))
    return payment


def _receipt(
    ctx: Ctx,
    payment: Payment,
    invoice: Invoice,
    *,
    applied_minor: int,
    surplus_minor: int,
    debit_account: str,
    recovered: bool = False,
) -> None:
    """Exactly one receipt per (invoice, payment reference): the database key sees to it."""
    lines = [rules.Line(debit_account, debit_minor=payment.amount_minor)]
    if applied_minor:
        credit_account = chart.BAD_DEBT if recovered else chart.RECEIVABLE
        lines.append(rules.Line(credit_account, credit_minor=applied_minor))
    if surplus_minor:
        lines.append(rules.Line(chart.CUSTOMER_CREDIT, credit_minor=surplus_minor))
    ledger.post(
        ctx,
        rules.Entry(
            business_key=f"receipt:{invoice.id}:{payment.reference}",
            entry_date=ctx.now.date(),
            currency=payment.currency,
            description=f"Payment {payment.reference} for invoice {invoice.number}",
            lines=lines,
            invoice_id=invoice.id,
            revenue_split=(invoice.subtotal_minor, invoice.tax_minor),
            payment_id=payment.id,
            customer_id=invoice.customer_id,
        ),
    )


def _receive_money(ctx: Ctx, payment: Payment, invoice: Invoice | None) -> None:
    """Counts a payment's money once: to its invoice, the customer's credit, or held unapplied."""
    if payment.received_at is not None:
        return
    payment.received_at = ctx.now
    clearing = chart.clearing(payment.provider)
    if invoice is None:
        # Unapplied cash on the account until someone applies it.
        ledger.post(
            ctx,
            rules.Entry(
                business_key=f"unapplied:{payment.id}",
                entry_date=ctx.now.date(),
                currency=payment.currency,
                description=f"Unapplied payment {payment.reference}",
                lines=[
                    rules.Line(clearing, debit_minor=payment.amount_minor),
                    rules.Line(chart.UNAPPLIED_CASH, credit_minor=payment.amount_minor),
                ],
                payment_id=payment.id,
            ),
        )
        return
    if payment.currency != invoice.currency:
        _keep_as_credit(
            ctx,
            payment,
            invoice,
            "amount_mismatch",
            f"Payment {payment.id} is in {payment.currency}, invoice {invoice.id} in "
            f"{invoice.currency}; it was kept as customer credit: refund it or settle by hand",
        )
    elif invoice.status in ACTIONS["pay"][0]:
        _apply_with_receipt(ctx, payment, invoice, debit_account=clearing)
    else:
        _keep_as_credit(
            ctx,
            payment,
            invoice,
            "payment_for_closed_invoice",
            f"Invoice {invoice.id} is {invoice.status}; the {payment.amount_minor} received by "
            f"{payment.id} is the customer's credit: refund it or apply it elsewhere",
        )


def _apply_with_receipt(
    ctx: Ctx, payment: Payment, invoice: Invoice, *, debit_account: str
) -> None:
    """Money onto an invoice that can take it; any surplus is the customer's credit."""
    recovered = invoice.status == "uncollectible"
    surplus_minor = invoices.apply_payment(ctx, invoice, payment.amount_minor)
    if surplus_minor > 0:
        customers.add_credit(ctx, invoice.customer_id, invoice.currency, surplus_minor)
    _receipt(
        ctx,
        payment,
        invoice,
        applied_minor=payment.amount_minor - surplus_minor,
        surplus_minor=surplus_minor,
        debit_account=debit_account,
        recovered=recovered,
    )
    invoice_einvoices.issue_for_payment(
        ctx,
        invoice,
        payment_id=payment.id,
        applied_minor=payment.amount_minor - surplus_minor,
        method=payment.method,
        reference=payment.reference,
    )


def _keep_as_credit(
    ctx: Ctx, payment: Payment, invoice: Invoice, kind: str, next_action: str
) -> None:
    """Money the invoice cannot take: never lost, it is the customer's credit, and AR is told."""
    customers.add_credit(ctx, invoice.customer_id, payment.currency, payment.amount_minor)
    _receipt(
        ctx,
        payment,
        invoice,
        applied_minor=0,
        surplus_minor=payment.amount_minor,
        debit_account=chart.clearing(payment.provider),
    )
    exceptions.raise_item(
        ctx,
        kind,
        refs={"invoice": invoice.id, "payment": payment.id},
        next_action=next_action,
    )


def _post_refund(ctx: Ctx, payment: Payment, invoice: Invoice) -> None:
    ledger.post(
        ctx,
        rules.Entry(
            business_key=f"refund:{invoice.id}:{payment.reference}",
            entry_date=ctx.now.date(),
            currency=payment.currency,
            description=f"Refund of payment {payment.reference}",
            lines=[
                rules.Line(chart.REFUNDS, debit_minor=payment.amount_minor),
                rules.Line(chart.clearing(payment.provider), credit_minor=payment.amount_minor),
            ],
            invoice_id=invoice.id,
            revenue_split=(invoice.subtotal_minor, invoice.tax_minor),
            payment_id=payment.id,
            customer_id=invoice.customer_id,
        ),
    )


def _record_status(ctx: Ctx, payment: Payment) -> None:
    events.record(ctx, f"payment.{payment.status}", PaymentOut.of(payment))


# --- out-of-band payments (POST /v1/invoices/{id}/pay) -----------------------------------------


def pay_invoice(ctx: Ctx, invoice_id: str, body: PayInvoice) -> Invoice:
    """One payment per (invoice, reference), however often it is reported."""
    invoice = invoices.get_for_update(ctx, invoice_id)
    if invoice.status in ("draft", "void"):
        require_action(invoice, "pay")  # SPEC: refused even for a reference already known
    existing = find_by_reference(ctx, invoice.id, body.reference)
    if existing is not None and existing.status in MONEY_STATUSES:
        return invoice  # the same money reported again: nothing more to apply
    require_action(invoice, "pay")
    amount_minor = body.amount or invoice.amount_remaining_minor
    if amount_minor <= 0:
        # Credit notes settled this open invoice in full: the amount cannot default to what
        # remains (nothing), and a payment of 0 is no payment.
        raise ParameterMissing(
            f"invoice {invoice.id} has nothing remaining to pay; give the amount received",
            param="amount",
            object_name="invoice",
        )
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
        payment = _new_payment(
            ctx,
            invoice=invoice,
            reference=body.reference,
            provider=MANUAL_PROVIDER,
            method=body.method,
            amount_minor=amount_minor,
            currency=invoice.currency,
            status=PaymentStatus.SUCCEEDED.value,
            external_reference=body.external_reference,
        )
    else:
        payment = existing
        transition(payment, PaymentStatus.SUCCEEDED)
        payment.amount_minor = amount_minor
        payment.updated_at = ctx.now
        ctx.session.flush()
    _record_status(ctx, payment)
    _receive_money(ctx, payment, invoice)
    return invoice


# --- provider evidence -------------------------------------------------------------------------


def apply_evidence(ctx: Ctx, evidence: Evidence, *, provider: str, provider_event: str) -> Outcome:
    """Applies one verified, first-seen provider event in the caller's transaction."""
    if evidence.action == "ignored":
        return Outcome("ignored", f"{evidence.event_type} is stored; it is not a mapped type")
    assert evidence.reference is not None and evidence.status is not None
    if evidence.action == "transfer":
        return _apply_transfer(ctx, evidence, provider=provider, provider_event=provider_event)

    invoice_id = evidence.invoice_id
    if invoice_id is None and evidence.action in ("refund", "dispute"):
        known = list(
            ctx.session.execute(
                select(Payment).where(
                    Payment.account_id == ctx.account_id, Payment.reference == evidence.reference
                )
            ).scalars()
        )
        if len(known) > 1:
            exceptions.raise_item(
                ctx,
                "duplicate_payment_reference",
                refs={"provider_event": provider_event, "invoice": known[0].invoice_id},
                next_action=(
                    f"Reference {evidence.reference} belongs to {len(known)} payments; decide "
                    f"which one the {evidence.event_type} event concerns"
                ),
            )
            return Outcome("ambiguous", f"{len(known)} payments carry {evidence.reference}")
        invoice_id = known[0].invoice_id if known else None
    invoice = invoices.find_for_update(ctx, invoice_id) if invoice_id else None
    if invoice is None:
        return _payment_without_invoice(
            ctx, evidence, provider=provider, provider_event=provider_event
        )
    return _apply_to_invoice(
        ctx, evidence, invoice, provider=provider, provider_event=provider_event
    )


def _apply_to_invoice(
    ctx: Ctx, evidence: Evidence, invoice: Invoice, *, provider: str, provider_event: str
) -> Outcome:
    assert evidence.reference is not None and evidence.status is not None
    target = PaymentStatus(evidence.status)
    payment = find_by_reference(ctx, invoice.id, evidence.reference)
    if payment is None:
        payment = _new_payment(
            ctx,
            invoice=invoice,
            reference=evidence.reference,
            provider=provider,
            method=evidence.method or "other",
            amount_minor=evidence.amount_minor or 0,
            currency=evidence.currency or invoice.currency,
            status=target.value,
        )
        payment.provider_event_ids = [evidence.provider_event_id]
        _record_status(ctx, payment)
        if target.value in MONEY_STATUSES:
            _receive_money(ctx, payment, invoice)
        if target is PaymentStatus.REFUNDED:
            _post_refund(ctx, payment, invoice)
        return Outcome(
            "applied", f"payment {payment.id} created {target.value}", payment, invoice.id
        )
    _link_event(payment, evidence.provider_event_id)
    current = payment.status
    if evidence.action == "refund" and not evidence.fully_refunded and current == "succeeded":
        return Outcome(
            "recorded", "partial refund: the payment stays succeeded", payment, invoice.id
        )
    if current == target.value:
        return Outcome("repeat", f"payment {payment.id} is already {current}", payment, invoice.id)
    if can_transition(current, target):
        transition(payment, target)
        if target is PaymentStatus.SUCCEEDED and evidence.amount_minor:
            payment.amount_minor = evidence.amount_minor
        payment.updated_at = ctx.now
        ctx.session.flush()
        _record_status(ctx, payment)
        if target.value in MONEY_STATUSES:
            _receive_money(ctx, payment, invoice)
        if target is PaymentStatus.REFUNDED:
            _post_refund(ctx, payment, invoice)
        return Outcome(
            "applied", f"payment {payment.id} {current} → {target.value}", payment, invoice.id
        )
    kind = "contradictory_event" if (current, target.value) in CONTRADICTIONS else "stale_event"
    exceptions.raise_item(
        ctx,
        kind,
        refs={"invoice": invoice.id, "payment": payment.id, "provider_event": provider_event},
        next_action=(
            f"Payment {payment.id} is {current}; a {evidence.event_type} event "
            f"({evidence.provider_event_id}) says {target.value}. Check with the provider "
            "which is true; nothing was changed"
        ),
        detail={"provider_event_id": evidence.provider_event_id},
    )
    return Outcome(
        kind.removesuffix("_event"),
        f"{target.value} after {current}: recorded, nothing changed",
        payment,
        invoice.id,
    )


def _link_event(payment: Payment, provider_event_id: str) -> None:
    if provider_event_id not in payment.provider_event_ids:
        payment.provider_event_ids = [*payment.provider_event_ids, provider_event_id]


def _invoice_holding(ctx: Ctx, provider: str, reference: str) -> Invoice | None:
    """The invoice a provider's payment reference was already applied to. One payment at the
    provider is one payment here: a later event for it (under another event id) that names no
    invoice we can use concerns that payment, and its money is never counted a second time."""
    invoice_ids = {
        invoice_id
        for invoice_id in ctx.session.execute(
            select(Payment.invoice_id).where(
                Payment.account_id == ctx.account_id,
                Payment.provider == provider,
                Payment.reference == reference,
                Payment.invoice_id.is_not(None),
            )
        ).scalars()
        if invoice_id is not None
    }
    if len(invoice_ids) != 1:
        return None
    return invoices.find_for_update(ctx, invoice_ids.pop())


def _payment_without_invoice(
    ctx: Ctx, evidence: Evidence, *, provider: str, provider_event: str
) -> Outcome:
    assert evidence.reference is not None and evidence.status is not None
    holding = _invoice_holding(ctx, provider, evidence.reference)
    if holding is not None:
        return _apply_to_invoice(
            ctx, evidence, holding, provider=provider, provider_event=provider_event
        )
    parked = find_by_reference(ctx, None, evidence.reference)
    # Only money coming in is parked: a refund or dispute of a payment not seen yet (it arrived
    # first) is no cash on the account; it is kept on the item below, never counted.
    money_in = evidence.action == "payment" and evidence.status in MONEY_STATUSES
    if parked is None and money_in and evidence.amount_minor:
        parked = _new_payment(
            ctx,
            invoice=None,
            reference=evidence.reference,
            provider=provider,
            method=evidence.method or "other",
            amount_minor=evidence.amount_minor,
            currency=evidence.currency or "xxx",
            status=evidence.status,
        )
        parked.provider_event_ids = [evidence.provider_event_id]
        _receive_money(ctx, parked, None)
    elif parked is not None:
        _link_event(parked, evidence.provider_event_id)
    exceptions.raise_item(
        ctx,
        "payment_without_invoice",
        refs={"payment": parked.id if parked else None, "provider_event": provider_event},
        next_action=(
            f"A {evidence.event_type} event for {evidence.reference} names no invoice of this "
            "account; find the invoice and apply the payment to it"
        ),
        detail={
            "provider_event_id": evidence.provider_event_id,
            "payment_reference": evidence.reference,
            "invoice_named": evidence.invoice_id,
        },
    )
    return Outcome("unmatched", "no invoice of this account", parked, None)


def _apply_transfer(ctx: Ctx, evidence: Evidence, *, provider: str, provider_event: str) -> Outcome:
    assert evidence.reference is not None
    invoice = invoices.find_by_bank_transfer_reference(ctx, evidence.reference_code or "")
    if invoice is None:
        # The same transfer reported again once its invoice is paid (or once AR applied it).
        invoice = _invoice_holding(ctx, provider, evidence.reference)
    if invoice is not None:
        return _apply_to_invoice(
            ctx, evidence, invoice, provider=provider, provider_event=provider_event
        )
    parked = find_by_reference(ctx, None, evidence.reference)
    if parked is None:
        parked = _new_payment(
            ctx,
            invoice=None,
            reference=evidence.reference,
            provider=provider,
            method="bank_transfer",
            amount_minor=evidence.amount_minor or 0,
            currency=evidence.currency or "xxx",
            status=PaymentStatus.SUCCEEDED.value,
        )
        parked.provider_event_ids = [evidence.provider_event_id]
        _record_status(ctx, parked)
        _receive_money(ctx, parked, None)
    else:
        _link_event(parked, evidence.provider_event_id)
    exceptions.raise_item(
        ctx,
        "unmatched_transfer",
        refs={"payment": parked.id, "provider_event": provider_event},
        next_action=(
            f"A transfer of {evidence.amount_minor} {evidence.currency} with reference code "
            f"'{evidence.reference_code}' matches no open invoice; apply {parked.id} to the "
            "right invoice (POST /v1/payments/{id}/apply) or refund it"
        ),
        detail={
            "provider_event_id": evidence.provider_event_id,
            "payment_reference": evidence.reference,
            "reference_code": evidence.reference_code,
        },
    )
    return Outcome("unmatched", "held as unapplied cash", parked, None)


def apply_parked(ctx: Ctx, payment_id: str, body: ApplyPayment) -> Payment:
    """Applies unapplied cash (an unmatched transfer) to an invoice."""
    payment = get(ctx, payment_id, for_update=True)
    if payment.invoice_id is not None:
        raise Conflict(
            f"payment {payment.id} is already applied to invoice {payment.invoice_id}",
            code="invalid_state_transition",
            object_name="payment",
        )
    if payment.received_at is None:
        raise Conflict(
            f"payment {payment.id} is {payment.status}; only received money can be applied",
            code="invalid_state_transition",
            object_name="payment",
        )
    invoice = invoices.get_for_update(ctx, body.invoice, param="invoice")
    require_action(invoice, "pay")
    if invoice.currency != payment.currency:
        raise ValidationFailed(
            f"invoice {invoice.id} is in {invoice.currency}, payment {payment.id} in "
            f"{payment.currency}",
            param="invoice",
            object_name="payment",
        )
    if find_by_reference(ctx, invoice.id, payment.reference) is not None:
        raise Conflict(
            f"invoice {invoice.id} already has a payment with reference {payment.reference}",
            code="duplicate_payment_reference",
            object_name="payment",
        )
    payment.invoice_id = invoice.id
    payment.customer_id = invoice.customer_id
    payment.updated_at = ctx.now
    ctx.session.flush()
    _apply_with_receipt(ctx, payment, invoice, debit_account=chart.UNAPPLIED_CASH)
    exceptions.resolve_matching(
        ctx,
        refs={"payment": payment.id},
        note=f"applied to invoice {invoice.id}",
    )
    events.record(ctx, "payment.updated", PaymentOut.of(payment))
    return payment


def get(ctx: Ctx, payment_id: str, *, for_update: bool = False) -> Payment:
    stmt = select(Payment).where(Payment.id == payment_id, Payment.account_id == ctx.account_id)
    if for_update:
        stmt = stmt.with_for_update()
    payment = ctx.session.execute(stmt).scalar_one_or_none()
    if payment is None:
        raise NotFound("payment", payment_id)
    return payment


def list_payments(
    ctx: Ctx,
    page: Page,
    *,
    invoice_id: str | None,
    status: str | None,
    unapplied: bool | None = None,
) -> tuple[list[Payment], bool]:
    filters = []
    if invoice_id is not None:
        filters.append(Payment.invoice_id == invoice_id)
    if status is not None:
        filters.append(Payment.status == status)
    if unapplied is not None:
        filters.append(
            Payment.invoice_id.is_(None) if unapplied else Payment.invoice_id.isnot(None)
        )
    return list_page(ctx, Payment, page, *filters, object_name="payment")


def processing_totals(ctx: Ctx, *, method: str) -> list[tuple[str, int, int]]:
    """(currency, payments, amount) still processing by `method` (ACH debits take days)."""
    rows = ctx.session.execute(
        select(Payment.currency, func.count(), func.coalesce(func.sum(Payment.amount_minor), 0))
        .where(
            Payment.account_id == ctx.account_id,
            Payment.status == PaymentStatus.PROCESSING.value,
            Payment.method == method,
        )
        .group_by(Payment.currency)
        .order_by(Payment.currency)
    ).all()
    return [(currency, int(count), int(amount)) for currency, count, amount in rows]
