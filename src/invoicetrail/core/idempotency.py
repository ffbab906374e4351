"""Idempotency keys and the request log: stored in the same transaction as the write."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from invoicetrail.core.db import Base, SeqType, UtcDateTime


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(2000))
    request_id: Mapped[str] = mapped_column(String(40))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)

    __table_args__ = (
        ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_idempotency_account"),
    )


class RequestLog(Base):
    """One row per committed API write: the first link of every trace."""

    __tablename__ = "request_log"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[str] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(2000))
    status_code: Mapped[int] = mapped_column(Integer)
    object_id: Mapped[str | None] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_request_log_account_object", "account_id", "object_id"),
        ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_request_log_account"),
    )


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Equal JSON bodies fingerprint equal whatever their key order or spacing."""
    canonical = body
    if body.strip():
        try:
            canonical = json.dumps(
                json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            canonical = body
    digest = hashlib.sha256()
    digest.update(method.upper().encode())
    digest.update(b"\n")
    digest.update(path.encode())
    digest.update(b"\n")
    digest.update(canonical)
    return digest.hexdigest()


def advisory_lock_key(account_id: str, key: str) -> int:
    raw = hashlib.sha256(f"{account_id}\x00{key}".encode()).digest()[:8]
    return int.from_bytes(raw, "big", signed=True)


def try_claim_postgres(session: Session, account_id: str, key: str) -> bool:
    """Held until commit/rollback; a second in-flight request with the key gets False at once."""
    locked = session.execute(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": advisory_lock_key(account_id, key)}
    ).scalar_one()
    return bool(locked)


def find(session: Session, account_id: str, key: str, now: datetime) -> IdempotencyKey | None:
    row = session.get(IdempotencyKey, (account_id, key))
    if row is not None and row.expires_at <= now:
        session.delete(row)
        session.flush()
        return None
    return row


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: bytes


def store(
    session: Session,
    *,
    account_id: str,
    key: str,
    fingerprint_hex: str,
    method: str,
    path: str,
    request_id: str,
    response: StoredResponse,
    now: datetime,
    retention: timedelta,
) -> None:
    session.add(
        IdempotencyKey(
            account_id=account_id,
            key=key,
            fingerprint=fingerprint_hex,
            method=method,
            path=path,
            request_id=request_id,
            status_code=response.status_code,
            response_body=response.body,
            created_at=now,
            expires_at=now + retention,
        )
    )


def log_request(
    session: Session,
    *,
    request_id: str,
    account_id: str,
    idempotency_key: str | None,
    method: str,
    path: str,
    status_code: int,
    object_id: str | None,
    actor: str,
    now: datetime,
) -> None:
    session.add(
        RequestLog(
            request_id=request_id,
            account_id=account_id,
            idempotency_key=idempotency_key,
            method=method,
            path=path,
            status_code=status_code,
            object_id=object_id,
            actor=actor,
            created_at=now,
        )
    )


def prune_expired(session: Session, now: datetime) -> int:
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def count_keys(session: Session, account_id: str) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(IdempotencyKey)
            .where(IdempotencyKey.account_id == account_id)
        ).scalar_one()
    )
