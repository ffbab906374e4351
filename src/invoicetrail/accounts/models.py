from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from invoicetrail.core.db import Base, Json, SeqType, UtcDateTime


class Account(Base):
    __tablename__ = "accounts"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    country: Mapped[str] = mapped_column(String(2))
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKey(Base):
    """Only a SHA-256 of the secret is kept; `lookup` is the non-secret part of the key."""

    __tablename__ = "api_keys"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    lookup: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))


class LegalEntity(Base):
    __tablename__ = "legal_entities"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(256))
    country: Mapped[str] = mapped_column(String(2))
    address: Mapped[dict[str, Any]] = mapped_column(Json)
    tax_ids: Mapped[list[dict[str, str]]] = mapped_column(Json)
    peppol_id: Mapped[str | None] = mapped_column(String(128))
    registration_id: Mapped[str | None] = mapped_column(String(128))
    bank_account: Mapped[dict[str, Any] | None] = mapped_column(Json)
    cfdi: Mapped[dict[str, Any] | None] = mapped_column(Json)
    myinvois: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # {"name", "email", "phone"}: the seller's contact point printed on e-invoices.
    contact: Mapped[dict[str, Any] | None] = mapped_column(Json)
    number_prefix: Mapped[str] = mapped_column(String(16))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        Index("ix_legal_entities_account_seq", "account_id", "seq"),
        UniqueConstraint("account_id", "number_prefix", name="uq_legal_entities_prefix"),
    )


class Ownership(Base):
    """Who answers for each area of the chain; exception items route to these owners."""

    __tablename__ = "ownership"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    # {"invoice_state": owner | None, ..., "disputes": {...}, "compliance_markets": {...}}
    config: Mapped[dict[str, Any]] = mapped_column(Json)
    history: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))


class LaunchGate(Base):
    """A named go-live precondition (KYB, tax forms…): recorded here, performed elsewhere."""

    __tablename__ = "launch_gates"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(String(256))
    evidence_reference: Mapped[str | None] = mapped_column(String(1000))
    note: Mapped[str | None] = mapped_column(String(5000))
    history: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_launch_gates_name"),)
