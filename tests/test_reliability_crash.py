"""Crash consistency: real `serve` and `worker` processes SIGKILLed at named crash points.

Reliability suite, item 1. For each point of `invoicetrail.core.faults.CRASH_POINTS`, on a
PostgreSQL database of its own, each run (a fresh account):

1. sets up what the operation needs through a *recovery* server (a plain `serve`);
2. starts a process with `INVOICETRAIL_CRASH_AT=<point>[:N]` and drives one client
   operation at it: an API write with an Idempotency-Key, a signed provider webhook, an
   export, or a `worker --once` pass delivering to a local receiver. The connection drops;
   the process is dead by SIGKILL;
3. looks at the database as the crash left it: nothing of an uncommitted write, all of a
   committed one, the raw webhook bytes kept;
4. retries the way a client or provider does (same Idempotency-Key, same event id, the
   next worker pass) against the recovery server, within a bounded time;
5. checks: one invoice / payment / posting per business key, one completed delivery record
   per event and endpoint (2xx-acknowledged deliveries arrive at least once), every
   acknowledged write present, the journal balanced per currency, the key usable again
   (no permanent `idempotency_key_in_use`), and no transaction or advisory lock of the
   dead process left behind.

Runs per point: `scaled(1, 25)` (`make reliability` sets INVOICETRAIL_RELIABILITY_FULL=1).

Processes. A cold `python -m invoicetrail` costs about 2 s of CPU in imports, which for
8 points x 25 runs would be most of the suite. So the crashing processes (and the recovery
servers and workers) are forked from a `multiprocessing` fork server that imported the
package once: each child is its own OS process running the real CLI entry point
(`invoicetrail serve ...`, `invoicetrail worker --once`) with its own connections, and the
crash is the real SIGKILL. A child sets its environment, then re-imports
`invoicetrail.core.faults` (which reads INVOICETRAIL_CRASH_AT at import) before it runs.
`test_cold_processes_crash_at_the_point_in_their_environment` checks the same with cold
`python -m invoicetrail` processes started the ordinary way.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import forkserver
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook
from stripe import WebhookSignature

from conftest import PG_ADMIN_DSN, prepare_postgres_database
from invoicetrail.accounts import service as accounts
from invoicetrail.core import faults
from invoicetrail.core.config import Settings
from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
from reliability import scaled
from servers import HOST, free_port, running_server
from test_webhook_deliveries import Receiver

pytestmark = pytest.mark.postgres_only

RUNS_PER_POINT = scaled(1, 25)
TEMPLATE_DB = "it_crash_template"
# Bounds, not timings: a dead process is gone, a stuck key works again, a drained delivery
# queue is drained, within these.
DEATH_SECONDS_MAX = 10.0
RECOVERY_SECONDS_MAX = 15.0
STARTUP_SECONDS_MAX = 30.0
STOP_SECONDS_MAX = 15.0
WORKER_SECONDS_MAX = 60.0
HTTP_TIMEOUT_SECONDS = 30.0
CRASH_WORKER_LEASE_SECONDS = 1  # the endpoint lease a dead worker leaves behind
LOG_TAIL_CHARS = 4000
PORT_ATTEMPTS_MAX = 3

STRIPE_SECRET = "whsec_test_stripe_secret_for_crash_runs"
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EXPORT_FORMATS = ("csv", "jsonl", "netsuite", "quickbooks", "xero", "hledger", "beancount")
CUSTOMER = {"name": "Crash Buyer", "address": {"country": "DE"}}
TABLE_OF_PREFIX = {
    "cus": "customers",
    "in": "invoices",
    "pay": "payments",
    "exp": "export_batches",
    "pe": "provider_endpoints",
    "we": "webhook_endpoints",
}
TESTS_DIR = Path(__file__).resolve().parent
SRC_DIR = TESTS_DIR.parent / "src" / "invoicetrail"

_FORKS = multiprocessing.get_context("forkserver")
# Imported once by the fork server; every child starts with them loaded.
PRELOAD = ["invoicetrail.cli", "invoicetrail.api", "invoicetrail.worker", "uvicorn", __name__]


# --- processes forked from a preloaded fork server --------------------------------------------


def _child_main(argv: list[str], env: dict[str, str], log_path: str) -> None:
    """In the forked child: output to a log file, the run's environment, the crash point read
    again (faults reads it at import), then the real CLI entry point."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.environ.pop(faults.ENV_VARIABLE, None)
    os.environ.update(env)
    importlib.reload(faults)
    from invoicetrail import cli

    sys.argv = ["invoicetrail", *argv]
    cli.main()


