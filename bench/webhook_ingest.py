"""webhook_ingest: signed provider events per second through the real webhook route.

Each request is the whole inbound path: store the raw bytes and headers (commit), verify the
signature over them, dedupe by provider event id, apply the payment evidence (commit). The
load is a mix of Stripe (`payment_intent.succeeded`, ACH `payment_intent.processing` then
`…succeeded`) and Standard Webhooks (`payment.succeeded`, ACH `payment.processing` then
`payment.succeeded`) events for open invoices of one account, ~20 % of the requests being
repeats of an event id (answered `200 duplicate`), sent by N concurrent clients over
keep-alive connections. Signatures are made at send time by the official libraries.

PostgreSQL: `serve` with INVOICETRAIL_SERVE_WORKERS=2 (target ≥ 1,000 events/s); SQLite: one
serve process (reported only). The same-run reference is bare signature verification with
the official libraries on the same payloads, single-threaded: `standardwebhooks`
`Webhook.verify` and `stripe` `WebhookSignature.verify_header`; `ratio` = ours ÷ that.

Prints the figures and writes the webhook_ingest rows and details block of bench/RESULTS.md
(other benches' rows are kept). Asserts nothing.

    .venv/bin/python bench/webhook_ingest.py [--events 3000] [--sqlite-events 1000]
        [--clients 16] [--quick] [--skip-sqlite] [--profile SECONDS] [--no-write]
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy import text
from standardwebhooks.webhooks import Webhook
from stripe import WebhookSignature

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from create_finalize import (
    PG_ADMIN_DSN,
    RESULTS_PATH,
    TABLE_HEADER,
    TABLE_RULE,
    Recorder,
    create_account,
    drive,
    invoicetrail,
    prepare_postgres,
)
from invoicetrail.core.clock import SystemClock
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
from invoicetrail.core.ids import new_id
from invoicetrail.customers import service as customers
from invoicetrail.customers.schemas import CustomerCreate
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.schemas import InvoiceCreate
from servers import Server, running_server

BENCH = "webhook_ingest"
DETAILS_BEGIN = f"<!-- {BENCH}:details -->"
DETAILS_END = f"<!-- /{BENCH}:details -->"
TARGET_RATE = 1000.0
TARGET_TEXT = "≥ 1,000 events/s"
PG_DATABASE = "invoicetrail_bench_webhooks"
INVOICES = 1000
DUPLICATE_SHARE = 0.20  # of all requests: repeats of an event id already in the mix
ACH_SHARE = 0.4  # of the distinct payments: processing then succeeded
REQUEST_SECONDS_MAX = 120.0
BARE_ROUNDS_MIN = 5_000
SW_SECRET = "whsec_" + base64.b64encode(b"bench-webhook-ingest-secret-0001").decode()
STRIPE_SECRET = "whsec_bench_webhook_ingest_stripe"

Provider = Literal["stripe", "standard_webhooks"]


# --- the load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    provider: Provider
    event_id: str
    body: str


def stripe_body(event_type: str, pi: str, invoice_id: str, method: str) -> tuple[str, str]:
    event_id = f"evt_{uuid.uuid4().hex[:24]}"
    succeeded = event_type == "payment_intent.succeeded"
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": pi,
                "object": "payment_intent",
                "amount": 100,
                "amount_received": 100 if succeeded else 0,
                "currency": "eur",
                "metadata": {"invoice": invoice_id},
                "payment_method_types": [method],
            }
        },
    }
    return event_id, json.dumps(body)


def sw_body(event_type: str, reference: str, invoice_id: str, method: str) -> tuple[str, str]:
    now = datetime.now(UTC).isoformat()
    body = {
        "type": event_type,
        "timestamp": now,
        "data": {
            "payment_reference": reference,
            "invoice": invoice_id,
            "amount": 100,
            "currency": "eur",
            "method": method,
            "occurred_at": now,
        },
    }
    return f"msg_{uuid.uuid4().hex}", json.dumps(body)


def make_load(rng: random.Random, invoice_ids: Sequence[str], requests: int) -> list[Event]:
    """`requests` deliveries: distinct events (an ACH pair in lifecycle order) plus repeats.
    Every payment is 100 minor units against a large invoice, so invoices stay open."""
    distinct_target = round(requests * (1 - DUPLICATE_SHARE))
    chains: list[list[Event]] = []
    count = 0
    while count < distinct_target:
        provider: Provider = "stripe" if rng.random() < 0.5 else "standard_webhooks"
        invoice_id = rng.choice(invoice_ids)
        ach = rng.random() < ACH_SHARE and count + 2 <= distinct_target
        statuses = ("processing", "succeeded") if ach else ("succeeded",)
        reference = f"pi_{uuid.uuid4().hex[:20]}"
        chain = []
        for status in statuses:
            if provider == "stripe":
                method = "us_bank_account" if ach else "card"
                event_id, body = stripe_body(
                    f"payment_intent.{status}", reference, invoice_id, method
                )
            else:
                event_id, body = sw_body(
                    f"payment.{status}", reference, invoice_id, "ach" if ach else "card"
                )
            chain.append(Event(provider, event_id, body))
        chains.append(chain)
        count += len(chain)
    # Interleave chains at random, keeping each chain's own order (processing first).
    slots = [index for index, chain in enumerate(chains) for _ in chain]
    rng.shuffle(slots)
    positions = [0] * len(chains)
    events: list[Event] = []
    for index in slots:
        events.append(chains[index][positions[index]])
        positions[index] += 1
    # Repeats: a copy of an earlier event, a little later (sometimes at once: concurrent).
    for _ in range(requests - len(events)):
        source = rng.randrange(len(events))
        insert_at = min(len(events), source + 1 + int(rng.expovariate(1 / 50)))
        events.insert(insert_at, events[source])
    return events


class Signer:
    """Per-thread signers (a `Webhook` decodes its secret once)."""

    def __init__(self) -> None:
        self.webhook = Webhook(SW_SECRET)

    def headers(self, event: Event, now: datetime) -> dict[str, str]:
        if event.provider == "stripe":
            header = WebhookSignature.generate_signature_header(
                event.body, STRIPE_SECRET, timestamp=int(now.timestamp())
            )
            return {"Stripe-Signature": header, "Content-Type": "application/json"}
        return {
            "webhook-id": event.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.webhook.sign(
                msg_id=event.event_id, timestamp=now, data=event.body
            ),
            "Content-Type": "application/json",
        }


@dataclass
class Ingest:
    label: str
    requests: int
    seconds: float
    recorder: Recorder
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    load_average: float = 0.0  # 1-minute load at the end: other work on the machine shows here

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def latency_text(self) -> str:
        p50 = self.recorder.percentile_ms("event", 0.50)
        p99 = self.recorder.percentile_ms("event", 0.99)
        return f"p50 {p50:.1f} ms / p99 {p99:.1f} ms"


def send_all(
    server: Server, urls: dict[Provider, str], events: Sequence[Event], clients: int, label: str
) -> Ingest:
    address = urlsplit(server.base_url)
    host = address.hostname or "127.0.0.1"
    recorder = Recorder()
    outcomes: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def make() -> Callable[[int], None]:
        signer = Signer()
        state = {
            "connection": http.client.HTTPConnection(
                host, address.port, timeout=REQUEST_SECONDS_MAX
            )
        }

        def post(event: Event) -> tuple[int, bytes]:
            payload = event.body.encode()
            headers = signer.headers(event, datetime.now(UTC))
            for attempt in range(2):
                try:
                    state["connection"].request(
                        "POST", urls[event.provider], body=payload, headers=headers
                    )
                    response = state["connection"].getresponse()
                    return response.status, response.read()
                except (OSError, http.client.HTTPException):
                    state["connection"].close()
                    state["connection"] = http.client.HTTPConnection(
                        host, address.port, timeout=REQUEST_SECONDS_MAX
                    )
                    if attempt:
                        raise
            raise AssertionError("unreachable")

        def one(index: int) -> None:
            started = time.perf_counter()
            status, content = post(events[index])
            recorder.add("event", time.perf_counter() - started)
            try:
                outcome = str(json.loads(content).get("outcome", "error"))
            except ValueError:
                outcome = "unreadable"
            with lock:
                statuses[status] += 1
                outcomes[outcome] += 1
            if status != 200:
                recorder.fail(f"{status}: {content[:200]!r}")

        return one

    seconds = drive(clients, len(events), make, recorder)
    load_average = os.getloadavg()[0]
    return Ingest(label, len(events), seconds, recorder, outcomes, statuses, load_average)


# --- set-up ---------------------------------------------------------------------------------


def seed_invoices(database_url: str, account_id: str, count: int) -> list[str]:
    """Open invoices written through the services directly (set-up, not measured)."""
    settings = Settings(database_url=database_url, db_pool_size=1)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    clock = SystemClock()
    invoice_ids: list[str] = []
    try:
        for start in range(0, count, 100):
            with write_transaction(sessions) as session:
                ctx = Ctx(
                    session=session,
                    account_id=account_id,
                    request_id=new_id("req"),
                    now=clock.now(),
                    settings=settings,
                )
                customer = customers.create(
                    ctx,
                    CustomerCreate.model_validate(
                        {"name": f"Bench buyer {start}", "address": {"country": "DE"}}
                    ),
                )
                for _ in range(start, min(start + 100, count)):
                    draft = invoices.create(
                        ctx,
                        InvoiceCreate.model_validate(
                            {
                                "customer": customer.id,
                                "currency": "eur",
                                "lines": [
                                    {
                                        "description": "Bench subscription",
                                        "quantity": "1",
                                        "unit_amount": 100_000_000,
                                    }
                                ],
                            }
                        ),
                    )
                    invoice_ids.append(invoices.finalize(ctx, draft.id).id)
                session.commit()
    finally:
        engine.dispose()
    return invoice_ids


def create_endpoints(server: Server, secret_key: str) -> dict[Provider, str]:
    address = urlsplit(server.base_url)
    connection = http.client.HTTPConnection(
        address.hostname or "127.0.0.1", address.port, timeout=30
    )
    urls: dict[Provider, str] = {}
    try:
        for provider, secret in (("stripe", STRIPE_SECRET), ("standard_webhooks", SW_SECRET)):
            connection.request(
                "POST",
                "/v1/provider_endpoints",
                body=json.dumps({"provider": provider, "secret": secret}).encode(),
                headers={
                    "Authorization": f"Bearer {secret_key}",
                    "Idempotency-Key": uuid.uuid4().hex,
                    "Content-Type": "application/json",
                },
            )
            response = connection.getresponse()
            content = response.read()
            if response.status != 200:
                raise RuntimeError(f"provider endpoint: {response.status} {content[:300]!r}")
            urls[provider] = json.loads(content)["url"]  # type: ignore[index]
    finally:
        connection.close()
    return urls


def count_payments(database_url: str, account_id: str) -> tuple[int, int]:
    """(payments, distinct provider events applied) of the account, for the sanity line."""
    engine = make_engine(Settings(database_url=database_url, db_pool_size=1))
    try:
        with engine.connect() as connection:
            payments = connection.execute(
                text("SELECT COUNT(*) FROM payments WHERE account_id = :a"), {"a": account_id}
            ).scalar_one()
            keys = connection.execute(
                text(
                    "SELECT COUNT(*) FROM provider_events WHERE account_id = :a "
                    "AND verification = 'verified' AND outcome <> 'duplicate'"
                ),
                {"a": account_id},
            ).scalar_one()
    finally:
        engine.dispose()
    return int(payments), int(keys)


# --- bare verification ----------------------------------------------------------------------


@dataclass
class Bare:
    sw_rate: float
    stripe_rate: float
    mix_rate: float  # the same provider mix as the load, one thread


def bare_verification(events: Sequence[Event]) -> Bare:
    """The official libraries verifying the same payloads, one thread, nothing else."""
    now = datetime.now(UTC)
    signer = Signer()
    signed = [(event, event.body.encode(), signer.headers(event, now)) for event in events]
    while len(signed) < BARE_ROUNDS_MIN:
        signed += signed
    webhook = Webhook(SW_SECRET)
    seconds = {"stripe": 0.0, "standard_webhooks": 0.0}
    counts = {"stripe": 0, "standard_webhooks": 0}
    for event, payload, headers in signed:
        started = time.perf_counter()
        if event.provider == "stripe":
            WebhookSignature.verify_header(
                payload.decode(), headers["Stripe-Signature"], STRIPE_SECRET, tolerance=300
            )
        else:
            webhook.verify(payload, headers)
        seconds[event.provider] += time.perf_counter() - started
        counts[event.provider] += 1

    def rate(provider: str) -> float:
        return counts[provider] / seconds[provider] if seconds[provider] else 0.0

    return Bare(
        sw_rate=rate("standard_webhooks"),
        stripe_rate=rate("stripe"),
        mix_rate=sum(counts.values()) / sum(seconds.values()),
    )


# --- profile (optional) ---------------------------------------------------------------------


@contextmanager
def profiled(server: Server, seconds: float, out_dir: Path) -> Iterator[list[Path]]:
    """py-spy on the serve process and its workers while the body runs (collapsed stacks)."""
    outputs: list[Path] = []
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if seconds <= 0 or not Path(py_spy).exists():
        yield outputs
        return
    output = out_dir / f"py-spy-{server.process.pid}.txt"
    process = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(server.process.pid),
            "--subprocesses",
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield outputs
    finally:
        try:
            process.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=10)
        if output.exists():
            outputs.append(output)


def print_profile(path: Path, top: int = 25) -> None:
    """Inclusive share of samples per function (ours and the libraries'), idle excluded."""
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in ("select (", "wait (", "_worker (", "poll (")):
            continue  # threads waiting for work, not cost
        count = int(count_text)
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        leaf[frames[-1]] += count
    if not total:
        print("  (no busy samples)")
        return
    print(f"\n  py-spy: {total} busy samples; inclusive share of the busiest functions")
    ours = [(frame, count) for frame, count in inclusive.most_common() if "invoicetrail/" in frame]
    for frame, count in ours[:top]:
        print(f"  {100 * count / total:5.1f} %  {frame}")
    libraries = ("sqlalchemy/orm/", "sqlalchemy/engine/base", "psycopg/", "pydantic", "json/")
    print("  libraries (inclusive):")
    library_frames = [
        (frame, count)
        for frame, count in inclusive.most_common()
        if any(lib in frame for lib in libraries)
    ]
    for frame, count in library_frames[:10]:
        print(f"  {100 * count / total:5.1f} %  {frame}")
    print("  leaf (self) time:")
    for frame, count in leaf.most_common(12):
        print(f"  {100 * count / total:5.1f} %  {frame}")


