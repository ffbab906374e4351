"""Reliability suite, item 2: PostgreSQL goes away mid-load and comes back.

A real `invoicetrail serve` and a real `invoicetrail worker` reach PostgreSQL only through a
TCP proxy this module owns (the shared server is never touched). Cutting the proxy closes
every open connection, as a crashed or `pg_ctl stop -m immediate`-ed server does to its
clients, and then either

- refuses new connections (RST: the server is down, the port answers), or
- accepts them and never answers (blackhole: the host is gone; this is the case that finds
  hangs, since only the connect timeout ends the wait).

While cut, every API answer is 2xx or `503 storage_unavailable` with `retryable: true`,
within a bound derived from the pool and connect timeouts (never a 500, never a client
timeout); `/readyz` answers 503 and `/healthz` 200. After the restore the same processes
recover without a restart; every write that got a 503 is retried with its Idempotency-Key,
and then every write exists exactly once, with the id its 2xx answer named. The worker
survives the outage and delivers every event of every invoice afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg
import pytest

from conftest import PG_ADMIN_DSN, PG_TEST_DB, prepare_postgres_database
from invoicetrail.accounts import service as accounts
from invoicetrail.core.clock import SystemClock
from invoicetrail.core.config import Settings
from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
from reliability import scaled
from servers import HOST, Server, running_server

pytestmark = pytest.mark.postgres_only

# The server under test: a small pool and the shortest timeouts, so an outage shows quickly.
POOL_SIZE = 4
POOL_TIMEOUT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 2  # libpq's floor
# The longest a request may take while the database is gone: a wait for a pooled
# connection, then one connect attempt that times out; the rest is scheduling slack.
ANSWER_SECONDS_MAX = POOL_TIMEOUT_SECONDS + CONNECT_TIMEOUT_SECONDS + 5.0
# How long a cut lasts: a blackhole until every connect started before it has timed out,
# so the outage is seen at steady state, not only at its edge; a refusal shows at once.
HOLD_SECONDS = {"refuse": 2.0, "blackhole": POOL_TIMEOUT_SECONDS + CONNECT_TIMEOUT_SECONDS + 1.0}
RECOVER_SECONDS_MAX = ANSWER_SECONDS_MAX + 5.0
RETRY_SECONDS_MAX = 20.0
DELIVERY_SECONDS_MAX = 30.0
WORKER_STARTUP_SECONDS_MAX = 30.0
LOAD_THREADS = 4
LOAD_PAUSE_SECONDS = 0.05  # between one thread's writes: a steady load, not a flood
BACKOFF_SECONDS = 0.25  # after a 503, as a client that honours `retryable` backs off
# Cut/restore cycles, alternating refuse and blackhole.
CYCLES = scaled(2, 6)

Mode = Literal["open", "refuse", "blackhole"]


# --- the proxy ----------------------------------------------------------------------------


class OutageProxy:
    """127.0.0.1:<port> → PostgreSQL, with a switch that takes the database away."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode: Mode = "open"
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._listener = socket.create_server((HOST, 0), backlog=256)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                mode = self.mode
                if mode == "blackhole":
                    self._held.append(client)  # accepted, never read, never answered
                    continue
            if mode == "refuse":
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._live.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._live.discard(source)
                self._live.discard(target)
            _close(source)
            _close(target)

    def cut(self, mode: Literal["refuse", "blackhole"]) -> None:
        """Every open connection is reset; new ones are refused or left unanswered."""
        with self._lock:
            self.mode = mode
            live = list(self._live)
            self._live.clear()
        for sock in live:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self.mode = "open"
            held, self._held = self._held, []
        for sock in held:
            _reset(sock)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self.cut("refuse")
        self.restore()


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0), as a dead server's kernel answers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --- a webhook subscriber: which events reached it ---------------------------------------


class HookReceiver:
    def __init__(self) -> None:
        self.event_ids: Counter[str] = Counter()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                with receiver._lock:
                    receiver.event_ids[self.headers.get("webhook-id", "")] += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/hooks"

    def received(self) -> set[str]:
        with self._lock:
            return set(self.event_ids)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- the worker process ---------------------------------------------------------------------


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


