from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from invoicetrail.core.db import Base, Json, SeqType, UtcDateTime


class Customer(Base):
    __tablename__ = "customers"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str | None] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(512))
    address: Mapped[dict[str, Any] | None] = mapped_column(Json)
    tax_ids: Mapped[list[dict[str, str]]] = mapped_column(Json)
    peppol_id: Mapped[str | None] = mapped_column(String(128))
    cfdi: Mapped[dict[str, Any] | None] = mapped_column(Json)
    myinvois: Mapped[dict[str, Any] | None] = mapped_column(Json)
    external_reference: Mapped[str | None] = mapped_column(String(255))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        UniqueConstraint(
            "account_id", "external_reference", name="uq_customers_external_reference"
        ),
        Index("ix_customers_account_seq", "account_id", "seq"),
    )


class CustomerCredit(Base):
    """Money owed back to a customer (overpayments), per currency; never negative."""

    __tablename__ = "customer_credits"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (CheckConstraint("amount_minor >= 0", name="ck_customer_credits_nonnegative"),)