@dataclass
class Child:
    label: str
    process: BaseProcess
    log_path: Path
    base_url: str = ""
    exit_code: int | None = None

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "<no log>"

    def wait(self, timeout: float) -> int | None:
        """The exit code once the process is gone (None if it outlives the timeout)."""
        if self.exit_code is None:
            self.process.join(timeout)
            if self.process.exitcode is not None:
                self.exit_code = self.process.exitcode
                self.process.close()
        return self.exit_code

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is not gone in time; nothing if it is already gone."""
        if self.exit_code is not None:
            return
        if self.process.exitcode is None:
            self.process.terminate()
            if self.wait(STOP_SECONDS_MAX) is not None:
                return
            self.process.kill()
        self.wait(STOP_SECONDS_MAX)


def child_env(
    database_url: str, mail_dir: Path, crash_at: str | None, **extra: str
) -> dict[str, str]:
    env = {
        "INVOICETRAIL_DATABASE_URL": database_url,
        "INVOICETRAIL_RATE_LIMIT_PER_SECOND": "0",
        "INVOICETRAIL_ALLOW_PRIVATE_WEBHOOK_TARGETS": "true",
        "INVOICETRAIL_RECONCILE_DAILY": "false",
        "INVOICETRAIL_DB_POOL_SIZE": "4",
        "INVOICETRAIL_MAIL_DIR": str(mail_dir),
        **extra,
    }
    if crash_at is not None:
        env[faults.ENV_VARIABLE] = crash_at
    return env


@dataclass(frozen=True)
class ServerStart:
    child: Child
    database_url: str
    crash_at: str | None


class Forks:
    """Starts children from the fork server and stops every one of them in the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.mail_dir = log_dir / "mail"
        self.children: list[Child] = []

    def spawn(self, label: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.log_dir / f"{len(self.children):04d}-{label}.log"
        process = _FORKS.Process(
            target=_child_main, args=(argv, env, str(log_path)), name=label, daemon=True
        )
        process.start()
        child = Child(label, process, log_path)
        self.children.append(child)
        return child

    def start_server(self, database_url: str, crash_at: str | None = None) -> ServerStart:
        """Starts `serve` without waiting for it (see `ready`)."""
        port = free_port()
        child = self.spawn(
            f"serve-{(crash_at or 'recovery').replace(':', '-')}",
            ["serve", "--host", HOST, "--port", str(port), "--workers", "1"],
            child_env(database_url, self.mail_dir, crash_at),
        )
        child.base_url = f"http://{HOST}:{port}"
        return ServerStart(child, database_url, crash_at)

    def ready(self, start: ServerStart, attempt: int = 1) -> Child:
        """The started server once it answers /healthz."""
        try:
            wait_healthy(start.child)
        except RuntimeError:
            start.child.stop()
            # Another process on this machine took the free port first: try another.
            if "address already in use" in start.child.log_tail() and attempt < PORT_ATTEMPTS_MAX:
                return self.ready(
                    self.start_server(start.database_url, start.crash_at), attempt + 1
                )
            raise
        except BaseException:
            start.child.stop()
            raise
        return start.child

    def serve(self, database_url: str, crash_at: str | None = None) -> Child:
        return self.ready(self.start_server(database_url, crash_at))

    def worker_once(self, database_url: str, crash_at: str | None = None, **extra: str) -> Child:
        return self.spawn(
            f"worker-{(crash_at or 'recovery').replace(':', '-')}",
            ["worker", "--once"],
            child_env(database_url, self.mail_dir, crash_at, **extra),
        )

    def stop_all(self) -> None:
        for child in self.children:
            child.stop()


def wait_healthy(child: Child) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS_MAX
    with httpx.Client(base_url=child.base_url, timeout=2.0) as probe:
        while True:
            if child.process.exitcode is not None:
                raise RuntimeError(
                    f"{child.label} exited with {child.process.exitcode}:\n{child.log_tail()}"
                )
            try:
                if probe.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.label} is not healthy:\n{child.log_tail()}")
            time.sleep(0.02)


# --- databases ----------------------------------------------------------------------------------


def clone_database(template_url: str, name: str) -> str:
    """A fresh copy of the migrated template (much faster than migrating each database).

    Commits are asynchronous: processes are killed here, never the database server, so
    commit durability is not under test; what a commit makes visible is the same."""
    template = template_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (template,),
        )
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    return f"{template_url.rsplit('/', 1)[0]}/{name}"


@pytest.fixture(scope="module")
def template_url() -> str:
    return prepare_postgres_database(TEMPLATE_DB)


@pytest.fixture(scope="module")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forks]:
    started = Forks(tmp_path_factory.mktemp("crash-logs"))
    # The fork server imports this module by name (PRELOAD), and the children unpickle their
    # target from it: it needs the tests directory on its path.
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), previous) if p)
    try:
        _FORKS.set_forkserver_preload(PRELOAD)
        forkserver.ensure_running()
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    try:
        # A fork server started earlier in the session without this module cannot run the
        # children: say so here rather than as a server that never comes up.
        probe = started.spawn("probe", ["--help"], {})
        assert probe.wait(STARTUP_SECONDS_MAX) == 0, f"fork server: {probe.log_tail()}"
        yield started
    finally:
        started.stop_all()


# --- a point's lab and one run's account ---------------------------------------------------------


@dataclass
class Lab:
    point: str
    database_url: str
    engine: Engine
    sessions: sessionmaker[Session]
    forks: Forks
    recovery: Child
    receiver: Receiver
    http: httpx.Client
    runs: list[Run] = field(default_factory=list)
    spare: ServerStart | None = None

    def crash_server(self, crash_at: str, *, more: bool) -> Child:
        """A server that dies at `crash_at`. When `more` runs follow, the next one starts
        now, so its start overlaps this run's work (startup is most of a run's time)."""
        start, self.spare = self.spare, None
        if start is None or start.crash_at != crash_at:
            if start is not None:
                start.child.stop()
            start = self.forks.start_server(self.database_url, crash_at)
        server = self.forks.ready(start)
        if more:
            self.spare = self.forks.start_server(self.database_url, crash_at)
        return server

    def rows(self, statement: str, **params: Any) -> list[Row[Any]]:
        with self.engine.connect() as connection:
            return list(connection.execute(text(statement), params).all())

    def scalar(self, statement: str, **params: Any) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(text(statement), params).scalar_one()

    def new_run(self, index: int) -> Run:
        with write_transaction(self.sessions) as session:
            created = accounts.create_account(
                session, name=f"crash {self.point} {index}", country=None, now=datetime.now(UTC)
            )
            session.commit()
        run = Run(
            self, index, created.account.id, created.secret_key, f"{index}-{uuid.uuid4().hex[:8]}"
        )
        self.runs.append(run)
        return run