def start_worker(database_url: str, env: dict[str, str], log_dir: Path) -> WorkerProcess:
    fd, name = tempfile.mkstemp(prefix="invoicetrail-worker-", suffix=".log", dir=log_dir)
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "invoicetrail", "worker"],
            env={**os.environ, **env, "INVOICETRAIL_DATABASE_URL": database_url},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(process, Path(name))
    deadline = time.monotonic() + WORKER_STARTUP_SECONDS_MAX
    while "worker started" not in worker.log():
        if process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"invoicetrail worker did not start:\n{worker.log()[-4000:]}")
        time.sleep(0.05)
    return worker


# --- the load -------------------------------------------------------------------------------


@dataclass
class Answer:
    key: str
    started: float
    seconds: float
    status: int | None  # None: no HTTP answer (see `failure`)
    body: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def post_invoice(client: httpx.Client, secret_key: str, key: str, body: dict[str, Any]) -> Answer:
    started = time.monotonic()
    try:
        response = client.post(
            "/v1/invoices",
            json=body,
            headers={"Authorization": f"Bearer {secret_key}", "Idempotency-Key": key},
        )
    except httpx.HTTPError as exc:  # a timeout above all: the bound was broken
        return Answer(key, started, time.monotonic() - started, None, failure=repr(exc))
    try:
        parsed = response.json()
    except ValueError:
        parsed = {"unparsed": response.text[:500]}
    return Answer(
        key,
        started,
        time.monotonic() - started,
        response.status_code,
        parsed if isinstance(parsed, dict) else {"unparsed": parsed},
        response.headers.get("Idempotent-Replayed") == "true",
    )


def invoice_body(customer_id: str, key: str) -> dict[str, Any]:
    return {
        "customer": customer_id,
        "currency": "eur",
        "metadata": {"op": key},
        "lines": [
            {"description": "Widget", "quantity": "1", "unit_amount": 1000, "tax_rate": "19"}
        ],
    }


@dataclass
class Load:
    """Threads creating invoices, each with a fresh Idempotency-Key, until stopped."""

    base_url: str
    secret_key: str
    customer_id: str
    answers: list[Answer] = field(default_factory=list)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(LOAD_THREADS):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=ANSWER_SECONDS_MAX) as client:
            while not self._stop.is_set():
                key = f"outage-{n}-{uuid.uuid4().hex[:12]}"
                body = invoice_body(self.customer_id, key)
                with self._lock:
                    self.bodies[key] = body
                answer = post_invoice(client, self.secret_key, key, body)
                with self._lock:
                    self.answers.append(answer)
                self._stop.wait(LOAD_PAUSE_SECONDS if answer.ok else BACKOFF_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(ANSWER_SECONDS_MAX + 5)
            assert not thread.is_alive(), "a load thread is stuck"

    def since(self, started: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.started >= started]


# --- helpers --------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Polls `condition`; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def assert_storage_unavailable(answer: Answer) -> None:
    error = answer.body.get("error", {})
    assert error.get("code") == "storage_unavailable", (answer.status, answer.body)
    assert error.get("retryable") is True, answer.body


def direct_dsn(database: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items()})


# --- the test -------------------------------------------------------------------------------


@dataclass
class Figures:
    seconds_to_503: dict[str, list[float]] = field(default_factory=dict)
    seconds_to_recover: dict[str, list[float]] = field(default_factory=dict)

    def add(self, mode: str, to_503: float, to_recover: float) -> None:
        self.seconds_to_503.setdefault(mode, []).append(round(to_503, 2))
        self.seconds_to_recover.setdefault(mode, []).append(round(to_recover, 2))


@pytest.fixture(scope="module")
def outage_db() -> tuple[str, str]:
    """(direct SQLAlchemy URL, database name), migrated, with nothing in it."""
    database = PG_TEST_DB + "_outage"
    return prepare_postgres_database(database), database


@pytest.fixture
def proxy() -> Iterator[OutageProxy]:
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    upstream = (str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432))))
    outage_proxy = OutageProxy(upstream)
    try:
        yield outage_proxy
    finally:
        outage_proxy.close()


