"""Real `invoicetrail worker` processes delivering 1,000 events to two endpoints on PostgreSQL.

Two workers at once: every event reaches every endpoint exactly once, each endpoint sees its
first deliveries in event creation order and never two at a time. Then a worker is SIGKILLed
while a delivery is in flight (from inside the receiver, so "mid-batch" is certain): a
replacement and the survivor deliver everything; only the in-flight event may arrive twice.

The receiver is the verifying one of test_webhook_deliveries; it counts `webhook-id`s per path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text
from starlette.testclient import TestClient

from conftest import (
    PG_ADMIN_DSN,
    PG_TEST_DB,
    Api,
    create_account,
    make_settings,
    prepare_postgres_database,
)
from invoicetrail.api import create_app
from invoicetrail.core.clock import SystemClock
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
from invoicetrail.core.http import AppState
from invoicetrail.core.ids import new_id
from invoicetrail.customers import service as customers
from invoicetrail.customers.schemas import CustomerCreate
from invoicetrail.webhooks.delivery import deliver_due, fan_out
from test_webhook_deliveries import Received, Receiver

pytestmark = pytest.mark.postgres_only

EVENTS = 1000
KILL_EVENTS = 300  # the crash run is smaller: the file must stay well under a minute
BATCH = 50  # customers per transaction
STARTUP_SECONDS_MAX = 30.0
DRAIN_SECONDS_MAX = 45.0
KILL_AFTER = 100  # first deliveries to /c before the kill
DUPLICATES_MAX = 3  # per endpoint, after one SIGKILL


# --- worker processes -------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


def spawn_worker(database_url: str, log_dir: Path, *, lease_seconds: int) -> WorkerProcess:
    """`invoicetrail worker` in its own process group (see `wait_started`)."""
    env = {
        **os.environ,
        "INVOICETRAIL_DATABASE_URL": database_url,
        "INVOICETRAIL_ALLOW_PRIVATE_WEBHOOK_TARGETS": "true",
        "INVOICETRAIL_WEBHOOK_LEASE_SECONDS": str(lease_seconds),
        "INVOICETRAIL_WORKER_POLL_INTERVAL_SECONDS": "0.05",
        "INVOICETRAIL_RECONCILE_DAILY": "false",
        "INVOICETRAIL_DB_POOL_SIZE": "4",
    }
    fd, name = tempfile.mkstemp(prefix="invoicetrail-worker-", suffix=".log", dir=log_dir)
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "invoicetrail", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return WorkerProcess(process, Path(name))


def wait_started(worker: WorkerProcess) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS_MAX
    while "worker started" not in worker.log_path.read_text(errors="replace"):
        if worker.process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"invoicetrail worker did not start:\n{worker.log_tail()}")
        time.sleep(0.05)


# --- set-up -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers_db() -> str:
    url = prepare_postgres_database(PG_TEST_DB + "_workers")
    # Workers are killed here, never the database server: commit durability is not under
    # test, and asynchronous commits keep the file well under a minute on a busy machine.
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{PG_TEST_DB}_workers" SET synchronous_commit = off')
    return url


@dataclass
class Bench:
    database_url: str
    api: Api
    state: AppState
    receiver: Receiver
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def endpoint(self, path: str, events: list[str]) -> dict[str, Any]:
        endpoint = self.api.ok(
            self.api.post(
                "/v1/webhook_endpoints", {"url": self.receiver.url(path), "events": events}
            )
        )
        self.receiver.expect(path, "secret", endpoint["secret"])
        return endpoint

    def start_workers(self, count: int, *, lease_seconds: int) -> list[WorkerProcess]:
        """Starts `count` worker processes side by side; returns once all are polling."""
        spawned = [
            spawn_worker(self.database_url, self.log_dir, lease_seconds=lease_seconds)
            for _ in range(count)
        ]
        self.workers.extend(spawned)
        for worker in spawned:
            wait_started(worker)
        return spawned

    def create_customers(self, count: int) -> list[str]:
        """`customer.created` events written through the service (the API path is tested
        elsewhere), `BATCH` per transaction; returns the event ids in creation order."""
        settings = self.state.settings
        customer_ids: list[str] = []
        for start in range(0, count, BATCH):
            with write_transaction(self.state.sessions) as session:
                ctx = Ctx(
                    session=session,
                    account_id=self.api.account_id,
                    request_id=new_id("req"),
                    now=datetime.now(UTC),
                    settings=settings,
                )
                for index in range(start, min(start + BATCH, count)):
                    body = CustomerCreate.model_validate(
                        {"name": f"Buyer {index}", "address": {"country": "DE"}}
                    )
                    customer_ids.append(customers.create(ctx, body).id)
                session.commit()
        with self.state.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT id, object_id FROM events WHERE account_id = :a "
                    "AND type = 'customer.created' ORDER BY seq"
                ),
                {"a": self.api.account_id},
            ).all()
        by_customer = {row.object_id: row.id for row in rows}
        return [by_customer[c] for c in customer_ids]

    def pending(self, endpoint_ids: list[str]) -> int:
        with self.state.engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT COUNT(*) FROM webhook_deliveries "
                        "WHERE endpoint_id = ANY(:e) AND status <> 'succeeded'"
                    ),
                    {"e": endpoint_ids},
                ).scalar_one()
            )

    def attempts_by_worker(self, endpoint_ids: list[str]) -> dict[str, int]:
        with self.state.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT a.worker, COUNT(*) AS n FROM webhook_attempts a "
                    "JOIN webhook_deliveries d ON d.id = a.delivery_id "
                    "WHERE d.endpoint_id = ANY(:e) GROUP BY a.worker"
                ),
                {"e": endpoint_ids},
            ).all()
        return {row.worker: int(row.n) for row in rows}

    def wait_delivered(self, paths: list[str], expected: set[str], endpoint_ids: list[str]) -> None:
        """Until every path has seen every event and nothing is pending; then a few more polls
        so that a stray duplicate would still show."""
        deadline = time.monotonic() + DRAIN_SECONDS_MAX
        while True:
            seen = all(set(self.receiver.ids(p)) >= expected for p in paths)
            if seen and self.pending(endpoint_ids) == 0:
                break
            for worker in self.workers:
                code = worker.process.poll()
                assert code is None or code == -signal.SIGKILL, worker.log_tail()
            if time.monotonic() > deadline:
                counts = {p: len(set(self.receiver.ids(p)) & expected) for p in paths}
                pytest.fail(
                    f"not delivered within {DRAIN_SECONDS_MAX:.0f} s: {counts} of {len(expected)}, "
                    f"{self.pending(endpoint_ids)} pending"
                )
            time.sleep(0.1)
        time.sleep(0.5)


@pytest.fixture
def bench(workers_db: str, tmp_path: Path) -> Iterator[Bench]:
    receiver = Receiver().start()
    app = create_app(make_settings(workers_db, allow_private_webhook_targets=True, db_pool_size=4))
    state: AppState = app.state.invoicetrail
    try:
        with TestClient(app, base_url="http://testserver") as client:
            account_id, key = create_account(state)
            made = Bench(
                database_url=workers_db,
                api=Api(client=client, account_id=account_id, secret_key=key),
                state=state,
                receiver=receiver,
                log_dir=tmp_path,
            )
            try:
                yield made
            finally:
                for worker in made.workers:
                    worker.stop()
                with state.engine.begin() as connection:
                    connection.execute(
                        text(
                            "UPDATE webhook_endpoints SET status = 'disabled' WHERE account_id = :a"
                        ),
                        {"a": account_id},
                    )
    finally:
        receiver.stop()


def assert_in_creation_order(receiver: Receiver, path: str, created: list[str]) -> None:
    first = receiver.first_ids(path)
    assert len(first) == len(created)
    if first != created:
        index = next(i for i, (a, b) in enumerate(zip(first, created, strict=True)) if a != b)
        pytest.fail(
            f"{path}: first deliveries leave creation order at #{index}: "
            f"got {first[index : index + 3]}, created {created[index : index + 3]}"
        )


# --- tests ------------------------------------------------------------------------------------


def test_two_workers_deliver_each_event_once_per_endpoint_in_order(bench: Bench) -> None:
    endpoints = [bench.endpoint("/a", ["*"]), bench.endpoint("/b", ["customer.created"])]
    endpoint_ids = [e["id"] for e in endpoints]
    bench.start_workers(2, lease_seconds=60)
    # Events arrive while both workers poll: fan-out and sending race for real.
    created = bench.create_customers(EVENTS)
    bench.wait_delivered(["/a", "/b"], set(created), endpoint_ids)

    for path in ("/a", "/b"):
        counts = Counter(bench.receiver.ids(path))
        assert set(counts) == set(created), path
        twice = {event_id: n for event_id, n in counts.items() if n != 1}
        assert not twice, f"{path}: delivered more than once: {list(twice.items())[:5]}"
        assert_in_creation_order(bench.receiver, path, created)
        assert bench.receiver.max_inflight[path] == 1, f"{path}: concurrent deliveries"
    assert all(r.verified_with == {"secret"} for r in bench.receiver.received)
    bench.receiver.check()
    assert bench.pending(endpoint_ids) == 0
    by_worker = bench.attempts_by_worker(endpoint_ids)
    assert sum(by_worker.values()) == 2 * EVENTS  # one attempt per delivery
    print(f"\nattempts per worker: {sorted(by_worker.values())}")


def test_a_killed_worker_loses_no_event(bench: Bench) -> None:
    endpoints = [bench.endpoint("/c", ["customer.created"]), bench.endpoint("/d", ["*"])]
    endpoint_ids = [e["id"] for e in endpoints]
    created = bench.create_customers(KILL_EVENTS)
    first, second = bench.start_workers(2, lease_seconds=2)
    ours = {first.pid: first, second.pid: second}
    conninfo = bench.database_url.replace("postgresql+psycopg://", "postgresql://")
    killed: dict[str, Any] = {}
    kill_done = threading.Event()
    kill_lock = threading.Lock()

    def kill_the_sender(received: Received) -> None:
        """While this delivery is in flight, SIGKILL the worker holding /c's lease: it has
        sent the request and will never record the answer."""
        if received.path != "/c":
            return
        with kill_lock:
            if kill_done.is_set() or len(bench.receiver.first_ids("/c")) < KILL_AFTER:
                return
            with psycopg.connect(conninfo, autocommit=True) as connection:
                row = connection.execute(
                    "SELECT lease_owner FROM webhook_endpoints WHERE id = %s", (endpoint_ids[0],)
                ).fetchone()
            owner = row[0] if row else None
            pid = int(owner.rsplit(":", 2)[1]) if owner else None
            if pid not in ours:
                return  # not one of ours (cannot happen); try on the next request
            os.kill(pid, signal.SIGKILL)
            ours[pid].process.wait(timeout=10)
            killed.update(pid=pid, worker=owner, in_flight=received.webhook_id)
            kill_done.set()

    bench.receiver.on_request = kill_the_sender
    assert kill_done.wait(timeout=DRAIN_SECONDS_MAX), "no delivery to /c reached the kill point"
    bench.start_workers(1, lease_seconds=2)  # a replacement; the survivor carries on as well
    bench.wait_delivered(["/c", "/d"], set(created), endpoint_ids)

    assert ours[killed["pid"]].process.returncode == -signal.SIGKILL
    duplicates: dict[str, dict[str, int]] = {}
    for path in ("/c", "/d"):
        counts = Counter(bench.receiver.ids(path))
        assert set(counts) == set(created), f"{path}: lost {len(set(created) - set(counts))}"
        duplicates[path] = {event_id: n for event_id, n in counts.items() if n > 1}
        assert len(duplicates[path]) <= DUPLICATES_MAX, duplicates[path]
        assert all(n == 2 for n in duplicates[path].values()), duplicates[path]
        assert_in_creation_order(bench.receiver, path, created)
    # The in-flight delivery was never recorded, so it went out again: the only certain copy.
    assert duplicates["/c"].get(killed["in_flight"]) == 2, (killed, duplicates)
    bench.receiver.check()
    assert bench.pending(endpoint_ids) == 0
    by_worker = bench.attempts_by_worker(endpoint_ids)
    # Every request the receiver saw is a recorded attempt, but for the one the kill cut off.
    sent = len(bench.receiver.of("/c")) + len(bench.receiver.of("/d"))
    assert sum(by_worker.values()) == sent - 1
    print(
        f"\nkilled {killed['worker']} with {killed['in_flight']} in flight; duplicates: "
        f"{ {p: sorted(d) for p, d in duplicates.items()} }; attempts per worker: "
        f"{sorted(by_worker.values())}"
    )


def test_a_fan_out_in_progress_elsewhere_cannot_reorder_an_endpoint(bench: Bench) -> None:
    """Worker A is fanning out an event (its rows locked, its deliveries not yet committed)
    when a later event commits. Worker B must not queue and send the later one first."""
    bench.endpoint("/e", ["customer.created"])
    settings = make_settings(bench.database_url, allow_private_webhook_targets=True)
    engine_a = make_engine(settings)
    paused, release = threading.Event(), threading.Event()

    @event.listens_for(engine_a, "before_cursor_execute")
    def pause_before_queueing(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("INSERT INTO WEBHOOK_DELIVERIES"):
            paused.set()
            release.wait(10)

    clock = SystemClock()
    a = threading.Thread(target=fan_out, args=(make_sessionmaker(engine_a), clock), daemon=True)
    b = threading.Thread(
        target=deliver_due, args=(bench.state.sessions, clock, settings, "worker-b"), daemon=True
    )
    try:
        [earlier] = bench.create_customers(1)
        a.start()
        assert paused.wait(10), "worker A never reached its insert"
        [later] = bench.create_customers(1)
        b.start()
        b.join(1.0)
        sent_meanwhile = bench.receiver.ids("/e")
    finally:
        release.set()
        a.join(10)
        b.join(10)
        engine_a.dispose()
    deliver_due(bench.state.sessions, clock, settings, "worker-b")
    assert sent_meanwhile in ([], [earlier])
    assert bench.receiver.ids("/e") == [earlier, later]
