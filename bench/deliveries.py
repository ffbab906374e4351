"""deliveries: signed webhook deliveries per second by 1 and 2 `invoicetrail worker` processes.

Per run: a fresh PostgreSQL database, one account, K endpoints (each subscribed to `*`)
pointing at a local receiver in its own process (uvicorn + uvloop + httptools, a bare ASGI
app answering 204; it verifies every signature with `standardwebhooks`, counts deliveries
per endpoint, duplicates and out-of-order arrivals, and is asked for the counts). The
workers are started and idle; then N events are bulk-loaded into the outbox with COPY in
one transaction, and the clock runs from that commit until the receiver has seen all N×K
deliveries and every delivery row is `succeeded`. That is the whole path: fan-out, lease,
load, sign, POST, one write transaction per attempt. `measured` is deliveries per second
(each event delivered to one endpoint = one delivery).

The same-run baseline is a bare loop in one process doing the same signed POSTs (same
bodies, `standardwebhooks` signing, one keep-alive `httpx.Client`) to the same receiver,
without the database; `ratio` = ours ÷ that. There is no numeric target in SPEC. The default
load, 5,000 events × 4 endpoints = 20,000 deliveries per run, is past the warm-up (fan-out
is done within seconds, then passes of ≤ 8 × 100 deliveries repeat) and keeps a run to
minutes at the rates measured so far (a 20,000-event load took ~30 min per run).

Prints the figures and writes the deliveries rows and details block of bench/RESULTS.md
(other benches' rows are kept). Asserts nothing.

    .venv/bin/python bench/deliveries.py [--events 5000] [--endpoints 4] [--workers 1,2]
        [--poll-interval 1.0] [--profile SECONDS] [--quick] [--no-write]

`--profile SECONDS` runs py-spy (`PY_SPY`, PATH or the venv's) on each worker once fan-out is
done (steady-state sending) and adds where their wall time went to the details.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from standardwebhooks.webhooks import Webhook

from create_finalize import (
    HOST,
    PG_ADMIN_DSN,
    RESULTS_PATH,
    TABLE_HEADER,
    TABLE_RULE,
    cli_env,
    create_account,
    free_port,
    prepare_postgres,
)

BENCH = "deliveries"
DETAILS_BEGIN = f"<!-- {BENCH}:details -->"
DETAILS_END = f"<!-- /{BENCH}:details -->"
PG_DATABASE = "invoicetrail_bench_deliveries"
STARTUP_SECONDS_MAX = 30.0
STALL_SECONDS_MAX = 90.0  # no progress this long: stop and report what arrived
WORKER_SETTLE_SECONDS = 2.0  # after "worker started": its first (empty) passes are done
EVENT_TYPES = ("invoice.finalized", "invoice.paid", "invoice.sent", "payment.succeeded")


# --- the receiver (its own process) ---------------------------------------------------------


class Receiver:
    """ASGI app: POST /hook/{k} → 204 after verifying the signature; GET /stats; POST /reset
    with {"secrets": {k: whsec}}. Event ids end in their load index, so order is checkable."""

    def __init__(self) -> None:
        self.reset({})

    def reset(self, secrets: dict[str, str]) -> None:
        self.webhooks = {key: Webhook(secret) for key, secret in secrets.items()}
        self.counts: collections.Counter[str] = collections.Counter()
        self.seen: dict[str, set[str]] = collections.defaultdict(set)
        self.last_index: dict[str, int] = {}
        self.duplicates = 0
        self.out_of_order = 0
        self.bad_signatures = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def stats(self) -> dict[str, Any]:
        return {
            "total": sum(self.counts.values()),
            "per_endpoint": dict(self.counts),
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "bad_signatures": self.bad_signatures,
            "first_at": self.first_at,
            "last_at": self.last_at,
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path: str = scope["path"]
        status, payload = 404, b""
        if scope["method"] == "POST" and path.startswith("/hook/"):
            self.hook(path[len("/hook/") :], body, scope["headers"])
            status = 204
        elif path == "/stats":
            status, payload = 200, json.dumps(self.stats()).encode()
        elif path == "/reset" and scope["method"] == "POST":
            self.reset(json.loads(body or b"{}").get("secrets", {}))
            status, payload = 200, b"{}"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")] if payload else [],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def hook(self, key: str, body: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        now = time.time()
        self.first_at = self.first_at or now
        self.last_at = now
        headers = {name.decode(): value.decode() for name, value in raw_headers}
        webhook = self.webhooks.get(key)
        try:
            if webhook is None:
                raise ValueError(f"unknown endpoint {key}")
            webhook.verify(body, headers)
        except Exception:
            self.bad_signatures += 1
        event_id = headers.get("webhook-id", "")
        if event_id in self.seen[key]:
            self.duplicates += 1
            return
        self.seen[key].add(event_id)
        self.counts[key] += 1
        index = int(event_id.rsplit("_", 1)[-1]) if event_id[-1:].isdigit() else -1
        if index < self.last_index.get(key, -1):
            self.out_of_order += 1
        self.last_index[key] = max(index, self.last_index.get(key, -1))


def serve_receiver(port: int) -> None:
    import uvicorn

    uvicorn.run(
        Receiver(),
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


@dataclass
class ReceiverProcess:
    port: int
    process: subprocess.Popen[bytes]
    client: httpx.Client

    def url(self, key: int) -> str:
        return f"http://{HOST}:{self.port}/hook/{key}"

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.client.get("/stats").json()
        return result

    def reset(self, secrets: dict[int, str]) -> None:
        self.client.post("/reset", json={"secrets": {str(k): s for k, s in secrets.items()}})


def start_receiver(log_dir: Path) -> ReceiverProcess:
    port = free_port()
    with (log_dir / "receiver.log").open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, __file__, "--receiver-port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10)
    deadline = time.monotonic() + STARTUP_SECONDS_MAX
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited:\n{(log_dir / 'receiver.log').read_text()}")
        try:
            client.get("/stats")
            return ReceiverProcess(port, process, client)
        except httpx.TransportError:
            time.sleep(0.1)
    stop_process(process)
    raise RuntimeError("receiver did not start")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


# --- CPU accounting (/proc) -----------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving `database` (its ps title names it)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


def backend_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """Backends that exited in between are missed (only the bench's short polling ones)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# --- set-up ---------------------------------------------------------------------------------


def event_object(index: int) -> dict[str, Any]:
    """An invoice-like payload (~1 KiB as JSON), as a finalize or payment event carries."""
    total = 10_000 + index % 9_000
    return {
        "id": f"in_bench{index:010d}",
        "object": "invoice",
        "status": "open",
        "number": f"INV-2026-{index:06d}",
        "currency": "eur",
        "customer": "cus_bench0000000001",
        "collection_method": "send_invoice",
        "subtotal": total,
        "tax": total * 19 // 100,
        "total": total + total * 19 // 100,
        "amount_due": total + total * 19 // 100,
        "amount_paid": 0,
        "bank_transfer_reference": f"RF{index:018d}",
        "issued_at": "2026-11-25T12:00:00Z",
        "due_date": "2026-12-25",
        "lines": [
            {
                "description": description,
                "quantity": quantity,
                "unit_amount": amount,
                "tax_rate": "19",
                "amount": amount,
            }
            for description, quantity, amount in (
                ("Subscription, monthly", "1", total // 2),
                ("Seats", "3", total // 4),
                ("Usage overage", "1", total - total // 2 - total // 4),
            )
        ],
        "metadata": {"order": f"ord_{index}", "source": "bench"},
    }


def create_endpoints(
    database_url: str, account_id: str, receiver: ReceiverProcess, count: int
) -> tuple[list[str], dict[int, str]]:
    """K endpoints through the service (as `POST /v1/webhook_endpoints` does); returns
    (endpoint ids, {receiver key: secret})."""
    from invoicetrail.core.config import Settings
    from invoicetrail.core.context import Ctx
    from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
    from invoicetrail.core.ids import new_id
    from invoicetrail.webhooks import service as webhooks
    from invoicetrail.webhooks.schemas import WebhookEndpointCreate

    settings = Settings(
        database_url=database_url, db_pool_size=1, allow_private_webhook_targets=True
    )
    engine = make_engine(settings)
    ids: list[str] = []
    secrets: dict[int, str] = {}
    try:
        with write_transaction(make_sessionmaker(engine)) as session:
            ctx = Ctx(session, account_id, new_id("req"), datetime.now(UTC), settings)
            for key in range(count):
                endpoint, secret = webhooks.create_endpoint(
                    ctx,
                    WebhookEndpointCreate.model_validate(
                        {"url": receiver.url(key), "events": ["*"]}
                    ),
                )
                ids.append(endpoint.id)
                secrets[key] = secret
            session.commit()
    finally:
        engine.dispose()
    return ids, secrets


def make_events(account_id: str, count: int, tag: str) -> list[tuple[Any, ...]]:
    """Rows for COPY into `events` (created after the endpoints, not yet fanned out)."""
    created_at = datetime.now(UTC) + timedelta(milliseconds=1)
    rows = []
    for index in range(count):
        obj = event_object(index)
        rows.append(
            (
                f"evt_{tag}_{index:08d}",
                account_id,
                EVENT_TYPES[index % len(EVENT_TYPES)],
                obj["id"],
                json.dumps(obj),
                f"req_{tag}_{index:08d}",
                created_at + timedelta(microseconds=index),
            )
        )
    return rows


def bodies(rows: Sequence[tuple[Any, ...]]) -> list[tuple[str, bytes]]:
    """The exact bytes the worker sends for each event (EventOut JSON)."""
    from invoicetrail.events.models import Event
    from invoicetrail.events.schemas import EventOut

    out = []
    for event_id, _account, event_type, object_id, data_json, request_id, created in rows:
        event = Event(
            id=event_id,
            type=event_type,
            object_id=object_id,
            data_json=data_json,
            request_id=request_id,
            created_at=created,
        )
        out.append((event_id, EventOut.of(event).model_dump_json().encode()))
    return out


def copy_events(dsn: str, rows: Sequence[tuple[Any, ...]]) -> float:
    """COPY in one transaction; returns perf_counter at the commit (the clock's start)."""
    with psycopg.connect(dsn) as connection:
        with connection.cursor().copy(
            "COPY events (id, account_id, type, object_id, data_json, request_id, created_at) "
            "FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        connection.commit()
        return time.perf_counter()


# --- the workers ----------------------------------------------------------------------------


def start_workers(
    database_url: str, count: int, poll_interval: float, log_dir: Path, tag: str
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    env = cli_env(
        database_url,
        {
            "INVOICETRAIL_ALLOW_PRIVATE_WEBHOOK_TARGETS": "true",
            "INVOICETRAIL_WORKER_POLL_INTERVAL_SECONDS": str(poll_interval),
        },
    )
    workers = []
    for number in range(count):
        log_path = log_dir / f"worker-{tag}-{number}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "invoicetrail", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        workers.append((process, log_path))
    deadline = time.monotonic() + STARTUP_SECONDS_MAX
    for process, log_path in workers:
        while "worker started" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                for other, _ in workers:
                    stop_process(other)
                raise RuntimeError(f"worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
    time.sleep(WORKER_SETTLE_SECONDS)
    return workers


# --- profile (optional) ---------------------------------------------------------------------

# Where a worker's wall time goes: the first category whose frame is on the stack.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sign (standardwebhooks)", ("_signature_headers",)),
    ("HTTP POST (httpx, receiver)", ("_post",)),
    ("record attempt (1 write txn)", ("_record",)),
    ("release lease", ("_release",)),
    ("load due deliveries", ("_load",)),
    ("claim endpoints", ("claim_endpoints",)),
    ("fan-out", ("fan_out",)),
    (
        "other worker jobs",
        ("send_due_simulated_events", "wake_snoozed", "_reconcile_daily", "prune_expired"),
    ),
    ("deliver_due (rest)", ("deliver_due",)),
    ("sleep between passes", ("run_forever",)),
)


# Inside `_record` (one write transaction per attempt).
RECORD_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pool checkout + pre-ping", ("_checkout", "_do_ping", "do_ping")),
    ("flush: INSERT attempt, UPDATE delivery + endpoint", ("_flush",)),
    ("COMMIT", ("commit",)),
    ("SELECT endpoint, delivery FOR UPDATE", ("execute",)),
    ("close", ("close",)),
)


def start_profile(pid: int, seconds: float, out_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    py_spy = (
        os.environ.get("PY_SPY")
        or shutil.which("py-spy")
        or str(Path(sys.executable).parent / "py-spy")
    )
    output = out_dir / f"py-spy-{pid}.txt"
    process = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--idle",  # waiting on PostgreSQL or the receiver is where the time goes
            "--duration",
            str(int(seconds)),
            "--rate",
            "100",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, output


def summarize_profile(path: Path) -> tuple[list[str], str]:
    """Wall-time shares per category and the busiest leaf frames (idle included); and a
    one-line summary for RESULTS.md."""
    shares: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    record_parts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        names = {frame.split(" (", 1)[0] for frame in frames}
        category = next(
            (label for label, funcs in CATEGORIES if any(f in names for f in funcs)), "other"
        )
        if category == "other" and any("psycopg/" in frame for frame in frames):
            # psycopg's C wait loop drives its generators: py-spy loses their callers.
            category = "psycopg, caller not visible (mostly record attempt)"
        shares[category] += count
        leaves[frames[-1]] += count
        if "_record" in names:
            part = next(
                (label for label, funcs in RECORD_PARTS if any(f in names for f in funcs)),
                "ORM and Python",
            )
            record_parts[part] += count
    if not total:
        return ["  (no samples)"], "no samples"
    lines = [f"  {path.name}: {total} samples (wall time, idle included)"]
    lines += [f"    {100 * n / total:5.1f} %  {label}" for label, n in shares.most_common()]
    lines.append("    record attempt, split:")
    lines += [f"    {100 * n / total:5.1f} %  {label}" for label, n in record_parts.most_common()]
    lines.append("    leaf frames:")
    lines += [f"    {100 * n / total:5.1f} %  {frame}" for frame, n in leaves.most_common(8)]
    summary = ", ".join(
        f"{label} {100 * n / total:.0f} %" for label, n in shares.most_common(4) if n
    )
    return lines, summary


# --- one measured run -----------------------------------------------------------------------


@dataclass
class Run:
    workers: int
    events: int
    endpoints: int
    seconds: float
    complete: bool
    first_delivery_seconds: float | None
    fanned_out_seconds: float | None
    receiver: dict[str, Any]
    db: dict[str, Any]
    cpu: dict[str, float]
    load_average: float
    poll_interval: float
    profile_lines: list[str] = field(default_factory=list)
    profile_summaries: list[str] = field(default_factory=list)
    profile_seconds: float = 0.0

    @property
    def deliveries(self) -> int:
        return self.events * self.endpoints

    @property
    def delivered(self) -> int:
        return int(self.receiver.get("total", 0))

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def exactly_once(self) -> bool:
        return (
            self.complete
            and self.receiver["duplicates"] == 0
            and self.db["duplicate_rows"] == 0
            and self.db["attempts"] == self.deliveries
        )


def db_checks(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as connection:
        rows, succeeded = connection.execute(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'succeeded') FROM webhook_deliveries"
        ).fetchone() or (0, 0)
        duplicate_rows = connection.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM webhook_deliveries "
            "GROUP BY endpoint_id, event_id HAVING COUNT(*) > 1) AS d"
        ).fetchone()
        attempts = connection.execute(
            "SELECT worker, COUNT(*), COUNT(*) FILTER (WHERE status_code IS NULL "
            "OR status_code >= 300) FROM webhook_attempts GROUP BY worker ORDER BY worker"
        ).fetchall()
        not_fanned = connection.execute(
            "SELECT COUNT(*) FROM events WHERE fanned_out_at IS NULL"
        ).fetchone()
    return {
        "rows": int(rows),
        "succeeded": int(succeeded),
        "duplicate_rows": int(duplicate_rows[0]) if duplicate_rows else 0,
        "attempts": sum(int(n) for _, n, _ in attempts),
        "failed_attempts": sum(int(f) for _, _, f in attempts),
        "per_worker": [int(n) for _, n, _ in attempts],
        "not_fanned_out": int(not_fanned[0]) if not_fanned else 0,
    }


def not_fanned_out(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT COUNT(*) FROM events WHERE fanned_out_at IS NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def succeeded_count(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'succeeded'"
        ).fetchone()
    return int(row[0]) if row else 0


def run_workers(
    *,
    workers: int,
    events: int,
    endpoints: int,
    poll_interval: float,
    receiver: ReceiverProcess,
    admin_dsn: str,
    database: str,
    log_dir: Path,
    profile_seconds: float,
) -> Run:
    url, dsn = prepare_postgres(admin_dsn, database)
    account_id, _ = create_account(url, f"bench {BENCH} {workers} workers")
    _ids, secrets = create_endpoints(url, account_id, receiver, endpoints)
    receiver.reset(secrets)
    tag = uuid.uuid4().hex[:6]
    rows = make_events(account_id, events, tag)
    expected = events * endpoints
    procs = start_workers(url, workers, poll_interval, log_dir, tag)
    pids = [process.pid for process, _ in procs]
    receiver_pid = receiver.process.pid
    profiles: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        cpu_before = {
            "workers": sum(cpu_seconds(pid) for pid in pids),
            "receiver": cpu_seconds(receiver_pid),
        }
        backends_before = backend_cpu(database)
        busy_before = machine_busy()
        started = copy_events(dsn, rows)
        wall_started = time.time()
        fanned_out_seconds: float | None = None
        complete = False
        progress, progress_at = -1, time.monotonic()
        stats = receiver.stats()
        while True:
            stats = receiver.stats()
            if fanned_out_seconds is None and not_fanned_out(dsn) == 0:
                fanned_out_seconds = time.perf_counter() - started
                if profile_seconds > 0:  # steady state: sending only
                    profiles = [start_profile(pid, profile_seconds, log_dir) for pid in pids]
            if stats["total"] >= expected and succeeded_count(dsn) >= expected:
                complete = True
                break
            if stats["total"] != progress:
                progress, progress_at = stats["total"], time.monotonic()
            elif time.monotonic() - progress_at > STALL_SECONDS_MAX:
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        busy_after = machine_busy()
        cpu = {
            "workers": sum(cpu_seconds(pid) for pid in pids) - cpu_before["workers"],
            "receiver": cpu_seconds(receiver_pid) - cpu_before["receiver"],
            "postgres": backend_cpu_delta(backends_before, backend_cpu(database)),
            "machine_busy": (busy_after[0] - busy_before[0])
            / max(1, busy_after[1] - busy_before[1]),
        }
        load_average = os.getloadavg()[0]
        profile_lines: list[str] = []
        profile_summaries: list[str] = []
        for process, output in profiles:
            try:
                process.wait(timeout=profile_seconds + 30)
            except subprocess.TimeoutExpired:
                process.terminate()
                process.wait(timeout=10)
            if output.exists():
                lines, summary = summarize_profile(output)
                profile_lines += lines
                profile_summaries.append(summary)
    finally:
        for process, _ in procs:
            stop_process(process)
    first = stats.get("first_at")
    return Run(
        workers=workers,
        events=events,
        endpoints=endpoints,
        seconds=seconds,
        complete=complete,
        first_delivery_seconds=(first - wall_started) if first else None,
        fanned_out_seconds=fanned_out_seconds,
        receiver=stats,
        db=db_checks(dsn),
        cpu=cpu,
        load_average=load_average,
        poll_interval=poll_interval,
        profile_lines=profile_lines,
        profile_summaries=profile_summaries,
        profile_seconds=profile_seconds,
    )


# --- the baseline ---------------------------------------------------------------------------


@dataclass
class Baseline:
    deliveries: int
    seconds: float
    receiver: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0


def baseline(
    receiver: ReceiverProcess, secrets: dict[int, str], signed: Sequence[tuple[str, bytes]]
) -> Baseline:
    """One process, one keep-alive client: sign and POST each delivery, nothing else."""
    webhooks = {key: Webhook(secret) for key, secret in secrets.items()}
    urls = {key: receiver.url(key) for key in secrets}

    def post(client: httpx.Client, key: int, event_id: str, body: bytes) -> None:
        signed_at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(signed_at.timestamp())),
            "webhook-signature": webhooks[key].sign(
                msg_id=event_id, timestamp=signed_at, data=body.decode()
            ),
            "user-agent": "invoicetrail-webhooks/1",
        }
        response = client.post(urls[key], content=body, headers=headers)
        if response.status_code != 204:
            raise RuntimeError(f"receiver answered {response.status_code}")

    with httpx.Client(timeout=10, follow_redirects=False) as client:
        receiver.reset(secrets)
        for event_id, body in signed[:200]:  # warm-up: connection, code paths
            post(client, 0, event_id, body)
        receiver.reset(secrets)
        started = time.perf_counter()
        for event_id, body in signed:
            for key in secrets:
                post(client, key, event_id, body)
        seconds = time.perf_counter() - started
    return Baseline(len(signed) * len(secrets), seconds, receiver.stats())


# --- report ---------------------------------------------------------------------------------


def size_text(events: int, endpoints: int, workers: int) -> str:
    count = f"{events // 1000}k" if events % 1000 == 0 else f"{events:,}"
    return f"{count}×{endpoints}, {workers} worker{'s' if workers != 1 else ''}"


def table_row(run: Run, base: Baseline) -> str:
    ratio = run.rate / base.rate if base.rate else 0.0
    return (
        f"| {BENCH} | postgresql | {size_text(run.events, run.endpoints, run.workers)} | "
        f"{run.rate:,.0f} events/s | {base.rate:,.0f} events/s | {ratio:.2f} | — | — |"
    )


def run_details(run: Run, base: Baseline) -> str:
    db = run.db
    receiver = run.receiver
    shares = "/".join(f"{n:,}" for n in db["per_worker"])
    first = f"{run.first_delivery_seconds:.1f} s" if run.first_delivery_seconds is not None else "—"
    if run.fanned_out_seconds is not None:
        first += f", all fanned out after {run.fanned_out_seconds:.1f} s"
    return (
        f"- **{size_text(run.events, run.endpoints, run.workers)}**: {run.delivered:,} of "
        f"{run.deliveries:,} deliveries in {run.seconds:.1f} s = {run.rate:,.0f}/s "
        f"(ratio {run.rate / base.rate if base.rate else 0:.2f}; first delivery after {first}"
        f"{'' if run.complete else '; INCOMPLETE (stalled)'}); attempts per worker {shares}; "
        f"duplicates at the receiver {receiver['duplicates']}, duplicate delivery rows "
        f"{db['duplicate_rows']}, attempts {db['attempts']:,} (failed {db['failed_attempts']}), "
        f"out of order {receiver['out_of_order']}, bad signatures "
        f"{receiver['bad_signatures']}; CPU: workers {run.cpu['workers']:.1f} s "
        f"({1000 * run.cpu['workers'] / max(1, run.delivered):.2f} ms/delivery), receiver "
        f"{run.cpu['receiver']:.1f} s, its postgres backends {run.cpu['postgres']:.1f} s, "
        f"machine {100 * run.cpu['machine_busy']:.0f} % busy, 1-min load "
        f"{run.load_average:.1f}"
        + "".join(
            f"; py-spy worker {number} ({run.profile_seconds:g} s after fan-out, wall time): "
            f"{summary}"
            for number, summary in enumerate(run.profile_summaries, 1)
        )
    )


def print_run(run: Run, base: Baseline) -> None:
    print(f"\n{BENCH} · {size_text(run.events, run.endpoints, run.workers)}")
    print("  " + run_details(run, base)[2:])
    print(f"  exactly once per endpoint: {'yes' if run.exactly_once else 'NO'}")
    for line in run.profile_lines:
        print(line)


def write_results(
    runs: Sequence[Run], base: Baseline, notes: Sequence[str], path: Path = RESULTS_PATH
) -> None:
    """Replaces this bench's rows of the first table in place (appends them the first time;
    other benches' rows are kept) and its details block. Reads the file just before writing."""
    text_in = path.read_text() if path.exists() else ""
    lines = text_in.splitlines()
    mine = [table_row(run, base) for run in runs]
    if TABLE_HEADER in lines:
        start = lines.index(TABLE_HEADER)
        end = start + 2
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        body = lines[start + 2 : end]
        at = next((i for i, line in enumerate(body) if line.startswith(f"| {BENCH} |")), len(body))
        others = [line for line in body if not line.startswith(f"| {BENCH} |")]
        before = [line for line in body[:at] if not line.startswith(f"| {BENCH} |")]
        after = others[len(before) :]
        lines[start:end] = [TABLE_HEADER, TABLE_RULE, *before, *mine, *after]
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
    first = runs[0]
    details = [
        DETAILS_BEGIN,
        f"### {BENCH}",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs (shared with "
        "other work: figures move between runs). Per row a fresh PostgreSQL database, one "
        f"account, {first.endpoints} endpoints subscribed to `*` on a local receiver (uvicorn + "
        "uvloop + httptools, 204, verifies every signature); the `invoicetrail worker` "
        f"processes (poll interval {first.poll_interval:g} s) are started idle, then "
        f"{first.events:,} events (~1 KiB invoice payloads) are COPYed into the outbox in one "
        "transaction; the clock runs from that commit until the receiver has every delivery "
        "and every delivery row is `succeeded` (fan-out, lease, sign, POST, one write "
        "transaction per attempt). `measured` = deliveries per second. Baseline: one process "
        "signing (`standardwebhooks`) and POSTing the same bodies over one keep-alive "
        f"`httpx.Client` to the same receiver, no database: {base.deliveries:,} deliveries in "
        f"{base.seconds:.1f} s = {base.rate:,.0f}/s (bad signatures "
        f"{base.receiver['bad_signatures']}).",
        "",
        *[run_details(run, base) for run in runs],
        *notes,
        DETAILS_END,
    ]
    if DETAILS_BEGIN in lines and DETAILS_END in lines:
        lines[lines.index(DETAILS_BEGIN) : lines.index(DETAILS_END) + 1] = details
    else:
        lines += ["", *details]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None, help="events per run (5000)")
    parser.add_argument("--endpoints", type=int, default=4, help="endpoints (4)")
    parser.add_argument("--workers", default="1,2", help="worker counts, one run each (1,2)")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="worker poll interval, s (default 1.0)"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 events")
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy each worker for SECONDS")
    parser.add_argument("--note", action="append", default=[], help="line for the details")
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    parser.add_argument("--pg-database", default=PG_DATABASE)
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--receiver-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver_port:
        serve_receiver(args.receiver_port)
        return 0
    events = args.events or (1_000 if args.quick else 5_000)
    worker_counts = [int(n) for n in args.workers.split(",")]

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="invoicetrail-bench-") as scratch:
        scratch_dir = Path(scratch)
        receiver = start_receiver(scratch_dir)
        try:
            secrets = {
                key: "whsec_" + base64.b64encode(os.urandom(24)).decode()
                for key in range(args.endpoints)
            }
            signed = bodies(make_events("acct_bench", events, "base"))
            base = baseline(receiver, secrets, signed)
            print(
                f"{BENCH} baseline: {base.deliveries:,} signed POSTs in {base.seconds:.1f} s = "
                f"{base.rate:,.0f}/s (receiver {base.receiver['total']:,}, bad signatures "
                f"{base.receiver['bad_signatures']})"
            )
            for workers in worker_counts:
                run = run_workers(
                    workers=workers,
                    events=events,
                    endpoints=args.endpoints,
                    poll_interval=args.poll_interval,
                    receiver=receiver,
                    admin_dsn=args.pg_admin_dsn,
                    database=args.pg_database,
                    log_dir=scratch_dir,
                    profile_seconds=args.profile,
                )
                runs.append(run)
                print_run(run, base)
        finally:
            stop_process(receiver.process)
            receiver.client.close()
    print(f"\n{TABLE_HEADER}\n{TABLE_RULE}")
    for run in runs:
        print(table_row(run, base))
    if not args.no_write:
        write_results(runs, base, args.note, args.results)
        print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