def test_database_outage_mid_load(
    outage_db: tuple[str, str], proxy: OutageProxy, tmp_path: Path
) -> None:
    direct_url, database = outage_db
    engine = make_engine(Settings(database_url=direct_url))
    with write_transaction(make_sessionmaker(engine)) as session:
        created = accounts.create_account(
            session, name="Outage", country="DE", now=SystemClock().now()
        )
        session.commit()
    engine.dispose()
    account_id, secret_key = created.account.id, created.secret_key

    user = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN).get("user", "postgres")
    proxied_url = f"postgresql+psycopg://{user}@{HOST}:{proxy.port}/{database}"
    env = {
        "INVOICETRAIL_DB_POOL_SIZE": str(POOL_SIZE),
        "INVOICETRAIL_DB_POOL_TIMEOUT_SECONDS": str(POOL_TIMEOUT_SECONDS),
        "INVOICETRAIL_DB_CONNECT_TIMEOUT_SECONDS": str(CONNECT_TIMEOUT_SECONDS),
        "INVOICETRAIL_ALLOW_PRIVATE_WEBHOOK_TARGETS": "true",
        "INVOICETRAIL_MAIL_DIR": str(tmp_path / "mail"),
    }
    worker_env = {
        **env,
        "INVOICETRAIL_WORKER_POLL_INTERVAL_SECONDS": "0.1",
        "INVOICETRAIL_WEBHOOK_LEASE_SECONDS": "5",
        "INVOICETRAIL_RECONCILE_DAILY": "false",
    }
    receiver = HookReceiver()
    worker: WorkerProcess | None = None
    try:
        with running_server(proxied_url, env=env, log_dir=tmp_path) as server:
            worker = start_worker(proxied_url, worker_env, tmp_path)
            figures = run_outages(
                server, worker, proxy, receiver, direct_dsn(database), account_id, secret_key
            )
            server_log = server.log_path.read_text(errors="replace")
            assert server.process.poll() is None, "the server exited"
            # One process served the whole run: uvicorn started exactly once, this PID.
            assert re.findall(r"Started server process \[(\d+)\]", server_log) == [
                str(server.process.pid)
            ], server_log[-4000:]
            assert "unhandled error" not in server_log, server_log[-4000:]
        worker_log = worker.log()
        assert worker.process.poll() is None, f"the worker exited:\n{worker_log[-4000:]}"
        # It did meet the outage (and logged it), and lived on.
        assert "worker pass failed" in worker_log, worker_log[-4000:]
    finally:
        if worker is not None:
            worker.stop()
        receiver.stop()
    print(f"\noutage figures: {json.dumps(figures.__dict__)}")


