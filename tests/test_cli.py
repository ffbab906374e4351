"""The command line as SPEC fixes it, run as real processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest import Api, make_settings, prepare_postgres_database
from invoicetrail.api import create_app

KEY = re.compile(r"^sk_[A-Za-z0-9_]{24,}$")


def run_cli(
    database_url: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICETRAIL_")}
    env["INVOICETRAIL_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "invoicetrail", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_commands_refuse_an_unmigrated_database(fresh_sqlite: str) -> None:
    for args in (
        ["serve", "--port", "1"],
        ["worker", "--once"],
        ["accounts", "create", "--name", "x"],
    ):
        result = run_cli(fresh_sqlite, *args)
        assert result.returncode != 0, args
        assert "invoicetrail migrate" in result.stderr, result.stderr
        assert result.stdout == ""


def test_migrate_is_idempotent_and_accounts_create_prints_one_object(fresh_sqlite: str) -> None:
    assert run_cli(fresh_sqlite, "migrate").returncode == 0
    assert run_cli(fresh_sqlite, "migrate").returncode == 0
    result = run_cli(fresh_sqlite, "accounts", "create", "--name", "Acme", "--country", "de")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    created = json.loads(lines[0])
    assert set(created) == {"id", "secret_key"}
    assert created["id"].startswith("acct_")
    assert KEY.match(created["secret_key"])

    app = create_app(make_settings(fresh_sqlite))
    with TestClient(app) as client:
        api = Api(client=client, account_id=created["id"], secret_key=created["secret_key"])
        entities = api.ok(api.get("/v1/legal_entities"))["data"]
        assert [e["country"] for e in entities] == ["DE"]


def test_accounts_rotate_key(fresh_sqlite: str) -> None:
    run_cli(fresh_sqlite, "migrate")
    created = json.loads(run_cli(fresh_sqlite, "accounts", "create", "--name", "R").stdout)
    rotated = run_cli(
        fresh_sqlite, "accounts", "rotate-key", "--account", created["id"], "--overlap-seconds", "0"
    )
    assert rotated.returncode == 0, rotated.stderr
    new_key = json.loads(rotated.stdout)["secret_key"]
    app = create_app(make_settings(fresh_sqlite))
    with TestClient(app) as client:
        old = client.get(
            "/v1/invoices", headers={"Authorization": f"Bearer {created['secret_key']}"}
        )
        new = client.get("/v1/invoices", headers={"Authorization": f"Bearer {new_key}"})
    assert old.status_code == 401
    assert new.status_code == 200


def _check_demo_account(database_url: str, secret_key: str) -> None:
    app = create_app(make_settings(database_url))
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {secret_key}"}
        invoices = client.get("/v1/invoices", params={"limit": 100}, headers=headers).json()["data"]
        assert {i["status"] for i in invoices} >= {"draft", "open", "paid", "void", "uncollectible"}
        payments = client.get("/v1/payments", params={"limit": 100}, headers=headers).json()["data"]
        by_card = [
            p
            for p in payments
            if (p["provider"], p["method"], p["status"]) == ("simulated", "card", "succeeded")
        ]
        assert by_card, payments
        paid = {i["id"] for i in invoices if i["status"] == "paid"}
        assert by_card[0]["invoice"] in paid
        open_items = client.get(
            "/v1/exception_items", params={"status": "open"}, headers=headers
        ).json()["data"]
        assert [i["kind"] for i in open_items] == ["unmatched_transfer"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_demo_creates_a_new_account_each_time(backend: str, tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path / 'demo.db'}"
        if backend == "sqlite"
        else prepare_postgres_database("invoicetrail_test_demo")
    )
    assert run_cli(url, "migrate").returncode == 0
    keys = []
    for _ in range(2):
        result = run_cli(url, "demo")
        assert result.returncode == 0, result.stderr
        assert KEY.match(result.stdout.strip()), result.stdout
        assert len(result.stdout.splitlines()) == 1
        keys.append(result.stdout.strip())
    worker = run_cli(url, "worker", "--once")
    assert worker.returncode == 0, worker.stderr
    for key in keys:
        _check_demo_account(url, key)
    assert keys[0] != keys[1]


def test_demo_if_empty_reuses_the_demo_account(fresh_sqlite: str) -> None:
    run_cli(fresh_sqlite, "migrate")
    first = run_cli(fresh_sqlite, "demo", "--if-empty").stdout.strip()
    second = run_cli(fresh_sqlite, "demo", "--if-empty").stdout.strip()
    assert KEY.match(first) and KEY.match(second) and first != second
    app = create_app(make_settings(fresh_sqlite))
    with TestClient(app) as client:
        ids = [
            client.get("/v1/invoices", headers={"Authorization": f"Bearer {k}"}).json()["data"][0][
                "id"
            ]
            for k in (first, second)
        ]
    assert ids[0] == ids[1]


def test_relative_sqlite_url_resolves_against_the_working_directory(tmp_path: Path) -> None:
    result = run_cli("sqlite:///relative.db", "migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "relative.db").exists()
