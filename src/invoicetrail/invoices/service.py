"""Invoices: drafts, finalize, send, void, mark_uncollectible and payment application.

The only writer of invoices, lines and number sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import selectinload

from invoicetrail.accounts import service as accounts
from invoicetrail.accounts.models import LegalEntity
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import (
    Conflict,
    DuplicateExternalReference,
    NotFound,
    ValidationFailed,
    invariant,
)
from invoicetrail.core.faults import crash_point
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.core.money import AMOUNT_ABS_MAX_MINOR, line_amounts
from invoicetrail.customers import service as customers
from invoicetrail.customers.models import Customer
from invoicetrail.customers.service import merge_metadata
from invoicetrail.einvoicing import service as einvoicing
from invoicetrail.events import service as events
from invoicetrail.invoices import einvoices, numbering
from invoicetrail.invoices import email as invoice_email
from invoicetrail.invoices.models import CreditNote, Invoice, InvoiceLine
from invoicetrail.invoices.schemas import InvoiceCreate, InvoiceOut, InvoiceUpdate, LineIn
from invoicetrail.invoices.states import (
    OPEN,
    PAID,
    UNCOLLECTIBLE,
    VOID,
    InvoiceStatus,
    require_action,
    transition,
)
from invoicetrail.ledger import chart, rules
from invoicetrail.ledger import service as ledger

INVOICE_NUMBER_KIND = "invoice"


def _ensure_external_reference_free(ctx: Ctx, external_reference: str | None) -> None:
    if external_reference is None:
        return
    existing = ctx.session.execute(
        select(Invoice.id).where(
            Invoice.account_id == ctx.account_id,
            Invoice.external_reference == external_reference,
        )
    ).scalar_one_or_none()
    if existing is not None:
        raise DuplicateExternalReference("invoice", existing, external_reference)


def build_lines(lines: Sequence[LineIn], *, object_name: str = "invoice") -> list[InvoiceLine]:
    built = []
    for position, line in enumerate(lines):
        rate = Decimal(line.tax_rate)
        amounts = line_amounts(Decimal(line.quantity), line.unit_amount, rate)
        if abs(amounts.amount_minor) > AMOUNT_ABS_MAX_MINOR:
            raise ValidationFailed(
                f"lines[{position}] amount (quantity × unit_amount) exceeds 10^15 minor units",
                param=f"lines[{position}].quantity",
                object_name=object_name,
            )
        category = line.tax_category or ("S" if rate > 0 else None)
        built.append(
            InvoiceLine(
                id=new_id("il"),
                position=position,
                description=line.description,
                quantity=line.quantity,
                unit_amount_minor=line.unit_amount,
                tax_rate=line.tax_rate,
                tax_category=category,
                tax_exemption_reason=line.tax_exemption_reason,
                cfdi_product_code=line.cfdi_product_code,
                cfdi_unit_code=line.cfdi_unit_code,
                amount_minor=amounts.amount_minor,
                tax_minor=amounts.tax_minor,
            )
        )
    return built


def _set_lines(invoice: Invoice, lines: list[InvoiceLine]) -> None:
    subtotal = sum(line.amount_minor for line in lines)
    tax = sum(line.tax_minor for line in lines)
    if abs(subtotal + tax) > AMOUNT_ABS_MAX_MINOR or abs(subtotal) > AMOUNT_ABS_MAX_MINOR:
        raise ValidationFailed(
            "The invoice total exceeds 10^15 minor units",
            param="lines",
            object_name="invoice",
        )
    invoice.lines = lines
    invoice.subtotal_minor = subtotal
    invoice.tax_minor = tax
    invoice.total_minor = subtotal + tax


def create(ctx: Ctx, body: InvoiceCreate) -> Invoice:
    customer = customers.get(ctx, body.customer, param="customer")
    entity = (
        accounts.get_legal_entity(ctx, body.legal_entity, param="legal_entity")
        if body.legal_entity
        else accounts.default_legal_entity(ctx)
    )
    _ensure_external_reference_free(ctx, body.external_reference)
    invoice = Invoice(
        id=new_id("in"),
        account_id=ctx.account_id,
        legal_entity_id=entity.id,
        customer_id=customer.id,
        status=InvoiceStatus.DRAFT.value,
        number=None,
        currency=body.currency,
        collection_method=body.collection_method,
        due_date=body.due_date,
        external_reference=body.external_reference,
        metadata_=dict(body.metadata),
        buyer_reference=body.buyer_reference,
        purchase_order=body.purchase_order,
        amount_paid_minor=0,
        created_at=ctx.now,
        request_id=ctx.request_id,
    )
    _set_lines(invoice, build_lines(body.lines))
    ctx.session.add(invoice)
    ctx.session.flush()
    crash_point("invoice_row_written")
    events.record(ctx, "invoice.created", InvoiceOut.of(invoice))
    return invoice


def update(ctx: Ctx, invoice_id: str, body: InvoiceUpdate) -> Invoice:
    invoice = get_for_update(ctx, invoice_id)
    require_action(invoice, "update")
    fields = body.model_fields_set
    if "customer" in fields:
        if body.customer is None:
            raise ValidationFailed(
                "customer cannot be removed", param="customer", object_name="invoice"
            )
        invoice.customer_id = customers.get(ctx, body.customer, param="customer").id
    if "legal_entity" in fields:
        entity = (
            accounts.get_legal_entity(ctx, body.legal_entity, param="legal_entity")
            if body.legal_entity
            else accounts.default_legal_entity(ctx)
        )
        invoice.legal_entity_id = entity.id
    for name in ("currency", "lines", "collection_method"):
        if name in fields and getattr(body, name) is None:
            raise ValidationFailed(f"{name} cannot be null", param=name, object_name="invoice")
    if body.currency is not None:
        invoice.currency = body.currency
    if body.collection_method is not None:
        invoice.collection_method = body.collection_method
    if "due_date" in fields:
        invoice.due_date = body.due_date
    if "external_reference" in fields and body.external_reference != invoice.external_reference:
        _ensure_external_reference_free(ctx, body.external_reference)
        invoice.external_reference = body.external_reference
    if "buyer_reference" in fields:
        invoice.buyer_reference = body.buyer_reference
    if "purchase_order" in fields:
        invoice.purchase_order = body.purchase_order
    if body.metadata is not None:
        invoice.metadata_ = merge_metadata(invoice.metadata_, body.metadata)
    if body.lines is not None:
        _set_lines(invoice, build_lines(body.lines))
    ctx.session.flush()
    events.record(ctx, "invoice.updated", InvoiceOut.of(invoice))
    return invoice


def _require_complete(ctx: Ctx, invoice: Invoice) -> Customer:
    """Everything a posting needs, checked before a number is used; returns the customer."""
    customer = customers.get(ctx, invoice.customer_id)
    if not (customer.address or {}).get("country"):
        raise ValidationFailed(
            f"customer {customer.id} needs address.country before invoice {invoice.id} "
            "can be finalized",
            param="customer.address.country",
            object_name="invoice",
            code="parameter_missing",
        )
    if invoice.collection_method == "send_invoice" and invoice.due_date is None:
        raise ValidationFailed(
            "due_date is required to finalize an invoice with collection_method send_invoice",
            param="due_date",
            object_name="invoice",
            code="parameter_missing",
        )
    if invoice.total_minor <= 0:
        raise ValidationFailed(
            f"invoice {invoice.id} has a total of {invoice.total_minor}; only a positive total "
            "can be finalized (use a credit note to give money back)",
            param="lines",
            object_name="invoice",
        )
    return customer


def finalize(ctx: Ctx, invoice_id: str) -> Invoice:
    invoice = get_for_update(ctx, invoice_id)
    require_action(invoice, "finalize")
    customer = _require_complete(ctx, invoice)
    entity = accounts.get_legal_entity(ctx, invoice.legal_entity_id)
    # Before a number is used: a regime that would refuse the data refuses the finalize.
    regime = einvoices.check_before_finalize(invoice, entity, customer)
    counter = numbering.next_counter(ctx, entity.id, INVOICE_NUMBER_KIND)
    reference = numbering.new_bank_transfer_reference(ctx)
    # Number and status change together: the schema refuses one without the other.
    invoice.number = numbering.format_number(entity.number_prefix, ctx.now.year, counter)
    transition(invoice, OPEN)
    invoice.bank_transfer_reference = reference
    invoice.amount_paid_minor = 0
    invoice.finalized_at = ctx.now
    invoice.parties = _parties_snapshot(entity, customer)
    ctx.session.flush()
    ledger.post(
        ctx,
        rules.Entry(
            business_key=f"finalize:{invoice.id}",
            entry_date=ctx.now.date(),
            currency=invoice.currency,
            description=f"Invoice {invoice.number}",
            lines=rules.finalize_lines(facts(invoice)),
            invoice_id=invoice.id,
            revenue_split=(invoice.subtotal_minor, invoice.tax_minor),
            customer_id=invoice.customer_id,
        ),
    )
    events.record(ctx, "invoice.finalized", InvoiceOut.of(invoice))
    if regime is not None:
        einvoices.issue_for_invoice(ctx, invoice, entity, customer, regime)
    return invoice


def _parties_snapshot(entity: LegalEntity, customer: Customer) -> dict[str, Any]:
    return {
        "seller": {
            "name": entity.name,
            "address": entity.address,
            "tax_ids": entity.tax_ids,
            "registration_id": entity.registration_id,
            "bank_account": entity.bank_account,
        },
        "buyer": {
            "id": customer.id,
            "name": customer.name,
            "email": customer.email,
            "address": customer.address,
            "tax_ids": customer.tax_ids,
        },
    }


def facts(invoice: Invoice) -> rules.InvoiceFacts:
    assert invoice.number is not None
    return rules.InvoiceFacts(
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        number=invoice.number,
        currency=invoice.currency,
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        total_minor=invoice.total_minor,
    )


def send(ctx: Ctx, invoice_id: str) -> Invoice:
    invoice = get_for_update(ctx, invoice_id)
    require_action(invoice, "send")
    # SMTP: the worker mails it and sets delivered_at once the server accepts it. No SMTP:
    # the message is written to the mail directory at once (SPEC "E-mail").
    invoice_email.queue_invoice_email(ctx, invoice)
    ctx.session.flush()
    events.record(ctx, "invoice.sent", InvoiceOut.of(invoice))
    return invoice


def void(ctx: Ctx, invoice_id: str) -> Invoice:
    invoice = get_for_update(ctx, invoice_id)
    require_action(invoice, "void")
    if has_credit_notes(ctx, invoice.id):
        raise Conflict(
            f"invoice {invoice.id} has credit notes; void needs an invoice without any "
            "(credit the rest of it instead)",
            code="invalid_state_transition",
            object_name="invoice",
        )
    # Its e-invoice is cancelled with it; past MyInvois' 72 h this refuses: credit note instead.
    einvoicing.before_invoice_void(ctx, invoice.id)
    transition(invoice, VOID)
    invoice.voided_at = ctx.now
    ctx.session.flush()
    finalized = ledger.find(ctx, f"finalize:{invoice.id}")
    ledger.post(
        ctx,
        rules.Entry(
            business_key=f"void:{invoice.id}",
            entry_date=ctx.now.date(),
            currency=invoice.currency,
            description=f"Void of invoice {invoice.number}",
            lines=[
                *rules.reversal_lines(rules.finalize_lines(facts(invoice))),
                # Money already paid on a voided invoice is owed back: the customer's credit.
                rules.Line(chart.RECEIVABLE, debit_minor=invoice.amount_paid_minor),
                rules.Line(chart.CUSTOMER_CREDIT, credit_minor=invoice.amount_paid_minor),
            ],
            invoice_id=invoice.id,
            revenue_split=(invoice.subtotal_minor, invoice.tax_minor),
            customer_id=invoice.customer_id,
            reverses=finalized.id if finalized else None,
        ),
    )
    if invoice.amount_paid_minor > 0:
        customers.add_credit(ctx, invoice.customer_id, invoice.currency, invoice.amount_paid_minor)
    events.record(ctx, "invoice.voided", InvoiceOut.of(invoice))
    return invoice


def mark_uncollectible(ctx: Ctx, invoice_id: str) -> Invoice:
    invoice = get_for_update(ctx, invoice_id)
    require_action(invoice, "mark_uncollectible")
    transition(invoice, UNCOLLECTIBLE)
    invoice.marked_uncollectible_at = ctx.now
    ctx.session.flush()
    remaining_minor = invoice.amount_remaining_minor
    if remaining_minor > 0:
        ledger.post(
            ctx,
            rules.Entry(
                business_key=f"write_off:{invoice.id}",
                entry_date=ctx.now.date(),
                currency=invoice.currency,
                description=f"Write-off of invoice {invoice.number}",
                lines=[
                    rules.Line(chart.BAD_DEBT, debit_minor=remaining_minor),
                    rules.Line(chart.RECEIVABLE, credit_minor=remaining_minor),
                ],
                invoice_id=invoice.id,
                revenue_split=(invoice.subtotal_minor, invoice.tax_minor),
                customer_id=invoice.customer_id,
            ),
        )
    events.record(ctx, "invoice.marked_uncollectible", InvoiceOut.of(invoice))
    return invoice


def apply_payment(ctx: Ctx, invoice: Invoice, amount_minor: int) -> int:
    """Apply succeeded money to a locked invoice; returns the surplus for customer credit."""
    require_action(invoice, "pay")
    invariant(amount_minor > 0, "applied amount must be positive")
    applied = min(amount_minor, invoice.amount_remaining_minor)
    invoice.amount_paid_minor += applied
    invariant(
        0 <= invoice.amount_paid_minor <= invoice.total_minor
        and invoice.amount_remaining_minor >= 0,
        f"invoice {invoice.id}: amount_paid within total",
    )
    if invoice.amount_remaining_minor == 0:
        transition(invoice, PAID)
        invoice.paid_at = ctx.now
        ctx.session.flush()
        events.record(ctx, "invoice.paid", InvoiceOut.of(invoice))
    else:
        ctx.session.flush()
        events.record(ctx, "invoice.updated", InvoiceOut.of(invoice))
    return amount_minor - applied


def get(ctx: Ctx, invoice_id: str, *, param: str | None = None) -> Invoice:
    invoice = ctx.session.execute(
        select(Invoice)
        .where(Invoice.id == invoice_id, Invoice.account_id == ctx.account_id)
        .options(selectinload(Invoice.lines))
    ).scalar_one_or_none()
    if invoice is None:
        raise NotFound("invoice", invoice_id, param=param)
    return invoice


def get_for_update(ctx: Ctx, invoice_id: str, *, param: str | None = None) -> Invoice:
    """Row lock first, so concurrent actions on one invoice run one after the other."""
    invoice = ctx.session.execute(
        select(Invoice)
        .where(Invoice.id == invoice_id, Invoice.account_id == ctx.account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
        .options(selectinload(Invoice.lines))
    ).scalar_one_or_none()
    if invoice is None:
        raise NotFound("invoice", invoice_id, param=param)
    return invoice


def has_credit_notes(ctx: Ctx, invoice_id: str) -> bool:
    return (
        ctx.session.execute(
            select(CreditNote.id)
            .where(CreditNote.account_id == ctx.account_id, CreditNote.invoice_id == invoice_id)
            .limit(1)
        ).first()
        is not None
    )


def find_for_update(ctx: Ctx, invoice_id: str) -> Invoice | None:
    try:
        return get_for_update(ctx, invoice_id)
    except NotFound:
        return None


def find_by_bank_transfer_reference(ctx: Ctx, reference_code: str) -> Invoice | None:
    """An invoice that can still take money, by its reference typed in any case or spacing."""
    compact = numbering.compact_reference(reference_code)
    if not numbering.is_valid_reference(compact):
        return None  # the check character caught a typo: never guess which invoice was meant
    invoice_id = ctx.session.execute(
        select(Invoice.id).where(
            Invoice.account_id == ctx.account_id,
            Invoice.bank_transfer_reference == numbering.display_reference(compact),
            Invoice.status.in_(["open", "uncollectible"]),
        )
    ).scalar_one_or_none()
    return get_for_update(ctx, invoice_id) if invoice_id else None


def list_invoices(
    ctx: Ctx, page: Page, *, status: str | None, customer_id: str | None
) -> tuple[list[Invoice], bool]:
    filters = []
    if status is not None:
        filters.append(Invoice.status == status)
    if customer_id is not None:
        filters.append(Invoice.customer_id == customer_id)
    return list_page(
        ctx, Invoice, page, *filters, object_name="invoice", options=[selectinload(Invoice.lines)]
    )


@dataclass(frozen=True)
class OpenAmounts:
    """What customers owe in one currency: open invoices, and those past their due date."""

    currency: str
    open_count: int
    open_minor: int
    overdue_count: int
    overdue_minor: int


def counts_by_status(ctx: Ctx) -> list[tuple[str, str, int]]:
    """(status, currency, invoices) for the account: one GROUP BY, whatever the volume."""
    rows = ctx.session.execute(
        select(Invoice.status, Invoice.currency, func.count())
        .where(Invoice.account_id == ctx.account_id)
        .group_by(Invoice.status, Invoice.currency)
        .order_by(Invoice.status, Invoice.currency)
    ).all()
    return [(status, currency, int(count)) for status, currency, count in rows]


def open_amounts(ctx: Ctx, today: date) -> list[OpenAmounts]:
    """Per currency, the amount remaining on open invoices; overdue = due before `today`."""
    remaining = Invoice.total_minor - Invoice.amount_paid_minor - Invoice.amount_credited_minor
    overdue = Invoice.due_date < today
    rows = ctx.session.execute(
        select(
            Invoice.currency,
            func.count(),
            func.coalesce(func.sum(remaining), 0),
            func.coalesce(func.sum(case((overdue, 1), else_=0)), 0),
            func.coalesce(func.sum(case((overdue, remaining), else_=0)), 0),
        )
        .where(Invoice.account_id == ctx.account_id, Invoice.status == OPEN)
        .group_by(Invoice.currency)
        .order_by(Invoice.currency)
    ).all()
    return [
        OpenAmounts(currency, int(n), int(amount), int(late_n), int(late_amount))
        for currency, n, amount, late_n, late_amount in rows
    ]
