"""Engine, session and column types shared by every domain; one code path for SQLite and PG."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Engine, Integer, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import JSON, TypeDecorator

from invoicetrail.core.config import Settings

# BIGINT autoincrement on PostgreSQL, the rowid alias on SQLite (which only autoincrements INTEGER).
SeqType = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON()


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware UTC datetimes, whatever the backend hands back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


# SQLite: a write transaction takes the write lock up front (BEGIN IMMEDIATE) so two writers
# queue on the busy timeout instead of failing on lock upgrade.
_sqlite_write: contextvars.ContextVar[bool] = contextvars.ContextVar("sqlite_write", default=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def normalize_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def ensure_sqlite_directory(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(os.path.dirname(os.path.abspath(parsed.database)) or ".").mkdir(
            parents=True, exist_ok=True
        )


# Bound values hold secrets (webhook signing secrets, idempotent replays of new keys): never
# in SQL logs or in the text of a database error that gets logged.
HIDE_SQL_PARAMETERS = True


def make_engine(settings: Settings) -> Engine:
    url = normalize_url(settings.database_url)
    if is_sqlite(url):
        ensure_sqlite_directory(url)
        engine = create_engine(
            url,
            connect_args={
                "timeout": settings.sqlite_busy_timeout_seconds,
                "check_same_thread": False,
            },
            pool_size=settings.db_pool_size,
            max_overflow=0,
            pool_timeout=settings.db_pool_timeout_seconds,
            hide_parameters=HIDE_SQL_PARAMETERS,
        )
        busy_ms = int(settings.sqlite_busy_timeout_seconds * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if _sqlite_write.get() else "BEGIN")

        return engine
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout_seconds,
        hide_parameters=HIDE_SQL_PARAMETERS,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_seconds,
            # An established connection whose peer vanished (host down, network partition)
            # fails within ~30 s instead of blocking its request forever: keepalive probes
            # on an idle wait, and a bound on data the server never acknowledges.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        },
    )


def bound_statements(session: Session, seconds: float) -> None:
    """PostgreSQL: for the rest of this transaction a statement that runs, or waits for a
    lock, longer than `seconds` is cancelled; the transaction rolls back and the request
    answers 503 storage_unavailable (retryable). 0 means no bound; SQLite has none."""
    if seconds > 0 and session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL statement_timeout = {max(1, round(seconds * 1000))}"))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextmanager
def write_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction, on SQLite, holds the write lock from its first statement.

    The caller commits; anything raised rolls back.
    """
    token = _sqlite_write.set(True)
    session = factory()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
        _sqlite_write.reset(token)


@contextmanager
def read_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()