@dataclass
class Run:
    lab: Lab
    index: int
    account_id: str
    secret_key: str
    tag: str
    acked: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    acked_keys: set[str] = field(default_factory=set)

    def post(
        self, base_url: str, path: str, body: dict[str, Any] | None = None, *, key: str
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secret_key}", "Idempotency-Key": key}
        if body is None:
            return self.lab.http.post(base_url + path, headers=headers)
        return self.lab.http.post(base_url + path, json=body, headers=headers)

    def get(self, path: str) -> dict[str, Any]:
        response = self.lab.http.get(
            self.lab.recovery.base_url + path,
            headers={"Authorization": f"Bearer {self.secret_key}"},
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def acknowledge(self, response: httpx.Response, key: str) -> dict[str, Any]:
        """A 2xx answer the client holds: the write must survive every later crash."""
        assert response.status_code in (200, 201), response.text
        answer: dict[str, Any] = response.json()
        self.acked_keys.add(key)
        prefix = str(answer.get("id", "")).split("_", 1)[0]
        if prefix in TABLE_OF_PREFIX:
            self.acked[TABLE_OF_PREFIX[prefix]].add(answer["id"])
        return answer

    def write(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A set-up write through the recovery server, under a fresh key."""
        key = f"setup-{uuid.uuid4().hex}"
        return self.acknowledge(self.post(self.lab.recovery.base_url, path, body, key=key), key)

    def customer(self) -> dict[str, Any]:
        return self.write("/v1/customers", CUSTOMER)

    def draft(self, external_reference: str | None = None) -> dict[str, Any]:
        return self.write("/v1/invoices", invoice_body(self.customer()["id"], external_reference))

    def open_invoice(self) -> dict[str, Any]:
        return self.write(f"/v1/invoices/{self.draft()['id']}/finalize")

    def business_keys(self) -> list[str]:
        return sorted(
            r.business_key
            for r in self.lab.rows(
                "SELECT business_key FROM journal_entries WHERE account_id = :a", a=self.account_id
            )
        )


def invoice_body(customer_id: str, external_reference: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": customer_id,
        "currency": "eur",
        "lines": [
            {"description": "Widget", "quantity": "2", "unit_amount": 1050, "tax_rate": "19"},
            {"description": "Service", "quantity": "1.5", "unit_amount": 2000, "tax_rate": "7"},
        ],
    }
    if external_reference is not None:
        body["external_reference"] = external_reference
    return body


@pytest.fixture
def lab(point: str, forks: Forks, template_url: str, http: httpx.Client) -> Iterator[Lab]:
    database_url = clone_database(template_url, f"it_crash_{point}")
    engine = make_engine(Settings(database_url=database_url, db_pool_size=2))
    receiver = Receiver().start()
    recovery: Child | None = None
    opened: Lab | None = None
    try:
        recovery = forks.serve(database_url)
        opened = Lab(
            point, database_url, engine, make_sessionmaker(engine), forks, recovery, receiver, http
        )
        yield opened
    finally:
        if recovery is not None:
            recovery.stop()
        if opened is not None and opened.spare is not None:
            opened.spare.child.stop()
        receiver.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as client:
        yield client


# --- crashing and retrying ------------------------------------------------------------------------


def crash(child: Child, send: Callable[[], httpx.Response], crash_at: str) -> None:
    """Drives the operation at `child`: the connection must drop and the process die by
    SIGKILL (not answer, not exit otherwise)."""
    try:
        response = send()
    except httpx.TransportError:
        pass
    else:
        child.stop()
        pytest.fail(
            f"{child.label} answered {response.status_code} instead of dying at {crash_at}: "
            f"{response.text[:500]}\n{child.log_tail()}"
        )
    assert_killed(child, crash_at)


def assert_killed(child: Child, crash_at: str) -> None:
    code = child.wait(DEATH_SECONDS_MAX)
    if code is None:
        child.stop()
    assert code == -signal.SIGKILL, (
        f"{child.label} should have died by SIGKILL at {crash_at}, exit {code}:\n{child.log_tail()}"
    )


def retry_same_key(
    run: Run, path: str, body: dict[str, Any] | None, key: str
) -> tuple[httpx.Response, int]:
    """The client's retry with the same Idempotency-Key: `409 idempotency_key_in_use` is
    retryable and allowed only until the dead process's transaction is gone."""
    deadline = time.monotonic() + RECOVERY_SECONDS_MAX
    in_use = 0
    while True:
        response = run.post(run.lab.recovery.base_url, path, body, key=key)
        if response.status_code != 409 or error_code(response) != "idempotency_key_in_use":
            return response, in_use
        assert response.json()["error"]["retryable"] is True
        in_use += 1
        assert time.monotonic() < deadline, (
            f"Idempotency-Key {key} still in use {RECOVERY_SECONDS_MAX} s after the crash"
        )
        time.sleep(0.05)


def error_code(response: httpx.Response) -> str | None:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(code)


# --- API writes: idempotency_locked, invoice_row_written, before_commit, ... ---------------------


@dataclass
class Op:
    """One API write under test, with what it leaves in the database."""

    name: str
    path: str
    body: dict[str, Any] | None
    done: Callable[[], bool]  # is the write's effect committed?
    check: Callable[[dict[str, Any]], None]  # after recovery, given the acknowledged answer
    again: Callable[[], None] | None = None  # the same request under a fresh key


def op_create_invoice(run: Run, *, with_reference: bool = True) -> Op:
    lab = run.lab
    customer = run.customer()
    reference = f"order-{run.tag}" if with_reference else None
    body = invoice_body(customer["id"], reference)

    def invoices() -> list[Row[Any]]:
        return lab.rows(
            "SELECT id, status, external_reference FROM invoices WHERE account_id = :a",
            a=run.account_id,
        )

    def done() -> bool:
        return bool(invoices())

    def check(answer: dict[str, Any]) -> None:
        rows = invoices()
        assert [r.id for r in rows] == [answer["id"]], f"one invoice, not {rows}"
        assert rows[0].status == "draft" and rows[0].external_reference == reference
        assert lab.scalar(
            "SELECT COUNT(*) FROM invoice_lines WHERE invoice_id = :i", i=answer["id"]
        ) == len(body["lines"])
        assert (
            lab.scalar(
                "SELECT COUNT(*) FROM events WHERE account_id = :a AND type = 'invoice.created'",
                a=run.account_id,
            )
            == 1
        )

    def again() -> None:
        # The business key holds whatever the Idempotency-Key: no second invoice.
        response = run.post(lab.recovery.base_url, "/v1/invoices", body, key=uuid.uuid4().hex)
        assert response.status_code == 409, response.text
        assert error_code(response) == "duplicate_external_reference"
        assert response.json()["error"]["existing_id"] == invoices()[0].id
        assert len(invoices()) == 1

    return Op(
        "create" if with_reference else "create_without_reference",
        "/v1/invoices",
        body,
        done,
        check,
        again if with_reference else None,
    )


def op_finalize(run: Run) -> Op:
    lab = run.lab
    draft = run.draft(f"order-{run.tag}")
    path = f"/v1/invoices/{draft['id']}/finalize"

    def done() -> bool:
        return str(lab.scalar("SELECT status FROM invoices WHERE id = :i", i=draft["id"])) == "open"

    def check(answer: dict[str, Any]) -> None:
        assert answer["status"] == "open" and answer["id"] == draft["id"]
        # Gapless: the crashed finalize used no number.
        assert str(answer["number"]).endswith("-000001"), answer["number"]
        assert run.business_keys() == [f"finalize:{draft['id']}"]

    def again() -> None:
        response = run.post(lab.recovery.base_url, path, None, key=uuid.uuid4().hex)
        assert response.status_code == 409, response.text
        assert error_code(response) == "invalid_state_transition"
        assert run.business_keys() == [f"finalize:{draft['id']}"]

    return Op("finalize", path, None, done, check, again)


def op_pay(run: Run) -> Op:
    lab = run.lab
    invoice = run.open_invoice()
    reference = f"chk-{run.tag}"
    path = f"/v1/invoices/{invoice['id']}/pay"
    body = {"reference": reference, "method": "check"}

    def payments() -> list[Row[Any]]:
        return lab.rows(
            "SELECT id, reference, status, amount_minor FROM payments WHERE invoice_id = :i",
            i=invoice["id"],
        )

    def done() -> bool:
        return bool(payments())

    def check(answer: dict[str, Any]) -> None:
        assert answer["status"] == "paid" and answer["amount_remaining"] == 0, answer
        rows = payments()
        assert len(rows) == 1, f"one payment, not {rows}"
        assert (rows[0].reference, rows[0].status) == (reference, "succeeded")
        assert rows[0].amount_minor == invoice["total"]
        run.acked["payments"].add(rows[0].id)
        assert run.business_keys() == sorted(
            [f"finalize:{invoice['id']}", f"receipt:{invoice['id']}:{reference}"]
        )

    def again() -> None:
        # Another key, the same payment reference: never a second payment or receipt.
        response = run.post(lab.recovery.base_url, path, body, key=uuid.uuid4().hex)
        assert response.status_code < 500, response.text
        assert len(payments()) == 1
        assert run.business_keys() == sorted(
            [f"finalize:{invoice['id']}", f"receipt:{invoice['id']}:{reference}"]
        )

    return Op("pay", path, body, done, check, again)


def op_export(run: Run) -> Op:
    lab = run.lab
    invoice = run.open_invoice()
    run.write(f"/v1/invoices/{invoice['id']}/pay", {"reference": f"chk-{run.tag}"})
    period = str(
        lab.scalar(
            "SELECT MAX(period) FROM journal_entries WHERE account_id = :a", a=run.account_id
        )
    )
    export_format = EXPORT_FORMATS[run.index % len(EXPORT_FORMATS)]
    body = {"format": export_format, "period": period}

    def batches() -> list[Row[Any]]:
        return lab.rows(
            "SELECT id, seq, row_count FROM export_batches WHERE account_id = :a",
            a=run.account_id,
        )

    def done() -> bool:
        return bool(batches())

    def check(answer: dict[str, Any]) -> None:
        lines = lab.scalar(
            "SELECT COUNT(*) FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id "
            "WHERE e.account_id = :a AND e.period = :p",
            a=run.account_id,
            p=period,
        )
        rows = batches()
        assert [r.id for r in rows] == [answer["id"]], f"one batch, not {rows}"
        assert answer["row_count"] == rows[0].row_count == lines > 0
        assert (
            lab.scalar("SELECT COUNT(*) FROM export_batch_rows WHERE batch_seq = :s", s=rows[0].seq)
            == lines
        )
        listed = run.get(f"/v1/exports/{answer['id']}/rows?limit=100")
        assert len(listed["data"]) == lines

    def again() -> None:
        # Same format and period, same lines: the same batch whatever the key.
        response = run.post(lab.recovery.base_url, "/v1/exports", body, key=uuid.uuid4().hex)
        assert response.status_code in (200, 201), response.text
        assert response.json()["id"] == batches()[0].id
        assert len(batches()) == 1

    return Op(f"export-{export_format}", "/v1/exports", body, done, check, again)


def api_write(run: Run, op: Op, crash_at: str, *, committed: bool) -> None:
    """Crash inside the write, look at what is left, retry with the same key."""
    lab = run.lab
    key = f"crash-{run.tag}"
    server = lab.crash_server(crash_at, more=run.index + 1 < RUNS_PER_POINT)
    try:
        crash(server, lambda: run.post(server.base_url, op.path, op.body, key=key), crash_at)
    finally:
        server.stop()

    stored = lab.rows(
        "SELECT response_body, status_code FROM idempotency_keys "
        "WHERE account_id = :a AND key = :k",
        a=run.account_id,
        k=key,
    )
    logged = lab.scalar(
        "SELECT COUNT(*) FROM request_log WHERE account_id = :a AND idempotency_key = :k",
        a=run.account_id,
        k=key,
    )
    if committed:
        # Committed, never answered: all of it is there, and the retry is a replay.
        assert op.done(), f"{op.name} committed before the crash and is missing"
        assert len(stored) == 1 and logged == 1
        first, in_use = retry_same_key(run, op.path, op.body, key)
        assert in_use == 0, "a committed key was reported in flight"
        assert first.headers.get("Idempotent-Replayed") == "true", first.text
        assert first.status_code == stored[0].status_code
        assert first.content == bytes(stored[0].response_body)
    else:
        # Not committed: nothing of it, and the key is free once the dead transaction is.
        assert not op.done(), f"{op.name}: an uncommitted write survived the crash"
        assert stored == [] and logged == 0
        first, _ = retry_same_key(run, op.path, op.body, key)
        assert first.status_code in (200, 201), first.text
        assert "Idempotent-Replayed" not in first.headers
    answer = run.acknowledge(first, key)
    replay = run.post(lab.recovery.base_url, op.path, op.body, key=key)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert (replay.status_code, replay.content) == (first.status_code, first.content)
    op.check(answer)
    if op.again is not None:
        op.again()


API_OPS: list[Callable[[Run], Op]] = [op_create_invoice, op_finalize, op_pay]


# --- provider webhooks: webhook_raw_stored, posting_written ---------------------------------------


def provider_event(provider: str, invoice: dict[str, Any], tag: str) -> tuple[bytes, str, str]:
    """(body, provider event id, payment reference) of a payment that pays the invoice."""
    reference = f"pi_{tag.replace('-', '')}"
    if provider == "stripe":
        event_id = f"evt_{uuid.uuid4().hex[:24]}"
        event: dict[str, Any] = {
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": reference,
                    "object": "payment_intent",
                    "amount": invoice["total"],
                    "amount_received": invoice["total"],
                    "currency": invoice["currency"],
                    "metadata": {"invoice": invoice["id"]},
                    "payment_method_types": ["card"],
                }
            },
        }
    else:
        event_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(UTC).isoformat()
        event = {
            "type": "payment.succeeded",
            "timestamp": now,
            "data": {
                "payment_reference": reference,
                "invoice": invoice["id"],
                "amount": invoice["total"],
                "currency": invoice["currency"],
                "method": "card",
                "occurred_at": now,
            },
        }
    return json.dumps(event).encode(), event_id, reference


