from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import (
    AmountMinor,
    Body,
    CalendarDate,
    CurrencyCode,
    Description,
    Metadata,
    Reference,
)
from invoicetrail.invoices.models import Invoice, InvoiceLine

INVOICE_LINES_MAX = 1000
TAX_CATEGORIES = ("S", "Z", "E", "AE", "K", "G", "O", "L", "M")


def _tax_rate(value: str) -> str:
    if Decimal(value) > 100:
        raise ValueError("must be a percentage between 0 and 100")
    return value


# Plain decimal strings only: no exponent, sign, NaN or Infinity.
Quantity = Annotated[str, Field(pattern=r"^[0-9]{1,15}(\.[0-9]{1,12})?$")]
TaxRate = Annotated[str, Field(pattern=r"^[0-9]{1,3}(\.[0-9]{1,6})?$"), AfterValidator(_tax_rate)]
CollectionMethod = Literal["charge_automatically", "send_invoice"]


class LineIn(Body):
    description: Annotated[Description, Field(min_length=1)]
    quantity: Quantity
    unit_amount: AmountMinor
    tax_rate: TaxRate = "0"
    tax_category: Literal["S", "Z", "E", "AE", "K", "G", "O", "L", "M"] | None = None
    tax_exemption_reason: Annotated[str, Field(max_length=1000)] | None = None
    cfdi_product_code: Annotated[str, Field(pattern=r"^[0-9]{8}$")] | None = None
    cfdi_unit_code: Annotated[str, Field(pattern=r"^[A-Z0-9]{1,3}$")] | None = None


Lines = Annotated[list[LineIn], Field(min_length=1, max_length=INVOICE_LINES_MAX)]


class InvoiceCreate(Body):
    # Ids have no length limit here: a malformed id is answered 404 like an unknown one (SPEC).
    customer: Annotated[str, Field(min_length=1)]
    currency: CurrencyCode
    lines: Lines
    collection_method: CollectionMethod = "charge_automatically"
    due_date: CalendarDate | None = None
    external_reference: Reference | None = None
    metadata: Metadata = {}
    legal_entity: Annotated[str, Field(min_length=1)] | None = None
    buyer_reference: Reference | None = None
    purchase_order: Reference | None = None


class InvoiceUpdate(Body):
    customer: Annotated[str, Field(min_length=1)] | None = None
    currency: CurrencyCode | None = None
    lines: Lines | None = None
    collection_method: CollectionMethod | None = None
    due_date: CalendarDate | None = None
    external_reference: Reference | None = None
    metadata: Metadata | None = None
    legal_entity: Annotated[str, Field(min_length=1)] | None = None
    buyer_reference: Reference | None = None
    purchase_order: Reference | None = None


class LineOut(BaseModel):
    id: str
    object: str = "line_item"
    description: str
    quantity: str
    unit_amount: int
    tax_rate: str
    tax_category: str | None
    tax_exemption_reason: str | None
    amount: int
    tax: int

    @classmethod
    def of(cls, line: InvoiceLine) -> LineOut:
        return cls(
            id=line.id,
            description=line.description,
            quantity=line.quantity,
            unit_amount=line.unit_amount_minor,
            tax_rate=line.tax_rate,
            tax_category=line.tax_category,
            tax_exemption_reason=line.tax_exemption_reason,
            amount=line.amount_minor,
            tax=line.tax_minor,
        )


class InvoiceOut(BaseModel):
    id: str
    object: str = "invoice"
    status: str
    number: str | None
    customer: str
    legal_entity: str
    currency: str
    lines: list[LineOut]
    subtotal: int
    tax: int
    total: int
    amount_paid: int
    amount_remaining: int
    amount_credited: int
    external_reference: str | None
    collection_method: str
    bank_transfer_reference: str | None
    due_date: str | None
    buyer_reference: str | None
    purchase_order: str | None
    created: str | None
    finalized_at: str | None
    delivered_at: str | None
    paid_at: str | None
    voided_at: str | None
    marked_uncollectible_at: str | None
    metadata: dict[str, str]

    @classmethod
    def of(cls, invoice: Invoice) -> InvoiceOut:
        return cls(
            id=invoice.id,
            status=invoice.status,
            number=invoice.number,
            customer=invoice.customer_id,
            legal_entity=invoice.legal_entity_id,
            currency=invoice.currency,
            lines=[LineOut.of(line) for line in invoice.lines],
            subtotal=invoice.subtotal_minor,
            tax=invoice.tax_minor,
            total=invoice.total_minor,
            amount_paid=invoice.amount_paid_minor,
            amount_remaining=invoice.amount_remaining_minor,
            amount_credited=invoice.amount_credited_minor,
            external_reference=invoice.external_reference,
            collection_method=invoice.collection_method,
            bank_transfer_reference=invoice.bank_transfer_reference,
            due_date=invoice.due_date.isoformat() if invoice.due_date else None,
            buyer_reference=invoice.buyer_reference,
            purchase_order=invoice.purchase_order,
            created=iso_instant(invoice.created_at),
            finalized_at=iso_instant(invoice.finalized_at),
            delivered_at=iso_instant(invoice.delivered_at),
            paid_at=iso_instant(invoice.paid_at),
            voided_at=iso_instant(invoice.voided_at),
            marked_uncollectible_at=iso_instant(invoice.marked_uncollectible_at),
            metadata=invoice.metadata_,
        )
