from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
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


class JournalEntry(Base):
    """Immutable once written; corrections are reversing entries with their own key."""

    __tablename__ = "journal_entries"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    business_key: Mapped[str] = mapped_column(String(255))
    entry_date: Mapped[date] = mapped_column(Date)
    period: Mapped[str] = mapped_column(String(7))
    currency: Mapped[str] = mapped_column(String(3))
    debit_total_minor: Mapped[int] = mapped_column(BigInteger)
    credit_total_minor: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(Text)
    invoice_id: Mapped[str | None] = mapped_column(String(40))
    payment_id: Mapped[str | None] = mapped_column(String(40))
    credit_note_id: Mapped[str | None] = mapped_column(String(40))
    customer_id: Mapped[str | None] = mapped_column(String(40))
    reverses: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    lines: Mapped[list[JournalLine]] = relationship(
        back_populates="entry", order_by="JournalLine.position"
    )

    __table_args__ = (
        UniqueConstraint("account_id", "business_key", name="uq_journal_entries_business_key"),
        CheckConstraint(
            "debit_total_minor = credit_total_minor AND debit_total_minor > 0",
            name="ck_journal_entries_balanced",
        ),
        Index("ix_journal_entries_account_seq", "account_id", "seq"),
        Index("ix_journal_entries_invoice", "account_id", "invoice_id"),
        Index("ix_journal_entries_payment", "account_id", "payment_id"),
        Index("ix_journal_entries_period", "account_id", "period"),
    )


class JournalLine(Base):
    __tablename__ = "journal_lines"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("journal_entries.id"), index=True)
    account_id: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer)
    ledger_account: Mapped[str] = mapped_column(String(128))
    debit_minor: Mapped[int] = mapped_column(BigInteger)
    credit_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))

    entry: Mapped[JournalEntry] = relationship(back_populates="lines")

    __table_args__ = (
        CheckConstraint(
            "debit_minor >= 0 AND credit_minor >= 0 AND (debit_minor = 0) <> (credit_minor = 0)",
            name="ck_journal_lines_one_side",
        ),
    )


class Period(Base):
    """Only closed (or reopened) months have a row; a month without one is open."""

    __tablename__ = "periods"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    history: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (CheckConstraint("status IN ('open', 'closed')", name="ck_periods_status"),)


class LedgerSettings(Base):
    """Per account: the posting policy and any renamed chart accounts (role → name)."""

    __tablename__ = "ledger_settings"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    posting_policy: Mapped[str] = mapped_column(String(16))
    account_names: Mapped[dict[str, str]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        CheckConstraint("posting_policy IN ('accrual', 'cash')", name="ck_ledger_settings_policy"),
    )