def signed_headers(provider: str, body: bytes, event_id: str) -> dict[str, str]:
    """Signed now, as the provider does on every (re)delivery of the same event."""
    if provider == "stripe":
        header = WebhookSignature.generate_signature_header(
            body.decode(), STRIPE_SECRET, timestamp=int(time.time())
        )
        return {"Stripe-Signature": header}
    now = datetime.now(UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SW_SECRET).sign(
            msg_id=event_id, timestamp=now, data=body.decode()
        ),
    }


def provider_webhook(run: Run, crash_at: str, provider: str) -> None:
    lab = run.lab
    invoice = run.open_invoice()
    secret = STRIPE_SECRET if provider == "stripe" else SW_SECRET
    endpoint = run.write("/v1/provider_endpoints", {"provider": provider, "secret": secret})
    body, event_id, reference = provider_event(provider, invoice, run.tag)

    def deliver(base_url: str) -> httpx.Response:
        return lab.http.post(
            base_url + endpoint["url"],
            content=body,
            headers=signed_headers(provider, body, event_id),
        )

    server = lab.crash_server(crash_at, more=run.index + 1 < RUNS_PER_POINT)
    try:
        crash(server, lambda: deliver(server.base_url), crash_at)
    finally:
        server.stop()

    def stored() -> list[Row[Any]]:
        return lab.rows(
            "SELECT body, verification, outcome, provider_event_id FROM provider_events "
            "WHERE endpoint_id = :e ORDER BY seq",
            e=endpoint["id"],
        )

    # The raw bytes were committed before anything else; nothing was verified or applied.
    raw = stored()
    assert len(raw) == 1, raw
    assert bytes(raw[0].body) == body
    assert (raw[0].verification, raw[0].outcome) == ("pending", "pending")
    assert lab.rows("SELECT id FROM payments WHERE invoice_id = :i", i=invoice["id"]) == []
    assert (
        lab.rows(
            "SELECT provider_event FROM provider_event_keys WHERE endpoint_id = :e",
            e=endpoint["id"],
        )
        == []
    )
    assert run.business_keys() == [f"finalize:{invoice['id']}"]

    # The provider retries the same event until it gets a 2xx.
    deadline = time.monotonic() + RECOVERY_SECONDS_MAX
    while True:
        retried = deliver(lab.recovery.base_url)
        if retried.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert retried.status_code == 200, retried.text
    assert retried.json()["outcome"] == "applied", retried.text
    repeat = deliver(lab.recovery.base_url)
    assert repeat.status_code == 200 and repeat.json()["outcome"] == "duplicate", repeat.text

    payments = lab.rows(
        "SELECT id, reference, status, amount_minor, provider_event_ids FROM payments "
        "WHERE invoice_id = :i",
        i=invoice["id"],
    )
    assert len(payments) == 1, payments
    payment = payments[0]
    run.acked["payments"].add(payment.id)
    assert (payment.reference, payment.status) == (reference, "succeeded")
    assert payment.amount_minor == invoice["total"]
    ids = payment.provider_event_ids
    assert (json.loads(ids) if isinstance(ids, str) else ids) == [event_id]
    assert run.get(f"/v1/invoices/{invoice['id']}")["status"] == "paid"
    assert run.business_keys() == sorted(
        [f"finalize:{invoice['id']}", f"receipt:{invoice['id']}:{reference}"]
    )
    outcomes = [(r.verification, r.outcome) for r in stored()]
    assert outcomes == [
        ("pending", "pending"),
        ("verified", "applied"),
        ("verified", "duplicate"),
    ]


