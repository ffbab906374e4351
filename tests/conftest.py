"""Shared fixtures: a real SQLite file and a real PostgreSQL database, migrated by Alembic,
and the real ASGI app in front of them."""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text

from invoicetrail.accounts import service as accounts
from invoicetrail.api import create_app
from invoicetrail.core.clock import SystemClock
from invoicetrail.core.config import Settings
from invoicetrail.core.db import make_engine, write_transaction
from invoicetrail.core.http import AppState
from invoicetrail.core.migrate import upgrade

warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
from starlette.testclient import TestClient  # noqa: E402

PG_ADMIN_DSN = os.environ.get(
    "INVOICETRAIL_TEST_POSTGRES_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
PG_TEST_DB = os.environ.get("INVOICETRAIL_TEST_POSTGRES_DB", "invoicetrail_test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the files under tests/golden/ from the current output (review the diff)",
    )


def _pg_url(database: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    user = info.get("user", "postgres")
    host = info.get("host", "127.0.0.1")
    port = info.get("port", "5432")
    return f"postgresql+psycopg://{user}@{host}:{port}/{database}"


def prepare_postgres_database(database: str) -> str:
    """Creates (or empties) a database and migrates it; skips only outside CI."""
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if exists is None:
                admin.execute(f'CREATE DATABASE "{database}"')
    except psycopg.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable (CI not set): {exc}")
    url = _pg_url(database)
    engine = make_engine(Settings(database_url=url))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(Settings(database_url=url))
    return url


def prepare_sqlite_database(directory: Path) -> str:
    url = f"sqlite:///{directory / 'invoicetrail.db'}"
    upgrade(Settings(database_url=url))
    return url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "rate_limit_per_second": 0,
        # Without SMTP, sent invoices become .eml files: never in the working tree.
        "mail_dir": str(Path(tempfile.gettempdir()) / "invoicetrail-test-mail"),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return prepare_sqlite_database(tmp_path_factory.mktemp("sqlite"))
    return prepare_postgres_database(PG_TEST_DB)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """PostgreSQL only (real concurrency); shares the database with the parametrised runs."""
    return prepare_postgres_database(PG_TEST_DB + "_conc")


@pytest.fixture(scope="session")
def client(db_url: str) -> Iterator[TestClient]:
    app = create_app(make_settings(db_url))
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


@dataclass
class Api:
    """An account's view of the API: real key, fresh Idempotency-Key per write by default."""

    client: TestClient
    account_id: str
    secret_key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return self.client.post(
            path,
            json=body,
            headers={**self.auth, "Idempotency-Key": key or uuid.uuid4().hex, **(headers or {})},
        )

    def patch(self, path: str, body: Any, *, key: str | None = None) -> httpx.Response:
        return self.client.patch(
            path, json=body, headers={**self.auth, "Idempotency-Key": key or uuid.uuid4().hex}
        )

    def get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.get(path, params=params, headers=self.auth)

    def ok(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    # --- small builders used across tests ---

    def customer(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Buyer Ltd", "address": {"country": "DE"}, **fields}
        return self.ok(self.post("/v1/customers", body))

    def draft(self, customer_id: str | None = None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "customer": customer_id or self.customer()["id"],
            "currency": "eur",
            "lines": [
                {"description": "Widget", "quantity": "2", "unit_amount": 1050, "tax_rate": "19"},
                {"description": "Service", "quantity": "1.5", "unit_amount": 2000, "tax_rate": "7"},
            ],
            **fields,
        }
        return self.ok(self.post("/v1/invoices", body))

    def open_invoice(self, **fields: Any) -> dict[str, Any]:
        draft = self.draft(**fields)
        return self.ok(self.post(f"/v1/invoices/{draft['id']}/finalize"))


def create_account(state: AppState, *, country: str | None = None) -> tuple[str, str]:
    with write_transaction(state.sessions) as session:
        created = accounts.create_account(
            session, name="Test account", country=country, now=SystemClock().now()
        )
        session.commit()
        return created.account.id, created.secret_key


@pytest.fixture
def api(client: TestClient) -> Api:
    account_id, secret_key = create_account(client.app.state.invoicetrail)  # type: ignore[attr-defined]
    return Api(client=client, account_id=account_id, secret_key=secret_key)


@pytest.fixture
def other_api(client: TestClient) -> Api:
    account_id, secret_key = create_account(client.app.state.invoicetrail)  # type: ignore[attr-defined]
    return Api(client=client, account_id=account_id, secret_key=secret_key)


ACCOUNT_TABLES = (
    "customers",
    "invoices",
    "payments",
    "events",
    "idempotency_keys",
    "request_log",
    "legal_entities",
    "customer_credits",
    "api_keys",
)


def row_counts(api: Api) -> dict[str, int]:
    """Rows an account owns, per table, plus lines and number sequences reached through it."""
    state: AppState = api.client.app.state.invoicetrail  # type: ignore[attr-defined]
    counts: dict[str, int] = {}
    with state.engine.connect() as connection:
        for table in ACCOUNT_TABLES:
            counts[table] = connection.execute(
                text(f"SELECT COUNT(*) FROM {table} WHERE account_id = :a"), {"a": api.account_id}
            ).scalar_one()
        counts["invoice_lines"] = connection.execute(
            text(
                "SELECT COUNT(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
                "WHERE i.account_id = :a"
            ),
            {"a": api.account_id},
        ).scalar_one()
        counts["number_sequences"] = connection.execute(
            text(
                "SELECT COALESCE(SUM(s.last_value), 0) FROM number_sequences s "
                "JOIN legal_entities e ON e.id = s.legal_entity_id WHERE e.account_id = :a"
            ),
            {"a": api.account_id},
        ).scalar_one()
    return counts
