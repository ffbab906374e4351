"""create_finalize: invoices per second through the real API, against a same-run baseline.

SPEC "Benchmarks": `invoicetrail serve` on PostgreSQL with INVOICETRAIL_SERVE_WORKERS=2 and
INVOICETRAIL_RATE_LIMIT_PER_SECOND=0; 16 concurrent clients, each invoice a create (3 lines,
unique external_reference) then a finalize, every request succeeding. The baseline is a
16-thread DB-API loop doing, per API write, one transaction with the same rows:

    create:   idempotency row + invoice + 3 lines + event + request-log row
    finalize: lock the invoice row, lock the number-sequence row, update both,
              idempotency row + event + request-log row

Pass: >= 500 invoices/s and >= 0.5 x baseline, numbers unique and gapless. A SQLite row
(one serve process on a SQLite file, baseline with sqlite3) is reported beside it.

The script creates its own databases, starts and stops its own servers on free loopback
ports, prints the figures and writes the create_finalize rows of bench/RESULTS.md. It
asserts nothing; `met` says whether the target was reached.

    .venv/bin/python bench/create_finalize.py [--invoices 3000] [--sqlite-invoices 500]
                                             [--quick] [--skip-sqlite]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import psycopg

BENCH = "create_finalize"
HOST = "127.0.0.1"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
TABLE_HEADER = "| bench | backend | size | measured | baseline | ratio | target | met |"
TABLE_RULE = "|---|---|---|---|---|---|---|---|"
DETAILS_BEGIN = f"<!-- {BENCH}:details -->"
DETAILS_END = f"<!-- /{BENCH}:details -->"
TARGET_RATE = 500.0
TARGET_RATIO = 0.5
TARGET_TEXT = "≥ 500 invoices/s and ≥ 0.5 × baseline"
PG_ADMIN_DSN = os.environ.get(
    "INVOICETRAIL_BENCH_POSTGRES_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
PG_DATABASE = "invoicetrail_bench"
STARTUP_SECONDS_MAX = 30.0
REQUEST_SECONDS_MAX = 120.0
NUMBER_PATTERN = re.compile(r"^(.+)-(\d{4})-(\d{6,})$")
LINES = (
    {"description": "Widget", "quantity": "2", "unit_amount": 1050, "tax_rate": "19"},
    {"description": "Service hours", "quantity": "1.5", "unit_amount": 2000, "tax_rate": "7"},
    {"description": "Shipping", "quantity": "1", "unit_amount": 499, "tax_rate": "0"},
)


# --- measurement ----------------------------------------------------------------------------


@dataclass
class Recorder:
    """Latencies per request kind and failures, merged from every client thread."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float) -> None:
        with self._lock:
            self.latencies.setdefault(kind, []).append(seconds)

    def fail(self, message: str) -> None:
        with self._lock:
            self.failures.append(message)

    def percentile_ms(self, kind: str, fraction: float) -> float:
        values = sorted(self.latencies.get(kind, []))
        if not values:
            return float("nan")
        index = min(len(values) - 1, max(0, round(fraction * len(values)) - 1))
        return values[index] * 1000.0


@dataclass
class Run:
    """One measured phase: `count` invoices (create + finalize each) in `seconds`."""

    label: str
    count: int
    seconds: float
    recorder: Recorder
    written: int  # invoices the phase left in the database, warm-up included

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def latency_text(self) -> str:
        parts = []
        for kind in ("create", "finalize"):
            p50 = self.recorder.percentile_ms(kind, 0.50)
            p99 = self.recorder.percentile_ms(kind, 0.99)
            parts.append(f"{kind} p50 {p50:.1f} ms / p99 {p99:.1f} ms")
        return ", ".join(parts)


def drive(
    clients: int,
    count: int,
    make_worker: Callable[[], Callable[[int], None]],
    recorder: Recorder,
) -> float:
    """Runs invoice indexes 0..count-1 on `clients` threads; returns wall-clock seconds.
    An exception in one invoice is recorded as a failure; the client goes on."""
    next_index = iter(range(count))
    index_lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            work = make_worker()
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            raise
        ready.wait()
        while True:
            with index_lock:
                index = next(next_index, None)
            if index is None:
                return
            try:
                work(index)
            except Exception as exc:
                recorder.fail(f"invoice {index}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a client failed to start: {errors[:1]}") from None
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def cli_env(database_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "INVOICETRAIL_DATABASE_URL": database_url, **(extra or {})}