# --- outbound deliveries: delivery_sent_before_record ---------------------------------------------


def delivery(run: Run, hit: int) -> None:
    """A worker dies after its `hit`-th delivery got a 2xx and before recording it."""
    lab = run.lab
    path = f"/hooks/{run.tag}"
    endpoint = run.write("/v1/webhook_endpoints", {"url": lab.receiver.url(path), "events": ["*"]})
    lab.receiver.expect(path, "secret", endpoint["secret"])
    for _ in range(3):
        run.customer()
    crash_at = f"delivery_sent_before_record:{hit}"
    worker = lab.forks.worker_once(
        lab.database_url,
        crash_at,
        INVOICETRAIL_WEBHOOK_LEASE_SECONDS=str(CRASH_WORKER_LEASE_SECONDS),
    )
    try:
        assert_killed(worker, crash_at)
    finally:
        worker.stop()

    def deliveries() -> list[Row[Any]]:
        return lab.rows(
            "SELECT id, event_id, status, attempt_count FROM webhook_deliveries "
            "WHERE endpoint_id = :e ORDER BY event_seq",
            e=endpoint["id"],
        )

    # As the crash left it: `hit` sent, the first hit-1 recorded, the hit-th still pending.
    sent = lab.receiver.ids(path)
    assert len(sent) == hit, sent
    left = deliveries()
    assert len(left) >= 3
    assert [(d.event_id, d.status, d.attempt_count) for d in left[:hit]] == [
        *((event_id, "succeeded", 1) for event_id in sent[: hit - 1]),
        (sent[hit - 1], "pending", 0),
    ]
    assert all(d.status == "pending" for d in left[hit:])

    # The next worker takes over once the dead worker's lease on the endpoint runs out.
    deadline = time.monotonic() + RECOVERY_SECONDS_MAX
    while any(d.status == "pending" for d in deliveries()):
        assert time.monotonic() < deadline, f"deliveries still pending: {deliveries()}"
        lease_until = lab.scalar(
            "SELECT lease_until FROM webhook_endpoints WHERE id = :e", e=endpoint["id"]
        )
        if lease_until is not None:
            time.sleep(max(0.0, (lease_until - datetime.now(UTC)).total_seconds()) + 0.05)
        recovery = lab.forks.worker_once(lab.database_url)
        try:
            assert recovery.wait(WORKER_SECONDS_MAX) == 0, recovery.log_tail()
        finally:
            recovery.stop()

    final = deliveries()
    assert {d.status for d in final} == {"succeeded"}
    # One completed record per event: one delivery row, one attempt, whatever was resent.
    assert len({d.event_id for d in final}) == len(final), final
    assert all(d.attempt_count == 1 for d in final), final
    attempts = lab.rows(
        "SELECT a.delivery_id, a.status_code FROM webhook_attempts a "
        "JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = :e",
        e=endpoint["id"],
    )
    assert sorted(a.delivery_id for a in attempts) == sorted(d.id for d in final)
    assert all(200 <= a.status_code < 300 for a in attempts)
    # At least once: every event arrived; only the one in flight at the crash arrived twice.
    counts = Counter(lab.receiver.ids(path))
    assert set(counts) == {d.event_id for d in final}
    assert {event_id for event_id, n in counts.items() if n > 1} == {sent[hit - 1]}
    assert counts[sent[hit - 1]] == 2
    assert lab.receiver.first_ids(path) == [d.event_id for d in final]
    lab.receiver.check()


