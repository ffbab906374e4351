from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from invoicetrail.core.db import Base, Json, SeqType, UtcDateTime


class Payment(Base):
    """Money evidence, identified by its reference within the invoice."""

    __tablename__ = "payments"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    invoice_id: Mapped[str | None] = mapped_column(ForeignKey("invoices.id"))
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"))
    reference: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(32))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    provider_event_ids: Mapped[list[str]] = mapped_column(Json)
    # Set once, when the money is counted (applied to the invoice, credited or parked).
    received_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    external_reference: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        UniqueConstraint(
            "account_id", "invoice_id", "reference", name="uq_payments_invoice_reference"
        ),
        UniqueConstraint("account_id", "external_reference", name="uq_payments_external_reference"),
        CheckConstraint("amount_minor > 0", name="ck_payments_amount_positive"),
        CheckConstraint(
            "status IN ('pending', 'processing', 'succeeded', 'failed', 'refunded', 'disputed')",
            name="ck_payments_status",
        ),
        Index("ix_payments_account_seq", "account_id", "seq"),
        Index("ix_payments_invoice", "invoice_id"),
    )


class ProviderEndpoint(Base):
    __tablename__ = "provider_endpoints"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    provider: Mapped[str] = mapped_column(String(32))
    # Live collection moves real money: only after the account's KYB gate has passed.
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (Index("ix_provider_endpoints_account_seq", "account_id", "seq"),)


class ProviderEndpointSecret(Base):
    """HMAC keys must be kept as given to verify; they are never returned after creation."""

    __tablename__ = "provider_endpoint_secrets"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("provider_endpoints.id"), index=True)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ProviderEvent(Base):
    """The raw inbox: bytes and headers committed before anything is verified or applied."""

    __tablename__ = "provider_events"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str | None] = mapped_column(String(40), index=True)
    endpoint_id: Mapped[str] = mapped_column(String(300))
    provider: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    headers: Mapped[dict[str, str]] = mapped_column(Json)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    body_bytes: Mapped[int] = mapped_column(BigInteger)
    body_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    verification: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str | None] = mapped_column(String(255))
    event_type: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32))
    outcome_detail: Mapped[str | None] = mapped_column(Text)
    invoice_id: Mapped[str | None] = mapped_column(String(40))
    payment_id: Mapped[str | None] = mapped_column(String(40))
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_provider_events_account_seq", "account_id", "seq"),
        Index("ix_provider_events_invoice", "account_id", "invoice_id"),
        Index("ix_provider_events_payment", "account_id", "payment_id"),
    )


class ProviderEventKey(Base):
    """Dedupe of verified events only: a forged copy never claims a real event's id."""

    __tablename__ = "provider_event_keys"

    endpoint_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider_event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider_event: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SimulatedEvent(Base):
    """Events the simulated provider will sign and send in-process when due (worker)."""

    __tablename__ = "simulated_events"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("provider_endpoints.id"))
    simulation_id: Mapped[str] = mapped_column(String(40), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    provider_event: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (Index("ix_simulated_events_due", "delivered_at", "due_at"),)
