from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
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