# --- the points -----------------------------------------------------------------------------------


def scenario(point: str, index: int) -> tuple[str, Callable[[Run], None]]:
    """(what the run does, the run) for run `index` of `point`: runs rotate through the
    operations that pass the point."""
    if point in ("idempotency_locked", "before_commit", "after_commit_before_response"):
        make_op = API_OPS[index % len(API_OPS)]
        committed = point == "after_commit_before_response"
        return make_op.__name__, lambda run: api_write(
            run, make_op(run), point, committed=committed
        )
    if point == "invoice_row_written":
        with_reference = index % 2 == 0
        return f"create (reference: {with_reference})", lambda run: api_write(
            run, op_create_invoice(run, with_reference=with_reference), point, committed=False
        )
    if point == "posting_written":
        variant = index % 4
        if variant == 1:
            return "finalize", lambda run: api_write(run, op_finalize(run), point, committed=False)
        if variant == 2:
            return "pay", lambda run: api_write(run, op_pay(run), point, committed=False)
        provider = "stripe" if variant == 0 else "standard_webhooks"
        return f"{provider} webhook", lambda run: provider_webhook(run, point, provider)
    if point == "export_mid_batch":
        return "export", lambda run: api_write(run, op_export(run), point, committed=False)
    if point == "webhook_raw_stored":
        provider = "stripe" if index % 2 == 0 else "standard_webhooks"
        return f"{provider} webhook", lambda run: provider_webhook(run, point, provider)
    if point == "delivery_sent_before_record":
        hit = 1 + index % 3
        return f"delivery, hit {hit}", lambda run: delivery(run, hit)
    raise AssertionError(f"no scenario for crash point {point}")


