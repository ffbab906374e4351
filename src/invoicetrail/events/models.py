from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from invoicetrail.core.db import Base, SeqType, UtcDateTime


class Event(Base):
    """The outbox: written in the transaction of the change it reports."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(40))
    data_json: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Set once the delivery worker has queued the event for every subscribed endpoint.
    fanned_out_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_events_account_seq", "account_id", "seq"),
        Index(
            "ix_events_to_fan_out",
            "seq",
            postgresql_where=text("fanned_out_at IS NULL"),
            sqlite_where=text("fanned_out_at IS NULL"),
        ),
        Index("ix_events_account_object", "account_id", "object_id"),
        Index("ix_events_created_at", "created_at"),
    )
