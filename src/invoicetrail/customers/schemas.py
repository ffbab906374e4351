from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import (
    AddressIn,
    Body,
    Email,
    Metadata,
    Name,
    Reference,
    TaxIdIn,
)
from invoicetrail.customers.models import Customer


class CustomerCfdiIn(Body):
    fiscal_regime: Annotated[str, Field(max_length=8)] | None = None
    cfdi_use: Annotated[str, Field(max_length=8)] | None = None


class CustomerMyinvoisIn(Body):
    phone: Annotated[str, Field(max_length=20)] | None = None


class CustomerCreate(Body):
    name: Name | None = None
    email: Email | None = None
    address: AddressIn | None = None
    tax_ids: Annotated[list[TaxIdIn], Field(max_length=10)] = []
    peppol_id: Annotated[str, Field(max_length=128)] | None = None
    cfdi: CustomerCfdiIn | None = None
    myinvois: CustomerMyinvoisIn | None = None
    external_reference: Reference | None = None
    metadata: Metadata = {}


class CustomerUpdate(Body):
    name: Name | None = None
    email: Email | None = None
    address: AddressIn | None = None
    tax_ids: Annotated[list[TaxIdIn], Field(max_length=10)] | None = None
    peppol_id: Annotated[str, Field(max_length=128)] | None = None
    cfdi: CustomerCfdiIn | None = None
    myinvois: CustomerMyinvoisIn | None = None
    external_reference: Reference | None = None
    metadata: Metadata | None = None


class CustomerOut(BaseModel):
    id: str
    object: str = "customer"
    name: str | None
    email: str | None
    address: dict[str, Any] | None
    tax_ids: list[dict[str, str]]
    peppol_id: str | None
    cfdi: dict[str, Any] | None
    myinvois: dict[str, Any] | None
    external_reference: str | None
    metadata: dict[str, str]
    credit_balance: dict[str, int]
    created: str | None

    @classmethod
    def of(cls, customer: Customer, credit_balance: dict[str, int]) -> CustomerOut:
        return cls(
            id=customer.id,
            name=customer.name,
            email=customer.email,
            address=customer.address,
            tax_ids=customer.tax_ids,
            peppol_id=customer.peppol_id,
            cfdi=customer.cfdi,
            myinvois=customer.myinvois,
            external_reference=customer.external_reference,
            metadata=customer.metadata_,
            credit_balance=credit_balance,
            created=iso_instant(customer.created_at),
        )