# --- invariants ----------------------------------------------------------------------------------


def check_run(run: Run) -> None:
    """What must hold for the run's account after recovery, whatever the point."""
    lab = run.lab
    a = run.account_id
    unbalanced = lab.rows(
        "SELECT e.id FROM journal_entries e LEFT JOIN journal_lines l ON l.entry_id = e.id "
        "WHERE e.account_id = :a GROUP BY e.id, e.debit_total_minor, e.credit_total_minor "
        "HAVING COUNT(l.id) = 0 OR SUM(l.debit_minor) <> SUM(l.credit_minor) "
        "OR SUM(l.debit_minor) <> e.debit_total_minor",
        a=a,
    )
    assert unbalanced == [], f"entries not balanced by their lines: {unbalanced}"
    by_currency = lab.rows(
        "SELECT currency, SUM(debit_minor) AS debit, SUM(credit_minor) AS credit "
        "FROM journal_lines WHERE account_id = :a GROUP BY currency",
        a=a,
    )
    assert all(r.debit == r.credit for r in by_currency), by_currency
    duplicates = lab.rows(
        "SELECT 'posting' AS what, business_key AS k FROM journal_entries WHERE account_id = :a "
        "GROUP BY business_key HAVING COUNT(*) > 1 "
        "UNION ALL SELECT 'invoice', external_reference FROM invoices "
        "WHERE account_id = :a AND external_reference IS NOT NULL "
        "GROUP BY external_reference HAVING COUNT(*) > 1 "
        "UNION ALL SELECT 'payment', invoice_id || ':' || reference FROM payments "
        "WHERE account_id = :a GROUP BY invoice_id, reference HAVING COUNT(*) > 1 "
        "UNION ALL SELECT 'delivery', endpoint_id || ':' || event_id FROM webhook_deliveries "
        "WHERE account_id = :a AND status = 'succeeded' "
        "GROUP BY endpoint_id, event_id HAVING COUNT(*) > 1",
        a=a,
    )
    assert duplicates == [], f"duplicates after recovery: {duplicates}"
    check_acknowledged(run)
    keys = lab.rows(
        "SELECT k.key, (SELECT COUNT(*) FROM request_log r WHERE r.account_id = k.account_id "
        "AND r.idempotency_key = k.key) AS logged FROM idempotency_keys k "
        "WHERE k.account_id = :a",
        a=a,
    )
    stored = {r.key: r.logged for r in keys}
    assert run.acked_keys <= set(stored), f"acknowledged keys lost: {run.acked_keys - set(stored)}"
    assert all(stored[k] == 1 for k in run.acked_keys), f"a write logged twice: {stored}"
    check_nothing_left_open(lab)


def check_acknowledged(run: Run) -> None:
    for table, ids in run.acked.items():
        present = {
            r.id
            for r in run.lab.rows(f"SELECT id FROM {table} WHERE id = ANY(:ids)", ids=list(ids))
        }
        assert present == ids, f"acknowledged {table} missing: {sorted(ids - present)}"


def check_nothing_left_open(lab: Lab) -> None:
    """The dead process's transaction is gone, and with it its advisory locks (the
    Idempotency-Key claim, an export's format lock)."""
    deadline = time.monotonic() + RECOVERY_SECONDS_MAX
    while True:
        left = lab.rows(
            "SELECT (SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()) AS open_tx, "
            "(SELECT COUNT(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()) AS advisory"
        )[0]
        if (left.open_tx, left.advisory) == (0, 0):
            return
        assert time.monotonic() < deadline, f"left open after the crash: {left}"
        time.sleep(0.05)