# --- one backend ----------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    size: int
    clients: int
    ingest: Ingest
    bare: Bare
    payments: int
    applied: int
    expected_payments: int
    target_applies: bool

    @property
    def ratio(self) -> float:
        return self.ingest.rate / self.bare.mix_rate if self.bare.mix_rate else 0.0

    @property
    def met(self) -> bool:
        return not self.ingest.recorder.failures and self.ingest.rate >= TARGET_RATE

    def table_row(self) -> str:
        target = TARGET_TEXT if self.target_applies else "— (reported only)"
        met = ("yes" if self.met else "no") if self.target_applies else "—"
        return (
            f"| {BENCH} | {self.backend} | {self.size:,} events | "
            f"{self.ingest.rate:,.0f} events/s | {self.bare.mix_rate:,.0f} events/s | "
            f"{self.ratio:.4f} | {target} | {met} |"
        )

    def details(self) -> list[str]:
        duplicates = self.ingest.outcomes.get("duplicate", 0)
        return [
            f"- **{self.backend}**, {self.size:,} requests ({duplicates:,} answered duplicate), "
            f"{self.clients} clients: {self.ingest.rate:,.1f} events/s in "
            f"{self.ingest.seconds:.1f} s ({self.ingest.latency_text()}; 1-min load average "
            f"{self.ingest.load_average:.1f}); bare verification, "
            f"one thread: standardwebhooks {self.bare.sw_rate:,.0f}/s, stripe "
            f"{self.bare.stripe_rate:,.0f}/s, same mix {self.bare.mix_rate:,.0f}/s (ratio "
            f"{self.ratio:.4f}); failed requests: {len(self.ingest.recorder.failures)}; "
            f"payments {self.payments:,} of {self.expected_payments:,} expected",
        ]


