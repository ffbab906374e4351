from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import Body, PositiveAmountMinor, Reference
from invoicetrail.payments.models import Payment, ProviderEndpoint, ProviderEvent

ManualMethod = Literal["card", "ach", "bank_transfer", "cash", "check", "other"]


class PayInvoice(Body):
    reference: Reference
    amount: PositiveAmountMinor | None = None
    method: ManualMethod = "other"
    external_reference: Reference | None = None


class ApplyPayment(Body):
    invoice: Annotated[str, Field(min_length=1)]


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


class SimulatedPaymentCreate(Body):
    invoice: Annotated[str, Field(min_length=1)]
    method: Literal["card", "ach", "bank_transfer"]
    outcome: Literal["succeeded", "failed"] = "succeeded"
    settle_after_seconds: Annotated[StrictInt, Field(ge=0, le=90 * 86_400)] | None = None
    amount: PositiveAmountMinor | None = None
    reference_code: Annotated[str, Field(max_length=64)] | None = None


class SimulatedPaymentOut(BaseModel):
    id: str
    object: str = "simulated_payment"
    invoice: str
    method: str
    outcome: str
    amount: int
    currency: str
    payment_reference: str
    provider_endpoint: str
    events: list[dict[str, str | None]]


class ProviderEndpointCreate(Body):
    provider: Literal["stripe", "standard_webhooks", "simulated"]
    secret: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    # Test-mode endpoints are always allowed; live collection waits for the KYB gate.
    livemode: bool = False


class ProviderEndpointRotate(Body):
    secret: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    expire_previous_after_seconds: Annotated[StrictInt, Field(ge=0, le=7 * 86_400)] = 86_400


class ProviderEndpointOut(BaseModel):
    id: str
    object: str = "provider_endpoint"
    provider: str
    url: str
    livemode: bool
    created: str | None
    secret: str | None = None
    previous_secret_expires_at: str | None = None

    @classmethod
    def of(cls, endpoint: ProviderEndpoint, **extra: str | None) -> ProviderEndpointOut:
        return cls(
            id=endpoint.id,
            provider=endpoint.provider,
            url=f"/v1/providers/{endpoint.provider}/webhooks/{endpoint.id}",
            livemode=endpoint.livemode,
            created=iso_instant(endpoint.created_at),
            **extra,
        )


class ProviderEventOut(BaseModel):
    id: str
    object: str = "provider_event"
    provider: str
    provider_endpoint: str
    provider_event_id: str | None
    type: str | None
    verification: str
    outcome: str
    outcome_detail: str | None
    invoice: str | None
    payment: str | None
    request_id: str
    received_at: str | None
    processed_at: str | None
    body_bytes: int
    body_sha256: str

    @classmethod
    def of(cls, event: ProviderEvent) -> ProviderEventOut:
        return cls(
            id=event.id,
            provider=event.provider,
            provider_endpoint=event.endpoint_id,
            provider_event_id=event.provider_event_id,
            type=event.event_type,
            verification=event.verification,
            outcome=event.outcome,
            outcome_detail=event.outcome_detail,
            invoice=event.invoice_id,
            payment=event.payment_id,
            request_id=event.request_id,
            received_at=iso_instant(event.received_at),
            processed_at=iso_instant(event.processed_at),
            body_bytes=event.body_bytes,
            body_sha256=hashlib.sha256(event.body).hexdigest(),
        )