def check_database(lab: Lab) -> None:
    """The whole database once every run of the point is over."""
    assert lab.scalar("SELECT COUNT(*) FROM accounts") == len(lab.runs)
    for run in lab.runs:  # later crashes lost nothing acknowledged earlier
        check_acknowledged(run)
    unbalanced = lab.rows(
        "SELECT account_id, currency FROM journal_lines GROUP BY account_id, currency "
        "HAVING SUM(debit_minor) <> SUM(credit_minor)"
    )
    assert unbalanced == [], unbalanced
    assert lab.rows("SELECT id FROM webhook_deliveries WHERE status <> 'succeeded'") == []
    # A batch killed mid-build leaves no membership behind.
    assert (
        lab.scalar(
            "SELECT COUNT(*) FROM export_batch_rows r "
            "WHERE NOT EXISTS (SELECT 1 FROM export_batches b WHERE b.seq = r.batch_seq)"
        )
        == 0
    )


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", faults.CRASH_POINTS)
def test_recovery_after_a_crash_at(point: str, lab: Lab) -> None:
    for index in range(RUNS_PER_POINT):
        what, run_scenario = scenario(point, index)
        run = lab.new_run(index)
        try:
            run_scenario(run)
            check_run(run)
        except BaseException as failure:
            failure.add_note(f"{point}, run {index} of {RUNS_PER_POINT}: {what}")
            failure.add_note(f"recovery server log:\n{lab.recovery.log_tail()}")
            raise
    check_database(lab)


def test_every_crash_point_sits_once_on_a_code_path() -> None:
    placed: Counter[str] = Counter()
    for source in SRC_DIR.rglob("*.py"):
        if source.name != "faults.py":
            placed.update(re.findall(r'crash_point\("([^"]*)"\)', source.read_text()))
    assert placed == Counter(faults.CRASH_POINTS)


def test_crash_points_are_off_unless_configured_and_typos_raise() -> None:
    assert faults.ENV_VARIABLE not in os.environ
    for point in faults.CRASH_POINTS:
        faults.crash_point(point)  # this process lives on
    with pytest.raises(ValueError, match="unknown crash point"):
        faults.crash_point("before_comit")
    assert faults._parse(None) == (None, 0)
    assert faults._parse("before_commit") == ("before_commit", 1)
    assert faults._parse("posting_written:3") == ("posting_written", 3)
    for bad in ("before_comit", "before_commit:0", "before_commit:x"):
        with pytest.raises(ValueError):
            faults._parse(bad)


def test_cold_processes_crash_at_the_point_in_their_environment(
    forks: Forks, template_url: str, http: httpx.Client, tmp_path: Path
) -> None:
    """`python -m invoicetrail serve` / `worker --once` started the ordinary way read
    INVOICETRAIL_CRASH_AT at start, count hits (`name:N`) and die by SIGKILL there."""
    database_url = clone_database(template_url, "it_crash_cold")
    engine = make_engine(Settings(database_url=database_url, db_pool_size=2))
    receiver = Receiver().start()
    recovery: Child | None = None
    try:
        recovery = forks.serve(database_url)
        lab = Lab(
            "cold", database_url, engine, make_sessionmaker(engine), forks, recovery, receiver, http
        )
        run = lab.new_run(0)
        env = {faults.ENV_VARIABLE: "before_commit:2"}
        with running_server(database_url, env=env, log_dir=tmp_path) as server:
            first_key, second_key = f"cold-1-{run.tag}", f"cold-2-{run.tag}"
            first = run.acknowledge(
                run.post(server.base_url, "/v1/customers", CUSTOMER, key=first_key), first_key
            )
            with pytest.raises(httpx.TransportError):
                run.post(server.base_url, "/v1/customers", CUSTOMER, key=second_key)
            assert server.process.wait(DEATH_SECONDS_MAX) == -signal.SIGKILL, server.log_tail()
        customers = lab.rows("SELECT id FROM customers WHERE account_id = :a", a=run.account_id)
        assert [c.id for c in customers] == [first["id"]]
        retried, _ = retry_same_key(run, "/v1/customers", CUSTOMER, second_key)
        assert retried.status_code in (200, 201) and "Idempotent-Replayed" not in retried.headers
        run.acknowledge(retried, second_key)

        path = f"/hooks/{run.tag}"
        endpoint = run.write("/v1/webhook_endpoints", {"url": receiver.url(path), "events": ["*"]})
        receiver.expect(path, "secret", endpoint["secret"])
        run.customer()
        worker_env = {
            **os.environ,
            **child_env(
                database_url,
                forks.mail_dir,
                "delivery_sent_before_record",
                INVOICETRAIL_WEBHOOK_LEASE_SECONDS=str(CRASH_WORKER_LEASE_SECONDS),
            ),
        }
        died = subprocess.run(
            [sys.executable, "-m", "invoicetrail", "worker", "--once"],
            env=worker_env,
            capture_output=True,
            timeout=WORKER_SECONDS_MAX,
            check=False,
        )
        assert died.returncode == -signal.SIGKILL, died.stderr.decode(errors="replace")[-2000:]
        assert len(receiver.ids(path)) == 1
        time.sleep(CRASH_WORKER_LEASE_SECONDS + 0.1)
        again = forks.worker_once(database_url)
        try:
            assert again.wait(WORKER_SECONDS_MAX) == 0, again.log_tail()
        finally:
            again.stop()
        assert (
            lab.rows(
                "SELECT id FROM webhook_deliveries "
                "WHERE endpoint_id = :e AND status <> 'succeeded'",
                e=endpoint["id"],
            )
            == []
        )
        assert Counter(receiver.ids(path))[receiver.ids(path)[0]] == 2
        check_run(run)
    finally:
        if recovery is not None:
            recovery.stop()
        receiver.stop()
        engine.dispose()
