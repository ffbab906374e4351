from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from invoicetrail.core.db import Base, Json, SeqType, UtcDateTime


class ReconciliationRun(Base):
    """One three-way match of invoices, payment evidence and the journal, as of a date."""

    __tablename__ = "reconciliation_runs"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    as_of: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    checks_total: Mapped[int] = mapped_column(Integer)
    checks_done: Mapped[int] = mapped_column(Integer)
    invoices_checked: Mapped[int] = mapped_column(BigInteger)
    counts: Mapped[dict[str, int]] = mapped_column(Json)
    items_created: Mapped[int] = mapped_column(Integer)
    items_updated: Mapped[int] = mapped_column(Integer)
    items_resolved: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        Index("ix_reconciliation_runs_account_seq", "account_id", "seq"),
        Index("ix_reconciliation_runs_account_as_of", "account_id", "as_of"),
    )


class ReconciliationFinding(Base):
    """What one run found: the exception item it raised or kept open, per cause."""

    __tablename__ = "reconciliation_findings"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("reconciliation_runs.id"))
    kind: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[str] = mapped_column(String(40))
    invoice_id: Mapped[str | None] = mapped_column(String(40))
    refs: Mapped[dict[str, Any]] = mapped_column(Json)

    __table_args__ = (Index("ix_reconciliation_findings_run", "run_id", "seq"),)
