from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt

from invoicetrail.accounts.models import LegalEntity
from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import (
    AddressIn,
    Body,
    CountryCode,
    Email,
    Name,
    ShortText,
    TaxIdIn,
)


class BankAccountIn(Body):
    iban: Annotated[str, Field(max_length=64)] | None = None
    bic: Annotated[str, Field(max_length=16)] | None = None


class EntityCfdiIn(Body):
    fiscal_regime: Annotated[str, Field(max_length=8)] | None = None
    expedition_postal_code: Annotated[str, Field(max_length=10)] | None = None


class EntityMyinvoisIn(Body):
    msic_code: Annotated[str, Field(pattern=r"^[0-9]{5}$")] | None = None
    business_activity: Annotated[str, Field(max_length=300)] | None = None
    phone: Annotated[str, Field(max_length=20)] | None = None


class EntityContactIn(Body):
    name: Annotated[str, Field(max_length=256)] | None = None
    email: Email | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None


class LegalEntityCreate(Body):
    name: Name
    country: CountryCode
    address: AddressIn | None = None
    tax_ids: Annotated[list[TaxIdIn], Field(max_length=10)] = []
    peppol_id: Annotated[str, Field(max_length=128)] | None = None
    registration_id: ShortText | None = None
    bank_account: BankAccountIn | None = None
    cfdi: EntityCfdiIn | None = None
    myinvois: EntityMyinvoisIn | None = None
    contact: EntityContactIn | None = None
    number_prefix: Annotated[str, Field(pattern=r"^[A-Z0-9]{1,10}$")] | None = None


class LegalEntityOut(BaseModel):
    id: str
    object: str = "legal_entity"
    name: str
    country: str
    address: dict[str, Any]
    tax_ids: list[dict[str, str]]
    peppol_id: str | None
    registration_id: str | None
    bank_account: dict[str, Any] | None
    cfdi: dict[str, Any] | None
    myinvois: dict[str, Any] | None
    contact: dict[str, Any] | None
    number_prefix: str
    is_default: bool
    created: str | None

    @classmethod
    def of(cls, entity: LegalEntity) -> LegalEntityOut:
        return cls(
            id=entity.id,
            name=entity.name,
            country=entity.country,
            address=entity.address,
            tax_ids=entity.tax_ids,
            peppol_id=entity.peppol_id,
            registration_id=entity.registration_id,
            bank_account=entity.bank_account,
            cfdi=entity.cfdi,
            myinvois=entity.myinvois,
            contact=entity.contact,
            number_prefix=entity.number_prefix,
            is_default=entity.is_default,
            created=iso_instant(entity.created_at),
        )


class ApiKeyRotate(Body):
    expire_previous_after_seconds: Annotated[StrictInt, Field(ge=0, le=7 * 86_400)] | None = None


class ApiKeyOut(BaseModel):
    id: str
    object: str = "api_key"
    secret_key: str
    created: str | None
    previous_key_expires_at: str | None


OwnerName = Annotated[str, Field(min_length=1, max_length=256)]


class DisputesOwnershipIn(Body):
    first_responder: OwnerName | None = None
    # Which record finance treats as authoritative for the ERP when a dispute is open.
    authoritative_record: Literal["provider", "invoicetrail", "erp"] | None = None


class OwnershipIn(Body):
    invoice_state: OwnerName | None = None
    payment_evidence: OwnerName | None = None
    journal_posting: OwnerName | None = None
    erp_export: OwnerName | None = None
    exception_queue: OwnerName | None = None
    disputes: DisputesOwnershipIn = DisputesOwnershipIn()
    compliance_markets: Annotated[dict[CountryCode, OwnerName], Field(max_length=300)] = {}


class OwnershipOut(BaseModel):
    object: str = "ownership"
    invoice_state: str | None
    payment_evidence: str | None
    journal_posting: str | None
    erp_export: str | None
    exception_queue: str | None
    disputes: dict[str, str | None]
    compliance_markets: dict[str, str]
    markets: list[str]
    unassigned: list[str]
    updated: str | None
    history: list[dict[str, Any]]


class LaunchGateUpdate(Body):
    status: Literal["pending", "passed", "failed", "not_applicable"]
    owner: OwnerName | None = None
    evidence_reference: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    note: Annotated[str, Field(max_length=5000)] | None = None


class LaunchGateOut(BaseModel):
    object: str = "launch_gate"
    name: str
    description: str | None
    required: bool
    status: str
    owner: str | None
    evidence_reference: str | None
    note: str | None
    updated: str | None
    history: list[dict[str, Any]]
