from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from invoicetrail.core.db import Base, Json, SeqType, UtcDateTime

INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")


class Invoice(Base):
    __tablename__ = "invoices"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    legal_entity_id: Mapped[str] = mapped_column(ForeignKey("legal_entities.id"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    status: Mapped[str] = mapped_column(String(16))
    number: Mapped[str | None] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    collection_method: Mapped[str] = mapped_column(String(32))
    due_date: Mapped[date | None] = mapped_column(Date)
    external_reference: Mapped[str | None] = mapped_column(String(255))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", Json)
    buyer_reference: Mapped[str | None] = mapped_column(String(255))
    purchase_order: Mapped[str | None] = mapped_column(String(255))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    amount_paid_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # The part of credit notes that reduced what the customer owes on this invoice.
    amount_credited_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bank_transfer_reference: Mapped[str | None] = mapped_column(String(32))
    # Seller and buyer as they were at finalize: an issued invoice never changes its parties.
    parties: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finalized_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    voided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    marked_uncollectible_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    @property
    def amount_remaining_minor(self) -> int:
        return self.total_minor - self.amount_paid_minor - self.amount_credited_minor

    lines: Mapped[list[InvoiceLine]] = relationship(
        back_populates="invoice", order_by="InvoiceLine.position", cascade="all, delete-orphan"
    )

    __table_args__ = (
        UniqueConstraint("account_id", "external_reference", name="uq_invoices_external_reference"),
        UniqueConstraint("legal_entity_id", "number", name="uq_invoices_entity_number"),
        UniqueConstraint(
            "account_id", "bank_transfer_reference", name="uq_invoices_bank_transfer_reference"
        ),
        CheckConstraint(
            "status IN ('draft', 'open', 'paid', 'void', 'uncollectible')",
            name="ck_invoices_status",
        ),
        CheckConstraint(
            "amount_paid_minor >= 0 AND (status = 'draft' OR amount_paid_minor <= total_minor)",
            name="ck_invoices_amount_paid_within_total",
        ),
        CheckConstraint("total_minor = subtotal_minor + tax_minor", name="ck_invoices_total"),
        CheckConstraint(
            "amount_credited_minor >= 0 AND (status = 'draft' OR "
            "amount_paid_minor + amount_credited_minor <= total_minor)",
            name="ck_invoices_credited_within_total",
        ),
        CheckConstraint(
            "(status = 'draft') = (number IS NULL)", name="ck_invoices_number_iff_finalized"
        ),
        Index("ix_invoices_account_seq", "account_id", "seq"),
        Index("ix_invoices_account_status", "account_id", "status"),
        Index("ix_invoices_customer", "customer_id"),
    )


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    quantity: Mapped[str] = mapped_column(String(40))
    unit_amount_minor: Mapped[int] = mapped_column(BigInteger)
    tax_rate: Mapped[str] = mapped_column(String(16))
    tax_category: Mapped[str | None] = mapped_column(String(4))
    tax_exemption_reason: Mapped[str | None] = mapped_column(String(1000))
    cfdi_product_code: Mapped[str | None] = mapped_column(String(16))
    cfdi_unit_code: Mapped[str | None] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)

    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class NumberSequence(Base):
    """One counter per (legal entity, document kind); locked FOR UPDATE, so gapless."""

    __tablename__ = "number_sequences"

    legal_entity_id: Mapped[str] = mapped_column(ForeignKey("legal_entities.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    last_value: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (CheckConstraint("last_value >= 0", name="ck_number_sequences_nonnegative"),)


class CreditNote(Base):
    __tablename__ = "credit_notes"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    legal_entity_id: Mapped[str] = mapped_column(ForeignKey("legal_entities.id"))
    number: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    lines: Mapped[list[dict[str, object]]] = mapped_column(Json)
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    # Of the total: what reduced the invoice's remaining amount, and what became credit.
    applied_to_invoice_minor: Mapped[int] = mapped_column(BigInteger)
    customer_credit_minor: Mapped[int] = mapped_column(BigInteger)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        UniqueConstraint("legal_entity_id", "number", name="uq_credit_notes_entity_number"),
        CheckConstraint("total_minor > 0", name="ck_credit_notes_positive"),
        CheckConstraint(
            "applied_to_invoice_minor + customer_credit_minor = total_minor",
            name="ck_credit_notes_split",
        ),
        Index("ix_credit_notes_account_seq", "account_id", "seq"),
    )


class InvoiceEmail(Base):
    """One e-mail to send (the invoice on `send`, or a reminder); the worker sends it once."""

    __tablename__ = "invoice_emails"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"))
    # `invoice`, or `reminder:<offset days>`: one e-mail per invoice and purpose.
    purpose: Mapped[str] = mapped_column(String(32))
    to_address: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    message_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        UniqueConstraint("invoice_id", "purpose", name="uq_invoice_emails_purpose"),
        CheckConstraint(
            "status IN ('pending', 'sent', 'failed', 'cancelled')", name="ck_invoice_emails_status"
        ),
        Index("ix_invoice_emails_due", "status", "next_attempt_at"),
    )


class DunningSettings(Base):
    """Per-account reminder schedule, in days relative to the due date (-3 = 3 days before)."""

    __tablename__ = "dunning_settings"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    reminder_offsets_days: Mapped[list[int]] = mapped_column(Json)
    mark_uncollectible_after_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))