def run_outages(
    server: Server,
    worker: WorkerProcess,
    proxy: OutageProxy,
    receiver: HookReceiver,
    dsn: str,
    account_id: str,
    secret_key: str,
) -> Figures:
    auth = {"Authorization": f"Bearer {secret_key}"}
    # A connection per probe: the probe idles through a cut for as long as uvicorn keeps an
    # idle connection (5 s), and a request racing that close fails with no answer at all.
    probe = httpx.Client(
        base_url=server.base_url,
        timeout=ANSWER_SECONDS_MAX,
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    figures = Figures()
    endpoint = probe.post(
        "/v1/webhook_endpoints",
        json={"url": receiver.url, "events": ["invoice.created"]},
        headers={**auth, "Idempotency-Key": "outage-endpoint"},
    )
    assert endpoint.status_code == 200, endpoint.text
    customer = probe.post(
        "/v1/customers",
        json={"name": "Buyer GmbH", "address": {"country": "DE"}},
        headers={**auth, "Idempotency-Key": "outage-customer"},
    )
    assert customer.status_code == 200, customer.text
    load = Load(server.base_url, secret_key, customer.json()["id"])

    load.start()
    try:
        for cycle in range(CYCLES):
            mode: Literal["refuse", "blackhole"] = "refuse" if cycle % 2 == 0 else "blackhole"
            figures.add(mode, *one_outage(mode, proxy, load, probe, server, worker))
    finally:
        load.stop()
        probe.close()

    answers = load.since(0.0)
    broken = [a for a in answers if not (a.ok or a.status == 503)]
    assert not broken, broken[:5]  # no 500, no other status, no client timeout
    unavailable = [a for a in answers if a.status == 503]
    for answer in unavailable:
        assert_storage_unavailable(answer)
    assert unavailable, "no request met the outage"
    assert max(a.seconds for a in answers) < ANSWER_SECONDS_MAX

    # Every 503 retried with its key: a fresh write, or the replay of one that committed.
    acknowledged: dict[str, str] = {a.key: a.body["id"] for a in answers if a.ok}
    replays = 0
    with httpx.Client(base_url=server.base_url, timeout=ANSWER_SECONDS_MAX) as client:
        for answer in unavailable:
            deadline = time.monotonic() + RETRY_SECONDS_MAX
            while True:
                retry = post_invoice(client, secret_key, answer.key, load.bodies[answer.key])
                if retry.ok:
                    break
                # The lost connection's server session may hold the key a moment longer.
                in_use = retry.body.get("error", {}).get("code") == "idempotency_key_in_use"
                assert in_use and time.monotonic() < deadline, (retry.status, retry.body)
                time.sleep(0.1)
            replays += retry.replayed
            acknowledged[answer.key] = retry.body["id"]

    # Exactly one invoice per key, the one its 2xx answer named; nothing else.
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT id, metadata->>'op' FROM invoices WHERE account_id = %s", (account_id,)
        ).fetchall()
        keys_stored = conn.execute(
            "SELECT count(*) FROM idempotency_keys WHERE account_id = %s", (account_id,)
        ).fetchone()
        created_events: dict[str, str] = dict(
            conn.execute(
                "SELECT object_id, id FROM events WHERE account_id = %s AND type = %s",
                (account_id, "invoice.created"),
            ).fetchall()
        )
    per_key = Counter(op for _, op in rows)
    assert [k for k, n in per_key.items() if n > 1] == []
    assert {op: invoice_id for invoice_id, op in rows} == acknowledged
    assert keys_stored is not None and keys_stored[0] == len(acknowledged) + 2
    assert set(created_events) == set(acknowledged.values())

    # The worker lived through it: every invoice's event reaches the subscriber.
    wanted = set(created_events.values())
    wait_for(
        lambda: wanted <= receiver.received(),
        DELIVERY_SECONDS_MAX,
        f"delivery of every invoice.created event ({len(wanted)}) after the outages",
    )
    print(
        f"\n{len(answers)} writes, {len(unavailable)} answered 503, {replays} of them had "
        f"committed (replayed on retry); slowest answer {max(a.seconds for a in answers):.2f} s"
    )
    return figures


def one_outage(
    mode: Literal["refuse", "blackhole"],
    proxy: OutageProxy,
    load: Load,
    probe: httpx.Client,
    server: Server,
    worker: WorkerProcess,
) -> tuple[float, float]:
    """Cut, check the outage is answered as one, restore, wait for recovery.

    Returns (seconds from the cut to a 503 from /readyz, seconds from the restore to a
    200 from /readyz and a fresh 2xx write)."""

    def ready_status() -> int:
        return probe.get("/readyz").status_code

    warm = time.monotonic()
    wait_for(
        lambda: sum(a.ok for a in load.since(warm)) >= 10,
        RECOVER_SECONDS_MAX,
        "the load is flowing",
    )
    cut_at = time.monotonic()
    proxy.cut(mode)
    seconds_to_503 = wait_for(lambda: ready_status() == 503, ANSWER_SECONDS_MAX, "/readyz 503")
    ready = probe.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["error"]["code"] == "storage_unavailable"
    assert ready.json()["error"]["retryable"] is True
    health = probe.get("/healthz", timeout=2.0)
    assert health.status_code == 200, health.text
    wait_for(
        lambda: (
            any(a.status == 503 for a in load.since(cut_at))
            and time.monotonic() - cut_at >= HOLD_SECONDS[mode]
        ),
        HOLD_SECONDS[mode] + ANSWER_SECONDS_MAX,
        f"the load meets the {mode} outage",
    )
    assert ready_status() == 503
    assert server.process.poll() is None, server.log_tail()
    assert worker.process.poll() is None, worker.log()[-4000:]
    restored_at = time.monotonic()
    proxy.restore()
    seconds_to_recover = wait_for(
        lambda: ready_status() == 200 and any(a.ok for a in load.since(restored_at)),
        RECOVER_SECONDS_MAX,
        f"recovery after the {mode} outage",
    )
    return seconds_to_503, seconds_to_recover
