"""Credit notes: money given back against an open or paid invoice, with their own gapless
number series and their own journal entry. The invoice keeps its status."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import func, select

from invoicetrail.accounts import service as accounts
from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import InvalidTransition, NotFound, ValidationFailed, invariant
from invoicetrail.core.fields import Body, Metadata, PositiveAmountMinor
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.customers import service as customers
from invoicetrail.events import service as events
from invoicetrail.invoices import einvoices, numbering
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.models import CreditNote
from invoicetrail.invoices.schemas import INVOICE_LINES_MAX, InvoiceOut, LineIn
from invoicetrail.ledger import chart, rules
from invoicetrail.ledger import service as ledger

CREDIT_NOTE_NUMBER_KIND = "credit_note"
CREDITABLE_STATUSES = frozenset({"open", "paid"})


class CreditNoteCreate(Body):
    invoice: Annotated[str, Field(min_length=1)]
    reason: Annotated[str, Field(min_length=1, max_length=5000)]
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=INVOICE_LINES_MAX)] | None = None
    amount: PositiveAmountMinor | None = None
    metadata: Metadata = {}

    @model_validator(mode="after")
    def _lines_or_amount(self) -> CreditNoteCreate:
        if (self.lines is None) == (self.amount is None):
            raise ValueError("give either lines or amount (minor units, tax included)")
        return self


class CreditNoteOut(BaseModel):
    id: str
    object: str = "credit_note"
    number: str
    invoice: str
    customer: str
    status: str
    currency: str
    reason: str
    lines: list[dict[str, Any]]
    subtotal: int
    tax: int
    total: int
    applied_to_invoice: int
    customer_credit: int
    metadata: dict[str, str]
    created: str | None

    @classmethod
    def of(cls, note: CreditNote) -> CreditNoteOut:
        return cls(
            id=note.id,
            number=note.number,
            invoice=note.invoice_id,
            customer=note.customer_id,
            status=note.status,
            currency=note.currency,
            reason=note.reason,
            lines=note.lines,
            subtotal=note.subtotal_minor,
            tax=note.tax_minor,
            total=note.total_minor,
            applied_to_invoice=note.applied_to_invoice_minor,
            customer_credit=note.customer_credit_minor,
            metadata=note.metadata_,
            created=iso_instant(note.created_at),
        )


def credited_total(ctx: Ctx, invoice_id: str) -> int:
    return int(
        ctx.session.execute(
            select(func.coalesce(func.sum(CreditNote.total_minor), 0)).where(
                CreditNote.account_id == ctx.account_id, CreditNote.invoice_id == invoice_id
            )
        ).scalar_one()
    )


def _amounts(invoice_total: tuple[int, int], body: CreditNoteCreate) -> tuple[int, int, list[Any]]:
    """(subtotal, tax, lines) of the note, per line like an invoice, or split like the invoice."""
    if body.lines is not None:
        built = invoices.build_lines(body.lines, object_name="credit_note")
        lines = [
            {
                "description": line.description,
                "quantity": line.quantity,
                "unit_amount": line.unit_amount_minor,
                "tax_rate": line.tax_rate,
                "tax_category": line.tax_category,
                "tax_exemption_reason": line.tax_exemption_reason,
                "amount": line.amount_minor,
                "tax": line.tax_minor,
            }
            for line in built
        ]
        return sum(x.amount_minor for x in built), sum(x.tax_minor for x in built), lines
    assert body.amount is not None
    subtotal_minor, tax_minor = invoice_total
    facts = rules.InvoiceFacts(
        "", "", "", "", subtotal_minor, tax_minor, subtotal_minor + tax_minor
    )
    net, tax = rules.split_revenue_and_tax(facts, body.amount)
    return net, tax, []


def create(ctx: Ctx, body: CreditNoteCreate) -> CreditNote:
    invoice = invoices.get_for_update(ctx, body.invoice, param="invoice")
    if invoice.status not in CREDITABLE_STATUSES:
        raise InvalidTransition(
            "invoice", invoice.id, invoice.status, "a credit note", "an open or paid invoice"
        )
    subtotal_minor, tax_minor, lines = _amounts((invoice.subtotal_minor, invoice.tax_minor), body)
    total_minor = subtotal_minor + tax_minor
    param = "lines" if body.lines is not None else "amount"
    if total_minor <= 0:
        raise ValidationFailed(
            "a credit note must credit a positive amount", param=param, object_name="credit_note"
        )
    left_minor = invoice.total_minor - credited_total(ctx, invoice.id)
    if total_minor > left_minor:
        raise ValidationFailed(
            f"invoice {invoice.id} has {left_minor} left to credit; this note is {total_minor}",
            param=param,
            object_name="credit_note",
        )
    applied_minor = min(total_minor, invoice.amount_remaining_minor)
    credit_minor = total_minor - applied_minor
    entity = accounts.get_legal_entity(ctx, invoice.legal_entity_id)
    counter = numbering.next_counter(ctx, entity.id, CREDIT_NOTE_NUMBER_KIND)
    prefix = "CN" if entity.number_prefix == "INV" else f"{entity.number_prefix}CN"
    note = CreditNote(
        id=new_id("cn"),
        account_id=ctx.account_id,
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        legal_entity_id=entity.id,
        number=numbering.format_number(prefix, ctx.now.year, counter),
        status="issued",
        currency=invoice.currency,
        reason=body.reason,
        lines=lines,
        subtotal_minor=subtotal_minor,
        tax_minor=tax_minor,
        total_minor=total_minor,
        applied_to_invoice_minor=applied_minor,
        customer_credit_minor=credit_minor,
        metadata_=dict(body.metadata),
        created_at=ctx.now,
        request_id=ctx.request_id,
    )
    ctx.session.add(note)
    invoice.amount_credited_minor += applied_minor
    invariant(invoice.amount_remaining_minor >= 0, f"invoice {invoice.id}: credited within total")
    ctx.session.flush()
    if credit_minor:
        customers.add_credit(ctx, invoice.customer_id, invoice.currency, credit_minor)
    ledger.post(
        ctx,
        rules.Entry(
            business_key=f"credit_note:{note.id}",
            entry_date=ctx.now.date(),
            currency=invoice.currency,
            description=f"Credit note {note.number} for invoice {invoice.number}",
            lines=[
                rules.Line(chart.REVENUE, debit_minor=subtotal_minor),
                rules.Line(chart.TAX_PAYABLE, debit_minor=tax_minor),
                rules.Line(chart.RECEIVABLE, credit_minor=applied_minor),
                rules.Line(chart.CUSTOMER_CREDIT, credit_minor=credit_minor),
            ],
            invoice_id=invoice.id,
            revenue_split=(invoice.subtotal_minor, invoice.tax_minor),
            credit_note_id=note.id,
            customer_id=invoice.customer_id,
        ),
    )
    events.record(ctx, "credit_note.created", CreditNoteOut.of(note))
    events.record(ctx, "invoice.updated", InvoiceOut.of(invoice))
    einvoices.issue_for_credit_note(ctx, note, invoice, entity)
    return note


def get(ctx: Ctx, note_id: str) -> CreditNote:
    note = ctx.session.execute(
        select(CreditNote).where(CreditNote.id == note_id, CreditNote.account_id == ctx.account_id)
    ).scalar_one_or_none()
    if note is None:
        raise NotFound("credit_note", note_id)
    return note


def list_notes(ctx: Ctx, page: Page, *, invoice_id: str | None) -> tuple[list[CreditNote], bool]:
    filters = [CreditNote.invoice_id == invoice_id] if invoice_id is not None else []
    return list_page(ctx, CreditNote, page, *filters, object_name="credit_note")
