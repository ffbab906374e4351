from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from invoicetrail.core.db import Base, Json, SeqType, UtcDateTime

EINVOICE_STATUSES = (
    "awaiting_approval",
    "pending",
    "submitted",
    "accepted",
    "rejected",
    "cancelled",
)


class EInvoice(Base):
    """One regime document of an invoice, credit note or payment, and its submission.

    The document is generated once and never changes: a correction is a new row that
    supersedes this one, so `document` is always exactly what was (or will be) submitted.
    """

    __tablename__ = "einvoices"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    legal_entity_id: Mapped[str] = mapped_column(ForeignKey("legal_entities.id"))
    regime: Mapped[str] = mapped_column(String(16))
    # The seller's country: the market whose queue and owner this document belongs to.
    market: Mapped[str] = mapped_column(String(2))
    document_type: Mapped[str] = mapped_column(String(16))
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"))
    credit_note_id: Mapped[str | None] = mapped_column(ForeignKey("credit_notes.id"))
    payment_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(24))
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    facts: Mapped[dict[str, Any]] = mapped_column(Json)
    document: Mapped[bytes] = mapped_column(LargeBinary)
    media_type: Mapped[str] = mapped_column(String(64))
    document_sha256: Mapped[str] = mapped_column(String(64))
    # Validation with the official artifacts: every finding, warnings included.
    findings: Mapped[list[dict[str, Any]] | None] = mapped_column(Json)
    validated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # {"class": "retryable" | "needs_correction", "stage", "message", "rules": [...]}
    failure: Mapped[dict[str, Any] | None] = mapped_column(Json)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    external_id: Mapped[str | None] = mapped_column(String(128))
    external_detail: Mapped[dict[str, Any] | None] = mapped_column(Json)
    submitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # MyInvois: the authority lets the issuer cancel until 72 h after validation.
    cancellation_deadline_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    supersedes_id: Mapped[str | None] = mapped_column(String(40))
    superseded_by_id: Mapped[str | None] = mapped_column(String(40))
    correction_requested_by: Mapped[str | None] = mapped_column(String(80))
    approved_by: Mapped[str | None] = mapped_column(String(80))
    history: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        CheckConstraint(
            "status IN ('awaiting_approval', 'pending', 'submitted', 'accepted', 'rejected', "
            "'cancelled')",
            name="ck_einvoices_status",
        ),
        CheckConstraint(
            "document_type IN ('invoice', 'credit_note', 'payment')",
            name="ck_einvoices_document_type",
        ),
        Index("ix_einvoices_account_seq", "account_id", "seq"),
        Index("ix_einvoices_invoice", "invoice_id"),
        Index("ix_einvoices_due", "regime", "status", "next_attempt_at"),
    )


class EInvoiceCertificate(Base):
    """A legal entity's signing certificate for a regime (CFDI: the CSD).

    Until the issuer uploads its own, a generated test certificate signs, so every CFDI is
    XSD-valid; documents signed with it are marked `test` and never reach a real PAC.
    """

    __tablename__ = "einvoice_certificates"

    legal_entity_id: Mapped[str] = mapped_column(ForeignKey("legal_entities.id"), primary_key=True)
    regime: Mapped[str] = mapped_column(String(16), primary_key=True)
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    private_key_pem: Mapped[bytes] = mapped_column(LargeBinary)
    number: Mapped[str] = mapped_column(String(32))
    test: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
