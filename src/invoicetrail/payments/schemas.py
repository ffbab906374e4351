from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import Body, PositiveAmountMinor, Reference
from invoicetrail.payments.models import Payment

ManualMethod = Literal["card", "ach", "bank_transfer", "cash", "check", "other"]


class PayInvoice(Body):
    reference: Reference
    amount: PositiveAmountMinor | None = None
    method: ManualMethod = "other"
    external_reference: Reference | None = None


class PaymentOut(BaseModel):
    id: str
    object: str = "payment"
    invoice: str | None
    customer: str | None
    reference: str
    provider: str
    method: str
    amount: int
    currency: str
    status: str
    provider_event_ids: list[str]
    external_reference: str | None
    created: str | None
    updated: str | None

    @classmethod
    def of(cls, payment: Payment) -> PaymentOut:
        return cls(
            id=payment.id,
            invoice=payment.invoice_id,
            customer=payment.customer_id,
            reference=payment.reference,
            provider=payment.provider,
            method=payment.method,
            amount=payment.amount_minor,
            currency=payment.currency,
            status=payment.status,
            provider_event_ids=list(payment.provider_event_ids),
            external_reference=payment.external_reference,
            created=iso_instant(payment.created_at),
            updated=iso_instant(payment.updated_at),
        )