def invoicetrail(database_url: str, *args: str) -> str:
    """Runs `python -m invoicetrail ARGS` and returns its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "invoicetrail", *args],
        env=cli_env(database_url),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"invoicetrail {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def create_account(database_url: str, name: str) -> tuple[str, str]:
    created = json.loads(invoicetrail(database_url, "accounts", "create", "--name", name))
    return str(created["id"]), str(created["secret_key"])


@contextmanager
def serve(database_url: str, workers: int, log_dir: Path) -> Iterator[int]:
    """`invoicetrail serve` in its own process group on a free port; yields the port."""
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    env = cli_env(
        database_url,
        {"INVOICETRAIL_SERVE_WORKERS": str(workers), "INVOICETRAIL_RATE_LIMIT_PER_SECOND": "0"},
    )
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "invoicetrail", "serve", "--host", HOST, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(process, port, log_path)
        yield port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


def wait_healthy(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS_MAX
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited early:\n{log_path.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return
            connection.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"serve did not answer /healthz in time:\n{log_path.read_text()[-3000:]}")


# --- the API load ---------------------------------------------------------------------------


class ApiClient:
    """One keep-alive connection per client thread (stdlib http.client: a light client, so
    the measurement is the server's, not the load generator's)."""

    def __init__(self, port: int, secret_key: str) -> None:
        self.port = port
        self.auth = f"Bearer {secret_key}"
        self.connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_SECONDS_MAX)

    def post(self, path: str, body: Mapping[str, Any] | None) -> tuple[int, bytes]:
        headers = {"Authorization": self.auth, "Idempotency-Key": uuid.uuid4().hex}
        payload = b""
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.connection.request("POST", path, body=payload, headers=headers)
            response = self.connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            # A dropped keep-alive connection: reconnect once; the same key makes it safe.
            self.connection.close()
            self.connection = http.client.HTTPConnection(
                HOST, self.port, timeout=REQUEST_SECONDS_MAX
            )
            self.connection.request("POST", path, body=payload, headers=headers)
            response = self.connection.getresponse()
            return response.status, response.read()


def api_worker(
    port: int, secret_key: str, customer_id: str, tag: str, recorder: Recorder
) -> Callable[[], Callable[[int], None]]:
    def make() -> Callable[[int], None]:
        client = ApiClient(port, secret_key)

        def one_invoice(index: int) -> None:
            body = {
                "customer": customer_id,
                "currency": "eur",
                "external_reference": f"{tag}-{index}",
                "lines": list(LINES),
            }
            started = time.perf_counter()
            status, content = client.post("/v1/invoices", body)
            created_at = time.perf_counter()
            recorder.add("create", created_at - started)
            if status != 200:
                recorder.fail(f"create {status}: {content[:200]!r}")
                return
            invoice_id = json.loads(content)["id"]
            status, content = client.post(f"/v1/invoices/{invoice_id}/finalize", None)
            finalized_at = time.perf_counter()
            if status != 200:
                recorder.fail(f"finalize {status}: {content[:200]!r}")
                return
            recorder.add("finalize", finalized_at - created_at)

        return one_invoice

    return make


def run_api(
    label: str,
    database_url: str,
    *,
    workers: int,
    count: int,
    warmup: int,
    clients: int,
    log_dir: Path,
) -> tuple[Run, str]:
    """Measures the API; returns the run and the account id (for the numbering check)."""
    account_id, secret_key = create_account(database_url, f"bench {label}")
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    with serve(database_url, workers, log_dir) as port:
        client = ApiClient(port, secret_key)
        status, content = client.post(
            "/v1/customers", {"name": "Bench Buyer GmbH", "address": {"country": "DE"}}
        )
        if status != 200:
            raise RuntimeError(f"customer create failed: {status} {content[:300]!r}")
        customer_id = json.loads(content)["id"]
        # Warm-up (not measured): connection pools, lazy imports, PostgreSQL caches. Its
        # failures still count: every request must succeed.
        recorder = Recorder()
        worker = api_worker(port, secret_key, customer_id, f"{tag}-w", recorder)
        drive(clients, warmup, worker, recorder)
        recorder.latencies.clear()
        worker = api_worker(port, secret_key, customer_id, tag, recorder)
        seconds = drive(clients, count, worker, recorder)
    return Run(label, count, seconds, recorder, written=warmup + count), account_id


# --- the baseline ---------------------------------------------------------------------------


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Dialect:
    """What differs between the PostgreSQL (psycopg) and SQLite (sqlite3) baselines."""

    name: str

    def connect(self) -> Any:
        raise NotImplementedError

    def begin(self, connection: Any) -> Cursor:
        raise NotImplementedError

    def sql(self, statement: str) -> str:
        return statement

    def instant(self, value: datetime) -> Any:
        return value


class PostgresDialect(Dialect):
    name = "postgresql"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def connect(self) -> Any:
        return psycopg.connect(self.dsn)

    def begin(self, connection: Any) -> Cursor:
        cursor: Cursor = connection.cursor()
        return cursor  # psycopg opens the transaction at the first statement


class SqliteDialect(Dialect):
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> Any:
        # The app's settings: WAL, synchronous=NORMAL, a long busy timeout, BEGIN IMMEDIATE.
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    def begin(self, connection: Any) -> Cursor:
        cursor: Cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        return cursor

    def sql(self, statement: str) -> str:
        return statement.replace("%s", "?").replace(" FOR UPDATE", "")

    def instant(self, value: datetime) -> Any:
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


@dataclass(frozen=True)
class BaselineAccount:
    account_id: str
    legal_entity_id: str
    customer_id: str


def short_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:26]}"


def invoice_json(invoice_id: str, account: BaselineAccount, **fields: Any) -> str:
    """A response/event body the size of the API's invoice object."""
    lines = [
        {"id": short_id("il"), "object": "line_item", **line, "amount": 2100, "tax": 399}
        for line in LINES
    ]
    return json.dumps(
        {
            "id": invoice_id,
            "object": "invoice",
            "status": "draft",
            "number": None,
            "customer": account.customer_id,
            "legal_entity": account.legal_entity_id,
            "currency": "eur",
            "lines": lines,
            "subtotal": 5599,
            "tax": 609,
            "total": 6208,
            "amount_paid": 0,
            "amount_remaining": 6208,
            "metadata": {},
            **fields,
        }
    )


