from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from invoicetrail.core.db import Base, Json, SeqType, UtcDateTime

FORMATS_SQL = "'csv', 'jsonl', 'netsuite', 'quickbooks', 'xero', 'hledger', 'beancount'"


class ExportBatch(Base):
    """`exp_…`: one file of one format for one period. Its rows never change once linked;
    the status counters follow the rows' ERP answers."""

    __tablename__ = "export_batches"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    format: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(7))
    row_count: Mapped[int] = mapped_column(BigInteger)
    exported_count: Mapped[int] = mapped_column(BigInteger)
    synced_count: Mapped[int] = mapped_column(BigInteger)
    failed_count: Mapped[int] = mapped_column(BigInteger)
    # Known before the first row is written (ledger files declare accounts up front):
    # [[ledger account, first date used], …] sorted by account; totals per currency.
    accounts: Mapped[list[list[str]]] = mapped_column(Json)
    totals: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        CheckConstraint(f"format IN ({FORMATS_SQL})", name="ck_export_batches_format"),
        CheckConstraint(
            "row_count >= 0 AND exported_count >= 0 AND synced_count >= 0 AND failed_count >= 0 "
            "AND row_count = exported_count + synced_count + failed_count",
            name="ck_export_batches_counts",
        ),
        Index("ix_export_batches_account_seq", "account_id", "seq"),
        Index("ix_export_batches_latest", "account_id", "format", "period", "seq"),
    )


class ExportRow(Base):
    """The ERP's answer for an export row `exr_…` (one journal line in one format).

    A row's life: "ready" (no batch of the format has taken its line), `exported` (a
    batch took it: a row of `export_batch_rows`, no answer yet), then `synced` or
    `failed`, recorded here on the first acknowledgement. Building a batch writes only
    membership, so a million-line export stays one narrow INSERT. The id is `exr_` + the
    line id's body + the format's letter, stable per (line, format)."""

    __tablename__ = "export_rows"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    format: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(7))
    journal_entry_id: Mapped[str] = mapped_column(ForeignKey("journal_entries.id"))
    journal_line_seq: Mapped[int] = mapped_column(BigInteger, ForeignKey("journal_lines.seq"))
    status: Mapped[str] = mapped_column(String(16))
    erp_record_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    acknowledged_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        UniqueConstraint("journal_line_seq", "format", name="uq_export_rows_line_format"),
        CheckConstraint(f"format IN ({FORMATS_SQL})", name="ck_export_rows_format"),
        CheckConstraint("status IN ('synced', 'failed')", name="ck_export_rows_status"),
        CheckConstraint(
            "(status <> 'synced' OR erp_record_id IS NOT NULL) "
            "AND (status <> 'failed' OR error IS NOT NULL)",
            name="ck_export_rows_answer",
        ),
        Index("ix_export_rows_answered", "account_id", "format", "period", "status"),
        Index("ix_export_rows_entry", "journal_entry_id"),
    )


class ExportBatchRow(Base):
    """Batch membership by journal line (the batch's format names the row); a row that
    failed, or was never answered, is taken again by the next batch of its format. No
    foreign keys and no second index: a million-line batch is one ordered INSERT."""

    __tablename__ = "export_batch_rows"

    batch_seq: Mapped[int] = mapped_column(SeqType, primary_key=True)
    journal_line_seq: Mapped[int] = mapped_column(SeqType, primary_key=True)