def bench_backend(
    backend: str,
    database_url: str,
    *,
    workers: int,
    size: int,
    clients: int,
    log_dir: Path,
    target_applies: bool,
    profile_seconds: float,
) -> Row:
    rng = random.Random(f"{BENCH}-{backend}")
    account_id, secret_key = create_account(database_url, f"bench {BENCH} {backend}")
    invoice_ids = seed_invoices(database_url, account_id, INVOICES)
    warmup_events = make_load(rng, invoice_ids, max(100, size // 10))
    events = make_load(rng, invoice_ids, size)
    with running_server(database_url, workers=workers, log_dir=log_dir) as server:
        urls = create_endpoints(server, secret_key)
        send_all(server, urls, warmup_events, clients, "warm-up")
        with profiled(server, profile_seconds, log_dir) as profiles:
            ingest = send_all(server, urls, events, clients, f"{backend} ingest")
    for profile in profiles:
        print_profile(profile)
    payments, applied = count_payments(database_url, account_id)
    expected = len(
        {
            json.loads(e.body)["data"]["object"]["id"]
            if e.provider == "stripe"
            else json.loads(e.body)["data"]["payment_reference"]
            for e in warmup_events + events
        }
    )
    bare = bare_verification(events)
    return Row(
        backend,
        size,
        clients,
        ingest,
        bare,
        payments,
        applied,
        expected,
        target_applies,
    )


def print_row(row: Row) -> None:
    ingest = row.ingest
    print(f"\n{BENCH} · {row.backend} · {row.size:,} requests · {row.clients} clients")
    print(
        f"  ours (store raw + verify + dedupe + apply) {ingest.rate:>9,.1f} events/s  "
        f"wall {ingest.seconds:6.1f} s  {ingest.latency_text()}  "
        f"load average {ingest.load_average:.1f}"
    )
    print(f"  answers {dict(ingest.statuses)}  outcomes {dict(ingest.outcomes)}")
    print(
        f"  bare verification, 1 thread: standardwebhooks {row.bare.sw_rate:,.0f}/s · "
        f"stripe {row.bare.stripe_rate:,.0f}/s · same mix {row.bare.mix_rate:,.0f}/s"
    )
    print(f"  ratio ours ÷ bare verification  {row.ratio:.4f}")
    print(
        f"  payments {row.payments:,} (expected {row.expected_payments:,}); events applied "
        f"{row.applied:,}; failed requests {len(ingest.recorder.failures)}"
        + (f", e.g. {ingest.recorder.failures[0]}" if ingest.recorder.failures else "")
    )
    if row.target_applies:
        print(f"  target {TARGET_TEXT}: {'met' if row.met else 'NOT met'}")


# --- RESULTS.md -----------------------------------------------------------------------------


def write_results(rows: Sequence[Row], path: Path = RESULTS_PATH) -> None:
    """Replaces this bench's rows of the first table in place (appends them to the table the
    first time; other benches' rows are kept) and its details block."""
    text_in = path.read_text() if path.exists() else ""
    lines = text_in.splitlines()
    mine = [row.table_row() for row in rows]
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
    clients = rows[0].clients if rows else 0
    details = [
        DETAILS_BEGIN,
        f"### {BENCH}",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs, {clients} "
        "clients on keep-alive connections, each request one signed provider event through "
        "`POST /v1/providers/{provider}/webhooks/{endpoint}` (store raw, verify, dedupe, "
        "apply); half Stripe, half Standard Webhooks; card payments and ACH processing → "
        f"succeeded pairs against {INVOICES:,} open invoices; ~{DUPLICATE_SHARE:.0%} of the "
        "requests repeat an event id. PostgreSQL: `serve` with INVOICETRAIL_SERVE_WORKERS=2; "
        "SQLite: one serve process. Baseline: the official libraries' bare signature "
        "verification of the same payloads, one thread (`measured` counts every request, "
        "repeats included).",
        "",
        *[line for row in rows for line in row.details()],
        DETAILS_END,
    ]
    if DETAILS_BEGIN in lines and DETAILS_END in lines:
        lines[lines.index(DETAILS_BEGIN) : lines.index(DETAILS_END) + 1] = details
    else:
        lines += ["", *details]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None, help="PostgreSQL (default 3000)")
    parser.add_argument("--sqlite-events", type=int, default=None, help="SQLite (default 1000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent senders (16)")
    parser.add_argument("--quick", action="store_true", help="small sizes (600 PG, 300 SQLite)")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument(
        "--profile", type=float, default=0.0, help="py-spy the PostgreSQL servers for SECONDS"
    )
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    parser.add_argument("--pg-database", default=PG_DATABASE)
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    pg_size = args.events or (600 if args.quick else 3000)
    sqlite_size = args.sqlite_events or (300 if args.quick else 1000)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="invoicetrail-bench-") as scratch:
        scratch_dir = Path(scratch)
        pg_url, _dsn = prepare_postgres(args.pg_admin_dsn, args.pg_database)
        rows.append(
            bench_backend(
                "postgresql",
                pg_url,
                workers=2,
                size=pg_size,
                clients=args.clients,
                log_dir=scratch_dir,
                target_applies=True,
                profile_seconds=args.profile,
            )
        )
        print_row(rows[-1])
        if not args.skip_sqlite:
            sqlite_url = f"sqlite:///{scratch_dir / 'bench.db'}"
            invoicetrail(sqlite_url, "migrate")
            rows.append(
                bench_backend(
                    "sqlite",
                    sqlite_url,
                    workers=1,
                    size=sqlite_size,
                    clients=args.clients,
                    log_dir=scratch_dir,
                    target_applies=False,
                    profile_seconds=0.0,
                )
            )
            print_row(rows[-1])
    if not args.no_write:
        write_results(rows, args.results)
        print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