def baseline_setup(dialect: Dialect, account_id: str) -> BaselineAccount:
    connection = dialect.connect()
    try:
        cursor = dialect.begin(connection)
        cursor.execute(
            dialect.sql("SELECT id FROM legal_entities WHERE account_id = %s AND is_default"),
            (account_id,),
        )
        legal_entity_id = str(cursor.fetchone()[0])
        customer_id = short_id("cus")
        cursor.execute(
            dialect.sql(
                "INSERT INTO customers (id, account_id, name, address, tax_ids, metadata, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ),
            (
                customer_id,
                account_id,
                "Bench Buyer GmbH",
                '{"country": "DE"}',
                "[]",
                "{}",
                dialect.instant(datetime.now(UTC)),
            ),
        )
        cursor.execute(
            dialect.sql(
                "INSERT INTO number_sequences (legal_entity_id, kind, last_value) "
                "VALUES (%s, 'invoice', 0)"
            ),
            (legal_entity_id,),
        )
        connection.commit()
    finally:
        connection.close()
    return BaselineAccount(account_id, legal_entity_id, customer_id)


def baseline_worker(
    dialect: Dialect, account: BaselineAccount, tag: str, recorder: Recorder
) -> Callable[[], Callable[[int], None]]:
    sql = dialect.sql
    insert_key = sql(
        "INSERT INTO idempotency_keys (account_id, key, fingerprint, method, path, request_id, "
        "status_code, response_body, created_at, expires_at) "
        "VALUES (%s, %s, %s, 'POST', %s, %s, 200, %s, %s, %s)"
    )
    insert_event = sql(
        "INSERT INTO events (id, account_id, type, object_id, data_json, request_id, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)"
    )
    insert_log = sql(
        "INSERT INTO request_log (request_id, account_id, idempotency_key, method, path, "
        "status_code, object_id, actor, created_at) "
        "VALUES (%s, %s, %s, 'POST', %s, 200, %s, 'api_key:bench', %s)"
    )
    insert_invoice = sql(
        "INSERT INTO invoices (id, account_id, legal_entity_id, customer_id, status, currency, "
        "collection_method, external_reference, metadata, subtotal_minor, tax_minor, "
        "total_minor, amount_paid_minor, created_at, request_id) "
        "VALUES (%s, %s, %s, %s, 'draft', 'eur', 'charge_automatically', %s, '{}', "
        "5599, 609, 6208, 0, %s, %s)"
    )
    insert_line = sql(
        "INSERT INTO invoice_lines (id, invoice_id, position, description, quantity, "
        "unit_amount_minor, tax_rate, tax_category, amount_minor, tax_minor) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    lock_invoice = sql(
        "SELECT status, total_minor FROM invoices WHERE id = %s AND account_id = %s FOR UPDATE"
    )
    lock_sequence = sql(
        "SELECT last_value FROM number_sequences "
        "WHERE legal_entity_id = %s AND kind = 'invoice' FOR UPDATE"
    )
    update_sequence = sql(
        "UPDATE number_sequences SET last_value = %s "
        "WHERE legal_entity_id = %s AND kind = 'invoice'"
    )
    update_invoice = sql(
        "UPDATE invoices SET status = 'open', number = %s, bank_transfer_reference = %s, "
        "finalized_at = %s WHERE id = %s"
    )

    def write_common(
        cursor: Cursor, path: str, object_id: str, body: str, event_type: str, now: datetime
    ) -> None:
        key, request_id = uuid.uuid4().hex, short_id("req")
        at, expires = dialect.instant(now), dialect.instant(now + timedelta(days=30))
        fingerprint = secrets.token_hex(32)
        cursor.execute(
            insert_key,
            (account.account_id, key, fingerprint, path, request_id, body.encode(), at, expires),
        )
        cursor.execute(
            insert_event,
            (short_id("evt"), account.account_id, event_type, object_id, body, request_id, at),
        )
        cursor.execute(insert_log, (request_id, account.account_id, key, path, object_id, at))

    def make() -> Callable[[int], None]:
        connection = dialect.connect()

        def one_invoice(index: int) -> None:
            invoice_id = short_id("in")
            started = time.perf_counter()
            now = datetime.now(UTC)
            cursor = dialect.begin(connection)
            cursor.execute(
                insert_invoice,
                (
                    invoice_id,
                    account.account_id,
                    account.legal_entity_id,
                    account.customer_id,
                    f"{tag}-{index}",
                    dialect.instant(now),
                    short_id("req"),
                ),
            )
            cursor.executemany(
                insert_line,
                [
                    (
                        short_id("il"),
                        invoice_id,
                        position,
                        line["description"],
                        line["quantity"],
                        line["unit_amount"],
                        line["tax_rate"],
                        "S",
                        2100,
                        399,
                    )
                    for position, line in enumerate(LINES)
                ],
            )
            body = invoice_json(invoice_id, account)
            write_common(cursor, "/v1/invoices", invoice_id, body, "invoice.created", now)
            connection.commit()
            created_at = time.perf_counter()

            now = datetime.now(UTC)
            cursor = dialect.begin(connection)
            cursor.execute(lock_invoice, (invoice_id, account.account_id))
            if cursor.fetchone()[0] != "draft":
                recorder.fail(f"baseline finalize of a non-draft {invoice_id}")
            cursor.execute(lock_sequence, (account.legal_entity_id,))
            counter = int(cursor.fetchone()[0]) + 1
            cursor.execute(update_sequence, (counter, account.legal_entity_id))
            number = f"INV-{now.year:04d}-{counter:06d}"
            reference = secrets.token_hex(6).upper()
            cursor.execute(update_invoice, (number, reference, dialect.instant(now), invoice_id))
            body = invoice_json(invoice_id, account, status="open", number=number)
            path = f"/v1/invoices/{invoice_id}/finalize"
            write_common(cursor, path, invoice_id, body, "invoice.finalized", now)
            connection.commit()
            finalized_at = time.perf_counter()
            recorder.add("create", created_at - started)
            recorder.add("finalize", finalized_at - created_at)

        return one_invoice

    return make


def run_baseline(
    dialect: Dialect, account_id: str, *, count: int, warmup: int, clients: int
) -> Run:
    account = baseline_setup(dialect, account_id)
    tag = f"baseline-{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    drive(clients, warmup, baseline_worker(dialect, account, f"{tag}-w", recorder), recorder)
    recorder.latencies.clear()
    seconds = drive(clients, count, baseline_worker(dialect, account, tag, recorder), recorder)
    return Run(f"{dialect.name} baseline", count, seconds, recorder, written=warmup + count)


# --- checks ---------------------------------------------------------------------------------


def numbering_problems(dialect: Dialect, account_id: str, expected_count: int) -> list[str]:
    """Numbers of the account's invoices must be unique and exactly 1..expected_count."""
    connection = dialect.connect()
    try:
        cursor = dialect.begin(connection)
        cursor.execute(
            dialect.sql("SELECT number, status FROM invoices WHERE account_id = %s"),
            (account_id,),
        )
        rows = list(cursor.fetchall())
        connection.rollback()
    finally:
        connection.close()
    problems = []
    drafts = [number for number, status in rows if status == "draft"]
    if drafts:
        problems.append(f"{len(drafts)} invoices left in draft")
    counters: list[int] = []
    for number, _status in rows:
        match = NUMBER_PATTERN.match(number or "")
        if match is not None:
            counters.append(int(match.group(3)))
    if len(counters) != len(set(counters)):
        problems.append(f"{len(counters) - len(set(counters))} duplicate numbers")
    if sorted(counters) != list(range(1, expected_count + 1)):
        problems.append(
            f"numbers are not exactly 1..{expected_count} "
            f"(got {len(counters)}, max {max(counters, default=0)})"
        )
    return problems


# --- reporting ------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    size: int
    api: Run
    baseline: Run
    problems: list[str]
    target_applies: bool

    @property
    def ratio(self) -> float:
        return self.api.rate / self.baseline.rate if self.baseline.rate > 0 else 0.0

    @property
    def met(self) -> bool:
        return (
            not self.problems
            and not self.api.recorder.failures
            and self.api.rate >= TARGET_RATE
            and self.ratio >= TARGET_RATIO
        )

    def table_row(self) -> str:
        target = TARGET_TEXT if self.target_applies else "— (reported only)"
        met = ("yes" if self.met else "no") if self.target_applies else "—"
        return (
            f"| {BENCH} | {self.backend} | {self.size:,} invoices | "
            f"{self.api.rate:,.0f} invoices/s | {self.baseline.rate:,.0f} invoices/s | "
            f"{self.ratio:.2f} | {target} | {met} |"
        )

    def details(self) -> list[str]:
        failures = self.api.recorder.failures
        return [
            f"- **{self.backend}**, {self.size:,} invoices: API {self.api.rate:,.1f} invoices/s "
            f"in {self.api.seconds:.1f} s ({self.api.latency_text()}); baseline "
            f"{self.baseline.rate:,.1f} invoices/s ({self.baseline.latency_text()}); "
            f"failed requests: {len(failures)}; numbering: "
            + ("; ".join(self.problems) if self.problems else "unique and gapless"),
        ]


def print_row(row: Row, clients: int) -> None:
    print(f"\n{BENCH} · {row.backend} · {row.size:,} invoices · {clients} clients")
    for run in (row.api, row.baseline):
        print(f"  {run.label:<22} {run.rate:>9,.1f} invoices/s  wall {run.seconds:6.1f} s")
        print(f"  {'':<22} {run.latency_text()}")
    print(f"  ratio ours ÷ baseline  {row.ratio:.2f}")
    failures = row.api.recorder.failures
    example = f"  e.g. {failures[0]}" if failures else ""
    print(f"  failed requests        {len(failures)}{example}")
    print("  numbering              " + ("; ".join(row.problems) or "unique and gapless"))
    if row.target_applies:
        print(f"  target                 {TARGET_TEXT}: {'met' if row.met else 'NOT met'}")


def write_results(rows: Sequence[Row], clients: int, path: Path = RESULTS_PATH) -> None:
    """Replaces this bench's rows in the first table (keeping other benches' rows) and its
    details block; creates the file when missing."""
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    mine = [row.table_row() for row in rows]
    if TABLE_HEADER in lines:
        start = lines.index(TABLE_HEADER)
        end = start + 2
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        others = [line for line in lines[start + 2 : end] if not line.startswith(f"| {BENCH} |")]
        lines[start:end] = [TABLE_HEADER, TABLE_RULE, *mine, *others]
    else:
        lines = [
            "# Benchmark results",
            "",
            "Written by `bench/*.py` (`make bench`); ratio = ours ÷ same-run baseline.",
            "",
            TABLE_HEADER,
            TABLE_RULE,
            *mine,
            *([""] if lines else []),
            *lines,
        ]
    details = [
        DETAILS_BEGIN,
        f"### {BENCH}",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs, {clients} "
        "clients, each invoice a create (3 lines, unique external_reference) then a finalize. "
        "PostgreSQL: `serve` with INVOICETRAIL_SERVE_WORKERS=2; SQLite: one serve process. "
        "Baseline: the same number of threads doing, per API write, one transaction with the "
        "same rows (idempotency row, invoice + 3 lines or locked invoice + locked number "
        "sequence, event, request-log row).",
        "",
        *[line for row in rows for line in row.details()],
        DETAILS_END,
    ]
    if DETAILS_BEGIN in lines and DETAILS_END in lines:
        lines[lines.index(DETAILS_BEGIN) : lines.index(DETAILS_END) + 1] = details
    else:
        lines += ["", *details]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


# --- backends -------------------------------------------------------------------------------


def prepare_postgres(admin_dsn: str, database: str) -> tuple[str, str]:
    """Creates or empties the bench database and migrates it; returns (URL, psycopg DSN)."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            admin.execute(f'CREATE DATABASE "{database}"')
    info = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    info["dbname"] = database
    dsn = psycopg.conninfo.make_conninfo("", **info)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    user = info.get("user", "postgres")
    password = f":{info['password']}" if info.get("password") else ""
    url = (
        f"postgresql+psycopg://{user}{password}@{info.get('host', '127.0.0.1')}:"
        f"{info.get('port', '5432')}/{database}"
    )
    invoicetrail(url, "migrate")
    return url, dsn


def bench_backend(
    dialect: Dialect,
    database_url: str,
    *,
    workers: int,
    count: int,
    clients: int,
    log_dir: Path,
    target_applies: bool,
) -> Row:
    warmup = min(count, 4 * clients)
    api, api_account = run_api(
        f"{dialect.name} API",
        database_url,
        workers=workers,
        count=count,
        warmup=warmup,
        clients=clients,
        log_dir=log_dir,
    )
    baseline_account, _key = create_account(database_url, f"bench {dialect.name} baseline")
    baseline = run_baseline(dialect, baseline_account, count=count, warmup=warmup, clients=clients)
    problems = numbering_problems(dialect, api_account, api.written)
    problems += [
        f"baseline: {problem}"
        for problem in numbering_problems(dialect, baseline_account, baseline.written)
    ]
    return Row(dialect.name, count, api, baseline, problems, target_applies)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=None, help="PostgreSQL (default 3000)")
    parser.add_argument("--sqlite-invoices", type=int, default=None, help="SQLite (default 500)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--quick", action="store_true", help="small sizes (300 PG, 100 SQLite)")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    parser.add_argument("--pg-database", default=PG_DATABASE)
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    pg_count = args.invoices or (300 if args.quick else 3000)
    sqlite_count = args.sqlite_invoices or (100 if args.quick else 500)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="invoicetrail-bench-") as scratch:
        scratch_dir = Path(scratch)
        pg_url, pg_dsn = prepare_postgres(args.pg_admin_dsn, args.pg_database)
        rows.append(
            bench_backend(
                PostgresDialect(pg_dsn),
                pg_url,
                workers=2,
                count=pg_count,
                clients=args.clients,
                log_dir=scratch_dir,
                target_applies=True,
            )
        )
        print_row(rows[-1], args.clients)
        if not args.skip_sqlite:
            sqlite_path = scratch_dir / "bench.db"
            sqlite_url = f"sqlite:///{sqlite_path}"
            invoicetrail(sqlite_url, "migrate")
            rows.append(
                bench_backend(
                    SqliteDialect(str(sqlite_path)),
                    sqlite_url,
                    workers=1,
                    count=sqlite_count,
                    clients=args.clients,
                    log_dir=scratch_dir,
                    target_applies=False,
                )
            )
            print_row(rows[-1], args.clients)
    if not args.no_write:
        write_results(rows, args.clients, args.results)
        print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
