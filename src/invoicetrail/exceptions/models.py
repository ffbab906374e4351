from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from invoicetrail.core.db import Base, Json, SeqType, UtcDateTime


class ExceptionItem(Base):
    """Something a person must look at; never deleted, only resolved."""

    __tablename__ = "exception_items"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(256))
    next_action: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    snoozed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    refs: Mapped[dict[str, Any]] = mapped_column(Json)
    invoice_id: Mapped[str | None] = mapped_column(String(40))
    # kind + refs, so a cause raised again finds its open item instead of adding one.
    dedupe_key: Mapped[str] = mapped_column(String(512))
    detail: Mapped[dict[str, Any]] = mapped_column(Json)
    history: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    # The reconciliation check that owns the item: a run that no longer finds it resolves it.
    check_name: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        Index("ix_exception_items_account_seq", "account_id", "seq"),
        Index("ix_exception_items_dedupe", "account_id", "dedupe_key", "status"),
        Index("ix_exception_items_status_kind", "account_id", "status", "kind"),
        Index("ix_exception_items_invoice", "account_id", "invoice_id"),
        Index("ix_exception_items_check", "account_id", "check_name", "status"),
    )
