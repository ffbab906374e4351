"""reconcile: three-way reconciliation of 1,000,000 (and 100,000) invoices, planted faults.

SPEC "Benchmarks" and issue 6: per size, a fresh PostgreSQL database is migrated with
`invoicetrail migrate`, an account is created with `invoicetrail accounts create`, then the
history of N invoices is bulk-loaded with COPY: customers, invoices (most paid, some open,
some void), payments (card / ACH / bank transfer, unique references), journal entries with
balanced lines (`finalize:<invoice>`, `receipt:<invoice>:<reference>`, `void:<invoice>`,
`unapplied:<payment>`), monthly CSV export batches whose rows the ERP acknowledged (synced),
and a recent batch still awaiting its answer. Clean data sits inside every window (ACH
processing for hours, invoices finalized an hour ago not yet delivered, a batch exported an
hour ago) so the windows are exercised too. The load skips the per-row foreign-key triggers
(session_replication_role = replica, when the user may): the rows are generated consistent.

0.1 % of N faults are planted, spread over every kind the checks raise; the exact list of
(kind, refs) is kept. Then `invoicetrail reconcile --account … --as-of TODAY --json` runs as a
child process (wall time and the child's own peak RSS from wait4), the open exception items
are compared with the planted list (every fault found, nothing else found), a same-run
baseline runs the same anti-joins as hand-written SQL through psycopg, and a second
reconcile on the same data must create no item. ratio = ours ÷ baseline (seconds).

Target: 1M invoices in ≤ 60 s on PostgreSQL with < 300 MiB peak RSS, every planted fault
found. Exits 1 when a planted fault is missed, something unplanted is found, or the re-run
creates items; the rows of bench/RESULTS.md are written either way (unless --no-write).

    .venv/bin/python bench/reconcile.py [--sizes 100000,1000000] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

BENCH = "reconcile"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
TABLE_HEADER = "| bench | backend | size | measured | baseline | ratio | target | met |"
TABLE_RULE = "|---|---|---|---|---|---|---|---|"
DETAILS_BEGIN = f"<!-- {BENCH}:details -->"
DETAILS_END = f"<!-- /{BENCH}:details -->"
TARGET_SIZE = 1_000_000
TARGET_SECONDS = 60.0
TARGET_RSS_MIB = 300.0
TARGET_TEXT = "≤ 60 s and < 300 MiB peak RSS, every planted fault found (1M invoices)"
PG_ADMIN_DSN = os.environ.get(
    "INVOICETRAIL_BENCH_POSTGRES_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
PG_DATABASE = "invoicetrail_bench_reconcile"

FORMAT = "csv"
FORMAT_LETTER = "C"  # exports.service.FORMAT_LETTERS["csv"]
CURRENCY = "eur"
SPAN_SECONDS = 400 * 86_400  # invoices created over the last 400 days
NEWEST_AGE_SECONDS = 3_600  # the newest invoice is an hour old
CUSTOMERS = 5_000
LINE_SLOTS = 8  # journal line seqs per invoice: finalize 0-2, receipt 3-4, void 5-7
FAULT_RATE = 0.001
RECEIVABLE = "Assets:Receivable"
REVENUE = "Income:Revenue"
TAX_PAYABLE = "Liabilities:Tax:Payable"
UNAPPLIED_CASH = "Liabilities:UnappliedCash"
CLEARING = {"stripe": "Assets:Clearing:Stripe", "manual": "Assets:Clearing:Manual"}

# Every kind the checks raise; the last two are payments parked without an invoice.
KINDS = (
    "missing_receipt_entry",
    "receipt_without_payment",
    "amount_mismatch",
    "duplicate_payment_reference",
    "ach_processing_overdue",
    "export_failed",
    "export_not_synced",
    "void_not_in_erp",
    "not_delivered",
    "payment_without_invoice",
    "unmatched_transfer",
)
PARKED_KINDS = ("payment_without_invoice", "unmatched_transfer")
STATUS_NEEDED = {
    "missing_receipt_entry": "paid",
    "receipt_without_payment": "paid",
    "amount_mismatch": "paid",
    "duplicate_payment_reference": "paid",
    "ach_processing_overdue": "open",
    "export_failed": "paid",
    "export_not_synced": "paid",
    "void_not_in_erp": "void",
    "not_delivered": "open",
}


def size_label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size % 1_000 == 0:
        return f"{size // 1_000}k"
    return f"{size:,}"


def period_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_index(period: str) -> int:
    return int(period[:4]) * 12 + int(period[5:7]) - 1


# --- the data: one deterministic plan, read by every COPY pass ------------------------------


@dataclass(frozen=True)
class Invoice:
    n: int
    id: str
    customer_id: str
    status: str  # paid | open | void
    method: str | None  # the paying method of a paid invoice
    collection_method: str
    created: datetime
    finalized: datetime
    delivered: datetime | None
    paid: datetime | None
    voided: datetime | None
    subtotal: int
    tax: int

    @property
    def total(self) -> int:
        return self.subtotal + self.tax


@dataclass(frozen=True)
class Payment:
    id: str
    invoice_id: str | None
    customer_id: str | None
    reference: str
    provider: str
    method: str
    amount: int
    status: str
    created: datetime
    received: datetime | None


@dataclass(frozen=True)
class Entry:
    id: str
    business_key: str
    created: datetime
    total: int
    description: str
    invoice_id: str | None
    payment_id: str | None
    customer_id: str | None
    reverses: str | None
    lines: tuple[tuple[int, str, str, int, int], ...]  # (seq, id, ledger account, debit, credit)


@dataclass
class Plan:
    size: int
    account_id: str
    legal_entity_id: str
    now: datetime
    tag: str = ""
    planted: dict[int, str] = field(default_factory=dict)  # invoice index → fault kind
    parked: list[str] = field(default_factory=list)  # fault kind per parked payment
    expected: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tag = self.account_id[-6:]
        self.old_before = self.now - timedelta(days=3) + timedelta(hours=2)
        self.recent_before = self.now - timedelta(hours=2)
        self.recent_batch_at = self.now - timedelta(hours=1)
        first = period_of((self.now - timedelta(seconds=SPAN_SECONDS + 86_400)).date())
        self.first_month = month_index(first)
        self.last_month = month_index(period_of(self.now.date()))
        self.recent_batch_seq = self.last_month - self.first_month + 2

    # ids have the shape of real ones: prefix + 26 characters
    def inv(self, n: int) -> str:
        return f"in_I{self.tag}{n:019d}"

    def pay(self, letter: str, n: int) -> str:
        return f"pay_{letter}{self.tag}{n:019d}"

    def je(self, letter: str, n: int) -> str:
        return f"je_{letter}{self.tag}{n:019d}"

    def jl(self, letter: str, n: int, position: int) -> str:
        return f"jl_{letter}{self.tag}{n:018d}{position}"

    def export_row_id(self, line_id: str) -> str:
        return f"exr_{line_id.split('_', 1)[1]}{FORMAT_LETTER}"

    def pev(self, p: int) -> str:
        return f"pev_E{self.tag}{p:019d}"

    def customer(self, c: int) -> str:
        return f"cus_C{self.tag}{c:019d}"

    def batch_id(self, seq: int) -> str:
        return f"exp_B{self.tag}{seq:019d}"

    def reference(self, n: int, method: str) -> str:
        if method == "bank_transfer":
            return f"BT{self.tag}{n:012d}"
        return f"pi_{self.tag}{n:018d}"

    def invoice(self, n: int) -> Invoice:
        age = NEWEST_AGE_SECONDS + (self.size - 1 - n) * SPAN_SECONDS / self.size
        created = self.now - timedelta(seconds=age)
        finalized = created + timedelta(seconds=60)
        bucket = (n * 7919 + 13) % 1000  # every bucket once per 1,000 invoices
        status = "void" if bucket < 50 else "open" if bucket < 200 else "paid"
        fault = self.planted.get(n)
        method: str | None = None
        paid = voided = None
        if status == "paid":
            slot = bucket % 20
            method = "card" if slot < 12 else "ach" if slot < 17 else "bank_transfer"
            collection = "charge_automatically" if method == "card" else "send_invoice"
            paid = created + timedelta(seconds=min(age / 2, 3 * 86_400))
        elif status == "open":
            collection = "send_invoice" if bucket % 2 == 0 else "charge_automatically"
        else:
            collection = "send_invoice"
            voided = created + timedelta(seconds=min(age / 2, 5 * 86_400))
        delivered = None
        if collection == "send_invoice" and (status != "open" or age > 20 * 3_600):
            delivered = created + timedelta(seconds=120)
        if fault == "not_delivered":
            collection, delivered = "send_invoice", None
        subtotal = 1_000 + n % 9_000
        return Invoice(
            n=n,
            id=self.inv(n),
            customer_id=self.customer(n % CUSTOMERS),
            status=status,
            method=method,
            collection_method=collection,
            created=created,
            finalized=finalized,
            delivered=delivered,
            paid=paid,
            voided=voided,
            subtotal=subtotal,
            tax=subtotal * 19 // 100,
        )

    def payments(self, inv: Invoice) -> list[Payment]:
        fault = self.planted.get(inv.n)
        out: list[Payment] = []
        if inv.status == "paid" and inv.paid is not None and inv.method is not None:
            method = inv.method
            reference = self.reference(inv.n, method)
            if fault == "duplicate_payment_reference":
                previous = self.invoice(inv.n - 1)  # paid, with its own clean payment
                reference = self.reference(previous.n, previous.method or "card")
            before = timedelta(days=3) if method == "ach" else timedelta(seconds=60)
            failed = fault == "receipt_without_payment"
            out.append(
                Payment(
                    id=self.pay("P", inv.n),
                    invoice_id=inv.id,
                    customer_id=inv.customer_id,
                    reference=reference,
                    provider="manual" if method == "bank_transfer" else "stripe",
                    method=method,
                    amount=inv.total,
                    status="failed" if failed else "succeeded",
                    created=max(inv.finalized, inv.paid - before),
                    received=None if failed else inv.paid,
                )
            )
        elif inv.status == "open":
            bucket = (inv.n * 7919 + 13) % 1000
            if fault == "ach_processing_overdue":
                since: datetime | None = self.now - timedelta(days=15)
            elif 50 <= bucket < 65:
                since = max(inv.finalized, self.now - timedelta(hours=1 + inv.n % 20))
            else:
                since = None
            if since is not None:
                out.append(
                    Payment(
                        id=self.pay("A", inv.n),
                        invoice_id=inv.id,
                        customer_id=inv.customer_id,
                        reference=f"pi_A{self.tag}{inv.n:017d}",
                        provider="stripe",
                        method="ach",
                        amount=inv.total,
                        status="processing",
                        created=since,
                        received=None,
                    )
                )
        return out

    def parked_payment(self, p: int) -> Payment:
        kind = self.parked[p]
        transfer = kind == "unmatched_transfer"
        created = self.now - timedelta(days=30 + p % 200, hours=p % 24)
        return Payment(
            id=self.pay("U", p),
            invoice_id=None,
            customer_id=None,
            reference=f"BTU{self.tag}{p:011d}" if transfer else f"pi_U{self.tag}{p:017d}",
            provider="manual" if transfer else "stripe",
            method="bank_transfer" if transfer else "card",
            amount=5_000 + p,
            status="succeeded",
            created=created,
            received=created,
        )

    def entries(self, inv: Invoice) -> list[Entry]:
        fault = self.planted.get(inv.n)
        base = inv.n * LINE_SLOTS + 1
        number = f"INV-{inv.created.year}-{inv.n + 1:07d}"
        finalize_id = self.je("F", inv.n)
        out = [
            Entry(
                id=finalize_id,
                business_key=f"finalize:{inv.id}",
                created=inv.finalized,
                total=inv.total,
                description=f"Invoice {number}",
                invoice_id=inv.id,
                payment_id=None,
                customer_id=inv.customer_id,
                reverses=None,
                lines=(
                    (base, self.jl("F", inv.n, 0), RECEIVABLE, inv.total, 0),
                    (base + 1, self.jl("F", inv.n, 1), REVENUE, 0, inv.subtotal),
                    (base + 2, self.jl("F", inv.n, 2), TAX_PAYABLE, 0, inv.tax),
                ),
            )
        ]
        if inv.status == "paid" and fault != "missing_receipt_entry":
            (payment,) = self.payments(inv)
            assert inv.paid is not None
            booked = payment.amount + (100 if fault == "amount_mismatch" else 0)
            out.append(
                Entry(
                    id=self.je("R", inv.n),
                    business_key=f"receipt:{inv.id}:{payment.reference}",
                    created=inv.paid,
                    total=booked,
                    description=f"Payment {payment.reference} for invoice {number}",
                    invoice_id=inv.id,
                    payment_id=payment.id,
                    customer_id=inv.customer_id,
                    reverses=None,
                    lines=(
                        (base + 3, self.jl("R", inv.n, 0), CLEARING[payment.provider], booked, 0),
                        (base + 4, self.jl("R", inv.n, 1), RECEIVABLE, 0, booked),
                    ),
                )
            )
        if inv.status == "void" and inv.voided is not None:
            out.append(
                Entry(
                    id=self.je("V", inv.n),
                    business_key=f"void:{inv.id}",
                    created=inv.voided,
                    total=inv.total,
                    description=f"Void of invoice {number}",
                    invoice_id=inv.id,
                    payment_id=None,
                    customer_id=inv.customer_id,
                    reverses=finalize_id,
                    lines=(
                        (base + 5, self.jl("V", inv.n, 0), RECEIVABLE, 0, inv.total),
                        (base + 6, self.jl("V", inv.n, 1), REVENUE, inv.subtotal, 0),
                        (base + 7, self.jl("V", inv.n, 2), TAX_PAYABLE, inv.tax, 0),
                    ),
                )
            )
        return out

    def parked_entry(self, p: int) -> Entry:
        payment = self.parked_payment(p)
        assert payment.received is not None
        base = self.size * LINE_SLOTS + 1 + p * 2
        return Entry(
            id=self.je("U", p),
            business_key=f"unapplied:{payment.id}",
            created=payment.received,
            total=payment.amount,
            description=f"Unapplied payment {payment.reference}",
            invoice_id=None,
            payment_id=payment.id,
            customer_id=None,
            reverses=None,
            lines=(
                (base, self.jl("U", p, 0), CLEARING[payment.provider], payment.amount, 0),
                (base + 1, self.jl("U", p, 1), UNAPPLIED_CASH, 0, payment.amount),
            ),
        )

    def all_entries(self) -> Iterator[Entry]:
        for n in range(self.size):
            yield from self.entries(self.invoice(n))
        for p in range(len(self.parked)):
            yield self.parked_entry(p)

    def batch_of(self, entry: Entry) -> int | None:
        """Old entries: their period's batch (acknowledged); recent: the batch awaiting its
        answer; the last two hours: not exported yet."""
        if entry.created < self.old_before:
            return month_index(period_of(entry.created.date())) - self.first_month + 1
        if entry.created < self.recent_before:
            return self.recent_batch_seq
        return None

    def batch_created(self, seq: int) -> datetime:
        if seq == self.recent_batch_seq:
            return self.recent_batch_at
        month = self.first_month + seq  # the month after the batch's period
        next_period = datetime(month // 12, month % 12 + 1, 2, 6, tzinfo=UTC)
        return min(next_period, self.old_before + timedelta(hours=1))

    def batch_period(self, seq: int) -> str:
        if seq == self.recent_batch_seq:
            return period_of(self.now.date())
        month = self.first_month + seq - 1
        return f"{month // 12:04d}-{month % 12 + 1:02d}"


def plant(plan: Plan) -> None:
    """Chooses the faulty invoices (old enough that every window has passed) and parked
    payments, 0.1 % of the invoices in all, spread over every kind; records what each must
    raise."""
    total = max(len(KINDS), round(plan.size * FAULT_RATE))
    order = [KINDS[i % len(KINDS)] for i in range(total)]
    invoice_faults = [kind for kind in order if kind not in PARKED_KINDS]
    limit = int(plan.size * 0.8)
    step = max(2, limit // max(len(invoice_faults), 1))
    used: set[int] = set()
    n = step // 2 + 1
    for kind in invoice_faults:
        while True:
            inv = plan.invoice(n)
            fits = inv.status == STATUS_NEEDED[kind] and n not in used
            if fits and kind == "duplicate_payment_reference":
                fits = plan.invoice(n - 1).status == "paid" and n - 1 not in used
            if fits:
                break
            n += 1
        if n >= int(plan.size * 0.85):
            raise SystemExit(f"cannot plant {total} faults in {plan.size} invoices")
        plan.planted[n] = kind
        used.update((n, n - 1, n + 1))
        n += step
    plan.parked = [kind for kind in order if kind in PARKED_KINDS]
    for n, kind in sorted(plan.planted.items()):
        inv = plan.invoice(n)
        refs: dict[str, str] = {"invoice": inv.id}
        if kind in ("missing_receipt_entry", "ach_processing_overdue"):
            refs["payment"] = plan.payments(inv)[0].id
        elif kind in ("receipt_without_payment", "amount_mismatch"):
            refs |= {"payment": plan.pay("P", n), "journal_entry": plan.je("R", n)}
        elif kind == "duplicate_payment_reference":
            refs = {"invoice": plan.inv(n - 1), "payment": plan.pay("P", n - 1)}
        elif kind in ("export_failed", "export_not_synced"):
            refs |= {
                "journal_entry": plan.je("F", n),
                "export_row": plan.export_row_id(plan.jl("F", n, 0)),
            }
        elif kind == "void_not_in_erp":
            refs["journal_entry"] = plan.je("V", n)
        plan.expected.append((kind, refs))
    for p, kind in enumerate(plan.parked):
        refs = {"payment": plan.pay("U", p)}
        if kind == "payment_without_invoice":
            refs["provider_event"] = plan.pev(p)
        plan.expected.append((kind, refs))


# --- database ----------------------------------------------------------------------------------


def conninfo(admin_dsn: str, database: str) -> tuple[str, str]:
    """(SQLAlchemy URL, psycopg DSN) of `database` on the admin DSN's server."""
    info = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    info["dbname"] = database
    dsn = psycopg.conninfo.make_conninfo("", **info)
    user = info.get("user", "postgres")
    password = f":{info['password']}" if info.get("password") else ""
    url = (
        f"postgresql+psycopg://{user}{password}@{info.get('host', '127.0.0.1')}:"
        f"{info.get('port', '5432')}/{database}"
    )
    return url, dsn


def invoicetrail_command() -> list[str]:
    script = Path(sys.executable).with_name("invoicetrail")
    return [str(script)] if script.exists() else [sys.executable, "-m", "invoicetrail"]


def cli_env(url: str) -> dict[str, str]:
    return {**os.environ, "INVOICETRAIL_DATABASE_URL": url}


def invoicetrail(url: str, *args: str) -> str:
    done = subprocess.run(
        [*invoicetrail_command(), *args],
        env=cli_env(url),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"invoicetrail {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def recreate_database(admin_dsn: str, database: str) -> tuple[str, str]:
    """Drops and creates the bench database, migrates it with `invoicetrail migrate`."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    url, dsn = conninfo(admin_dsn, database)
    invoicetrail(url, "migrate")
    return url, dsn


def drop_database(admin_dsn: str, database: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def bulk_load(dsn: str, plan: Plan) -> float:
    """COPY everything the checks read (and every NOT NULL column) in one transaction."""
    started = time.perf_counter()
    now = plan.now
    batch_counts: dict[int, Counter[str]] = {}
    failed_entry = {plan.je("F", n) for n, k in plan.planted.items() if k == "export_failed"}
    unanswered_entries = {
        plan.je("F", n) for n, k in plan.planted.items() if k == "export_not_synced"
    } | {plan.je("V", n) for n, k in plan.planted.items() if k == "void_not_in_erp"}
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        phases[name] = time.perf_counter() - mark
        mark = time.perf_counter()

    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        # The rows are generated consistent; skipping the per-row foreign-key triggers halves
        # the load (superuser only, so it is optional).
        try:
            with connection.transaction():
                cursor.execute("SET session_replication_role = replica")
        except psycopg.Error:
            pass
        with cursor.copy(
            "COPY customers (id, account_id, name, tax_ids, metadata, created_at) FROM STDIN"
        ) as copy:
            for c in range(CUSTOMERS):
                created = now - timedelta(seconds=SPAN_SECONDS + 86_400)
                copy.write_row(
                    (plan.customer(c), plan.account_id, f"Customer {c}", "[]", "{}", created)
                )
        phase("customers")
        with cursor.copy(
            "COPY invoices (id, account_id, legal_entity_id, customer_id, status, number, "
            "currency, collection_method, due_date, metadata, subtotal_minor, tax_minor, "
            "total_minor, amount_paid_minor, created_at, finalized_at, delivered_at, paid_at, "
            "voided_at) FROM STDIN"
        ) as copy:
            for n in range(plan.size):
                inv = plan.invoice(n)
                copy.write_row(
                    (
                        inv.id,
                        plan.account_id,
                        plan.legal_entity_id,
                        inv.customer_id,
                        inv.status,
                        f"INV-{inv.created.year}-{n + 1:07d}",
                        CURRENCY,
                        inv.collection_method,
                        inv.finalized.date() + timedelta(days=14),
                        "{}",
                        inv.subtotal,
                        inv.tax,
                        inv.total,
                        inv.total if inv.status == "paid" else 0,
                        inv.created,
                        inv.finalized,
                        inv.delivered,
                        inv.paid,
                        inv.voided,
                    )
                )
        phase("invoices")
        with cursor.copy(
            "COPY payments (id, account_id, invoice_id, customer_id, reference, provider, "
            "method, amount_minor, currency, status, provider_event_ids, created_at, "
            "updated_at, received_at) FROM STDIN"
        ) as copy:

            def payment_row(payment: Payment) -> tuple[Any, ...]:
                return (
                    payment.id,
                    plan.account_id,
                    payment.invoice_id,
                    payment.customer_id,
                    payment.reference,
                    payment.provider,
                    payment.method,
                    payment.amount,
                    CURRENCY,
                    payment.status,
                    "[]",
                    payment.created,
                    payment.received or payment.created,
                    payment.received,
                )

            for n in range(plan.size):
                for payment in plan.payments(plan.invoice(n)):
                    copy.write_row(payment_row(payment))
            for p in range(len(plan.parked)):
                copy.write_row(payment_row(plan.parked_payment(p)))
        phase("payments")
        with cursor.copy(
            "COPY provider_events (id, account_id, endpoint_id, provider, request_id, "
            "received_at, headers, body, body_bytes, body_truncated, verification, "
            "provider_event_id, event_type, outcome, payment_id, processed_at) FROM STDIN"
        ) as copy:
            # Only the parked card payments: payment_without_invoice is the one check that
            # reads provider events (their first event is the item's provider_event ref).
            for p, kind in enumerate(plan.parked):
                if kind != "payment_without_invoice":
                    continue
                payment = plan.parked_payment(p)
                copy.write_row(
                    (
                        plan.pev(p),
                        plan.account_id,
                        "stripe/bench",
                        "stripe",
                        f"req_E{plan.tag}{p:019d}",
                        payment.created,
                        "{}",
                        b"{}",
                        2,
                        False,
                        "verified",
                        f"evt_{plan.tag}{p:012d}",
                        "payment_intent.succeeded",
                        "applied",
                        payment.id,
                        payment.created,
                    )
                )
        phase("provider_events")
        with cursor.copy(
            "COPY journal_entries (id, account_id, business_key, entry_date, period, currency, "
            "debit_total_minor, credit_total_minor, description, invoice_id, payment_id, "
            "customer_id, reverses, created_at) FROM STDIN"
        ) as copy:
            for entry in plan.all_entries():
                day = entry.created.date()
                copy.write_row(
                    (
                        entry.id,
                        plan.account_id,
                        entry.business_key,
                        day,
                        period_of(day),
                        CURRENCY,
                        entry.total,
                        entry.total,
                        entry.description,
                        entry.invoice_id,
                        entry.payment_id,
                        entry.customer_id,
                        entry.reverses,
                        entry.created,
                    )
                )
        phase("journal_entries")
        with cursor.copy(
            "COPY journal_lines (seq, id, entry_id, account_id, position, ledger_account, "
            "debit_minor, credit_minor, currency) FROM STDIN"
        ) as copy:
            for entry in plan.all_entries():
                for position, (seq, line_id, ledger_account, debit, credit) in enumerate(
                    entry.lines
                ):
                    copy.write_row(
                        (
                            seq,
                            line_id,
                            entry.id,
                            plan.account_id,
                            position,
                            ledger_account,
                            debit,
                            credit,
                            CURRENCY,
                        )
                    )
        phase("journal_lines")
        with cursor.copy("COPY export_batch_rows (batch_seq, journal_line_seq) FROM STDIN") as copy:
            for entry in plan.all_entries():
                batch = plan.batch_of(entry)
                if batch is None:
                    continue
                for line in entry.lines:
                    copy.write_row((batch, line[0]))
        phase("export_batch_rows")
        with cursor.copy(
            "COPY export_rows (id, account_id, format, period, journal_entry_id, "
            "journal_line_seq, status, erp_record_id, error, created_at, updated_at, "
            "acknowledged_at) FROM STDIN"
        ) as copy:
            for entry in plan.all_entries():
                batch = plan.batch_of(entry)
                if batch is None:
                    continue
                counts = batch_counts.setdefault(batch, Counter())
                counts["rows"] += len(entry.lines)
                if batch == plan.recent_batch_seq or entry.id in unanswered_entries:
                    continue  # exported, no answer from the ERP (yet)
                answered = plan.batch_created(batch) + timedelta(hours=1)
                for position, (seq, line_id, *_rest) in enumerate(entry.lines):
                    failed = position == 0 and entry.id in failed_entry
                    counts["failed" if failed else "synced"] += 1
                    copy.write_row(
                        (
                            plan.export_row_id(line_id),
                            plan.account_id,
                            FORMAT,
                            plan.batch_period(batch),
                            entry.id,
                            seq,
                            "failed" if failed else "synced",
                            None if failed else f"ERP-{seq}",
                            "account 4000 is closed for posting" if failed else None,
                            answered,
                            answered,
                            answered,
                        )
                    )
        phase("export_rows")
        with cursor.copy(
            "COPY export_batches (seq, id, account_id, format, period, row_count, "
            "exported_count, synced_count, failed_count, accounts, totals, created_at, "
            "updated_at) FROM STDIN"
        ) as copy:
            for seq, counts in sorted(batch_counts.items()):
                synced_rows, failed_rows = counts["synced"], counts["failed"]
                created = plan.batch_created(seq)
                copy.write_row(
                    (
                        seq,
                        plan.batch_id(seq),
                        plan.account_id,
                        FORMAT,
                        plan.batch_period(seq),
                        counts["rows"],
                        counts["rows"] - synced_rows - failed_rows,
                        synced_rows,
                        failed_rows,
                        "[]",
                        "[]",
                        created,
                        created,
                    )
                )
        phase("export_batches")
        for table in ("journal_lines", "export_batches"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'), "
                f"(SELECT max(seq) FROM {table}))"
            )
        connection.commit()
    with psycopg.connect(dsn, autocommit=True) as connection:
        phase("commit")
        connection.execute("VACUUM ANALYZE")
    phase("vacuum analyze")
    print("  load: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items()))
    return time.perf_counter() - started


def table_counts(dsn: str) -> dict[str, int]:
    tables = (
        "invoices",
        "payments",
        "journal_entries",
        "journal_lines",
        "export_batches",
        "export_batch_rows",
        "export_rows",
    )
    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as connection:
        for table in tables:
            row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


# --- ours: the CLI, one child process at a time ---------------------------------------------


@dataclass
class Reconciled:
    seconds: float
    rss_mib: float
    run: dict[str, Any]


def reconcile(url: str, account_id: str) -> Reconciled:
    """`invoicetrail reconcile … --json` as a child; wall time and its own peak RSS (wait4)."""
    today = datetime.now(UTC).date().isoformat()
    command = [
        *invoicetrail_command(),
        "reconcile",
        "--account",
        account_id,
        "--as-of",
        today,
        "--json",
    ]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=cli_env(url))
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"invoicetrail reconcile failed:\n{stderr[-3000:]}")
    return Reconciled(seconds, usage.ru_maxrss / 1024, json.loads(stdout))


def open_items(dsn: str, account_id: str) -> tuple[list[tuple[str, dict[str, str]]], int]:
    """The active exception items as (kind, non-null refs), and how many items exist at all."""
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            "SELECT kind, refs FROM exception_items WHERE account_id = %s "
            "AND status IN ('open', 'snoozed') ORDER BY seq",
            (account_id,),
        ).fetchall()
        total = connection.execute(
            "SELECT count(*) FROM exception_items WHERE account_id = %s", (account_id,)
        ).fetchone()
    items = [
        (str(kind), {k: str(v) for k, v in (refs or {}).items() if v is not None})
        for kind, refs in rows
    ]
    return items, int(total[0]) if total else 0


def key_of(kind: str, refs: dict[str, str]) -> str:
    return kind + json.dumps(refs, sort_keys=True)


def compare(
    expected: Sequence[tuple[str, dict[str, str]]], found: Sequence[tuple[str, dict[str, str]]]
) -> tuple[list[str], list[str], int]:
    """(missed, unplanted, duplicates) between the planted list and what was found."""
    want = Counter(key_of(kind, refs) for kind, refs in expected)
    got = Counter(key_of(kind, refs) for kind, refs in found)
    missed = sorted((want - got).elements())
    unplanted = sorted(set(got) - set(want))
    duplicates = sum(count - 1 for count in got.values() if count > 1)
    return missed, unplanted, duplicates


# --- baseline: the same anti-joins, hand-written ---------------------------------------------

MONEY = "('succeeded', 'refunded', 'disputed')"
BASELINE_SQL: dict[str, str] = {
    "missing_receipt_entry": """
        SELECT p.invoice_id, p.id FROM payments p
        WHERE p.account_id = %(a)s AND p.received_at IS NOT NULL AND p.received_at <= %(i)s
          AND p.invoice_id IS NOT NULL AND NOT EXISTS (
              SELECT 1 FROM journal_entries e WHERE e.account_id = p.account_id
              AND e.payment_id = p.id AND e.business_key LIKE 'receipt:%%')
        UNION ALL
        SELECT p.invoice_id, p.id FROM payments p
        WHERE p.account_id = %(a)s AND p.received_at IS NOT NULL AND p.received_at <= %(i)s
          AND p.invoice_id IS NULL AND NOT EXISTS (
              SELECT 1 FROM journal_entries e WHERE e.account_id = p.account_id
              AND e.payment_id = p.id AND e.business_key = 'unapplied:' || p.id)""",
    "receipt_without_payment": f"""
        SELECT e.invoice_id, e.payment_id, e.id FROM journal_entries e
        WHERE e.account_id = %(a)s AND e.business_key LIKE 'receipt:%%'
          AND e.created_at <= %(i)s
          AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.account_id = e.account_id
              AND p.id = e.payment_id AND p.received_at IS NOT NULL AND p.status IN {MONEY})""",
    "amount_mismatch": """
        SELECT p.invoice_id, p.id, e.id FROM payments p
        JOIN journal_entries e ON e.account_id = p.account_id AND e.payment_id = p.id
          AND (e.business_key LIKE 'receipt:%%' OR e.business_key LIKE 'unapplied:%%')
        WHERE p.account_id = %(a)s AND p.received_at <= %(i)s
          AND (e.debit_total_minor <> p.amount_minor OR e.currency <> p.currency)""",
    "duplicate_payment_reference": f"""
        SELECT DISTINCT ON (p.reference) p.invoice_id, p.id FROM payments p
        JOIN (SELECT reference FROM payments WHERE account_id = %(a)s
                AND status IN ('processing', 'succeeded', 'refunded', 'disputed')
                AND created_at <= %(i)s GROUP BY reference HAVING count(*) > 1) d
          ON d.reference = p.reference
        WHERE p.account_id = %(a)s AND p.status IN ('processing', {MONEY[1:-1]})
        ORDER BY p.reference, p.seq""",
    "payment_without_invoice": """
        SELECT p.id, p.method, (SELECT pe.id FROM provider_events pe
                  WHERE pe.account_id = %(a)s AND pe.payment_id = p.id ORDER BY pe.seq LIMIT 1)
        FROM payments p
        WHERE p.account_id = %(a)s AND p.invoice_id IS NULL AND p.received_at IS NOT NULL
          AND p.received_at <= %(i)s AND p.status = 'succeeded'""",
    "ach_processing_overdue": """
        SELECT invoice_id, id FROM payments WHERE account_id = %(a)s
          AND status = 'processing' AND method = 'ach' AND created_at < %(ach)s""",
    "export_failed": """
        SELECT e.invoice_id, r.journal_entry_id, r.id FROM export_rows r
        JOIN journal_entries e ON e.id = r.journal_entry_id
        WHERE r.account_id = %(a)s AND r.status = 'failed'""",
    "export_not_synced": """
        SELECT e.invoice_id, e.id, b.format, min(l.id) FROM export_batch_rows br
        JOIN export_batches b ON b.seq = br.batch_seq
        JOIN journal_lines l ON l.seq = br.journal_line_seq
        JOIN journal_entries e ON e.id = l.entry_id
        WHERE b.account_id = %(a)s AND b.created_at < %(export)s
          AND e.business_key NOT LIKE 'void:%%'
          AND NOT EXISTS (SELECT 1 FROM export_rows r
              WHERE r.journal_line_seq = br.journal_line_seq AND r.format = b.format)
        GROUP BY e.id, e.invoice_id, b.format""",
    "void_not_in_erp": """
        SELECT DISTINCT i.id, v.id FROM invoices i
        JOIN journal_entries v ON v.account_id = i.account_id AND v.invoice_id = i.id
          AND v.business_key = 'void:' || i.id
        JOIN journal_entries f ON f.account_id = i.account_id AND f.invoice_id = i.id
          AND f.business_key = 'finalize:' || i.id
        JOIN export_rows fr ON fr.journal_entry_id = f.id AND fr.status = 'synced'
        WHERE i.account_id = %(a)s AND i.status = 'void' AND v.created_at < %(export)s
          AND NOT EXISTS (SELECT 1 FROM export_rows vr WHERE vr.journal_entry_id = v.id
              AND vr.format = fr.format AND vr.status = 'synced')""",
    "not_delivered": """
        SELECT id FROM invoices WHERE account_id = %(a)s AND status = 'open'
          AND collection_method = 'send_invoice' AND delivered_at IS NULL
          AND finalized_at < %(delivery)s""",
    "invoices_checked": """
        SELECT count(*) FROM invoices WHERE account_id = %(a)s AND status <> 'draft'
          AND created_at <= %(i)s""",
}


def baseline_findings(name: str, rows: list[tuple[Any, ...]]) -> list[tuple[str, dict[str, str]]]:
    """The baseline's rows as (kind, refs), as the checks would raise them."""
    out: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        if name == "missing_receipt_entry":
            out.append((name, {"invoice": row[0], "payment": row[1]}))
        elif name in ("receipt_without_payment", "amount_mismatch"):
            out.append((name, {"invoice": row[0], "payment": row[1], "journal_entry": row[2]}))
        elif name in ("duplicate_payment_reference", "ach_processing_overdue"):
            out.append((name, {"invoice": row[0], "payment": row[1]}))
        elif name == "payment_without_invoice":
            kind = "unmatched_transfer" if row[1] == "bank_transfer" else name
            out.append((kind, {"payment": row[0], "provider_event": row[2]}))
        elif name == "export_failed":
            out.append((name, {"invoice": row[0], "journal_entry": row[1], "export_row": row[2]}))
        elif name == "export_not_synced":
            row_id = f"exr_{row[3].split('_', 1)[1]}{FORMAT_LETTER}"
            out.append((name, {"invoice": row[0], "journal_entry": row[1], "export_row": row_id}))
        elif name == "void_not_in_erp":
            out.append((name, {"invoice": row[0], "journal_entry": row[1]}))
        elif name == "not_delivered":
            out.append((name, {"invoice": row[0]}))
    return [(kind, {k: str(v) for k, v in refs.items() if v is not None}) for kind, refs in out]


def baseline(dsn: str, account_id: str) -> tuple[float, list[tuple[str, dict[str, str]]]]:
    """One hand-written query per check (and the invoice count), one connection, one
    transaction, rows fetched; the windows are the ones the service computes."""
    from invoicetrail.core.config import Settings
    from invoicetrail.reconciliation.checks import window_for

    started = time.perf_counter()
    now = datetime.now(UTC)
    window = window_for(now, Settings())
    params = {
        "a": account_id,
        "i": window.instant,
        "ach": window.ach_cutoff,
        "export": window.export_cutoff,
        "delivery": window.delivery_cutoff,
    }
    results: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(dsn) as connection:
        for name, sql in BASELINE_SQL.items():
            results[name] = connection.execute(sql, params).fetchall()
    seconds = time.perf_counter() - started
    found = [f for name, rows in results.items() for f in baseline_findings(name, rows)]
    return seconds, found


# --- one size ----------------------------------------------------------------------------------


@dataclass
class SizeRun:
    size: int
    load_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    planted: int = 0
    first: Reconciled | None = None
    second: Reconciled | None = None
    baseline_seconds: float = 0.0
    found: int = 0
    missed: list[str] = field(default_factory=list)
    unplanted: list[str] = field(default_factory=list)
    duplicates: int = 0
    baseline_missed: int = 0
    baseline_unplanted: int = 0
    rerun_problems: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    load_average: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missed or self.unplanted or self.duplicates or self.rerun_problems)

    @property
    def seconds(self) -> float:
        return self.first.seconds if self.first else 0.0

    @property
    def rss(self) -> float:
        return max(r.rss_mib for r in (self.first, self.second) if r is not None)

    @property
    def ratio(self) -> float:
        return self.seconds / self.baseline_seconds if self.baseline_seconds else 0.0

    @property
    def met(self) -> bool:
        return self.ok and self.seconds <= TARGET_SECONDS and self.rss < TARGET_RSS_MIB

    def table_row(self) -> str:
        target_applies = self.size >= TARGET_SIZE
        target = TARGET_TEXT if target_applies else "— (reported only)"
        met = ("yes" if self.met else "no") if target_applies else "—"
        return (
            f"| {BENCH} | postgresql | {size_label(self.size)} | {self.seconds:.1f} s, "
            f"{self.rss:.0f} MiB peak RSS | {self.baseline_seconds:.1f} s (hand-written SQL, "
            f"psycopg) | {self.ratio:.2f} | {target} | {met} |"
        )

    def detail(self) -> str:
        second = self.second.seconds if self.second else 0.0
        verdict = (
            f"all {self.planted:,} planted faults found, nothing else"
            if self.ok
            else f"{len(self.missed)} planted faults missed, {len(self.unplanted)} unplanted "
            f"found, {self.duplicates} duplicates, re-run: {'; '.join(self.rerun_problems)}"
        )
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.by_kind.items()))
        rows = ", ".join(f"{name} {count:,}" for name, count in self.rows.items())
        return (
            f"- **postgresql, {size_label(self.size)} invoices**: {self.seconds:.1f} s "
            f"({self.size / self.seconds:,.0f} invoices/s), peak RSS {self.rss:.0f} MiB "
            f"(1-min load average {self.load_average:.1f}); "
            f"{self.found:,} findings ({kinds}); {verdict}. Re-run on the same data: "
            f"{second:.1f} s, 0 new items. Baseline {self.baseline_seconds:.2f} s (ratio "
            f"{self.ratio:.2f}; it found the same {self.planted:,}: "
            f"{'yes' if not (self.baseline_missed or self.baseline_unplanted) else 'no'}). "
            f"Bulk load {self.load_seconds:.0f} s ({rows})."
        )


def bench_size(admin_dsn: str, database: str, size: int, keep: bool) -> SizeRun:
    run = SizeRun(size=size)
    print(f"\n{BENCH} · postgresql · {size_label(size)} invoices", flush=True)
    url, dsn = recreate_database(admin_dsn, database)
    created = json.loads(
        invoicetrail(url, "accounts", "create", "--name", f"bench reconcile {size_label(size)}")
    )
    account_id = str(created["id"])
    with psycopg.connect(dsn) as connection:
        found = connection.execute(
            "SELECT id FROM legal_entities WHERE account_id = %s", (account_id,)
        ).fetchone()
    assert found is not None
    plan = Plan(size, account_id, str(found[0]), datetime.now(UTC))
    plant(plan)
    run.planted = len(plan.expected)
    run.load_seconds = bulk_load(dsn, plan)
    run.rows = table_counts(dsn)
    print(
        f"  loaded in {run.load_seconds:.1f} s: "
        + ", ".join(f"{k} {v:,}" for k, v in run.rows.items())
        + f"; planted {run.planted:,} faults",
        flush=True,
    )

    run.first = reconcile(url, account_id)
    run.load_average = os.getloadavg()[0]
    items, total_items = open_items(dsn, account_id)
    run.found = len(items)
    run.by_kind = dict(Counter(kind for kind, _ in items))
    run.missed, run.unplanted, run.duplicates = compare(plan.expected, items)
    if run.first.run.get("items", {}).get("created") != run.planted:
        run.rerun_problems.append(f"first run created {run.first.run.get('items')}")
    print(
        f"  reconcile   {run.first.seconds:6.1f} s  {size / run.first.seconds:>9,.0f} invoices/s"
        f"  peak RSS {run.first.rss_mib:5.0f} MiB  load {run.load_average:.1f}"
        f"  findings {run.found:,}"
        f" (planted {run.planted:,}: missed {len(run.missed)}, unplanted {len(run.unplanted)},"
        f" duplicates {run.duplicates})",
        flush=True,
    )
    for key in run.missed[:10]:
        print(f"    missed    {key}")
    for key in run.unplanted[:10]:
        print(f"    unplanted {key}")

    run.baseline_seconds, baseline_found = baseline(dsn, account_id)
    missed, unplanted, _ = compare(plan.expected, baseline_found)
    run.baseline_missed, run.baseline_unplanted = len(missed), len(unplanted)
    same = f"no: {len(missed)} missed, {len(unplanted)} other" if missed or unplanted else "yes"
    print(
        f"  baseline    {run.baseline_seconds:6.1f} s  "
        f"{size / run.baseline_seconds:>9,.0f} invoices/s  (same faults: "
        f"{same})"
        f"  ratio {run.ratio:.2f}",
        flush=True,
    )

    run.second = reconcile(url, account_id)
    items_after, total_after = open_items(dsn, account_id)
    made = run.second.run.get("items", {})
    if made.get("created") or made.get("resolved") or total_after != total_items:
        run.rerun_problems.append(f"re-run items {made}, {total_items} → {total_after} items")
    if compare(plan.expected, items_after) != ([], [], 0):
        run.rerun_problems.append("re-run changed the open items")
    print(
        f"  re-run      {run.second.seconds:6.1f} s  peak RSS {run.second.rss_mib:5.0f} MiB  "
        f"items {made}",
        flush=True,
    )
    if size >= TARGET_SIZE:
        print(f"  target {TARGET_TEXT}: {'met' if run.met else 'NOT met'}")
    if not keep:
        drop_database(admin_dsn, database)
    return run


# --- RESULTS.md -------------------------------------------------------------------------------


def write_results(runs: Sequence[SizeRun], path: Path = RESULTS_PATH) -> None:
    """Replaces this bench's rows for the sizes run (other benches' rows and other sizes stay)
    and its details block."""
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    labels = {size_label(run.size) for run in runs}

    def size_of_row(line: str) -> str:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        return cells[2] if len(cells) > 2 else ""

    def size_value(label: str) -> float:
        units = {"k": 1e3, "M": 1e6}
        return float(label[:-1]) * units[label[-1]] if label[-1:] in units else 0.0

    if TABLE_HEADER not in lines:
        lines = [
            "# Benchmark results",
            "",
            "Written by `bench/*.py` (`make bench`); ratio = ours ÷ same-run baseline.",
            "",
            TABLE_HEADER,
            TABLE_RULE,
            *([""] if lines else []),
            *lines,
        ]
    start = lines.index(TABLE_HEADER)
    end = start + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    rows = lines[start + 2 : end]
    mine = [
        line for line in rows if line.startswith(f"| {BENCH} |") and size_of_row(line) not in labels
    ] + [run.table_row() for run in runs]
    mine.sort(key=lambda line: -size_value(size_of_row(line)))
    old_at = next((i for i, line in enumerate(rows) if line.startswith(f"| {BENCH} |")), None)
    others = [line for line in rows if not line.startswith(f"| {BENCH} |")]
    if old_at is None:
        # Bench order of the SPEC: reconcile comes before export.
        at = next(
            (i for i, line in enumerate(others) if line.startswith("| export |")), len(others)
        )
    else:
        at = len([line for line in rows[:old_at] if not line.startswith(f"| {BENCH} |")])
    lines[start:end] = [TABLE_HEADER, TABLE_RULE, *others[:at], *mine, *others[at:]]

    kept: list[str] = []
    if DETAILS_BEGIN in lines and DETAILS_END in lines:
        block = lines[lines.index(DETAILS_BEGIN) : lines.index(DETAILS_END)]
        kept = [
            line
            for line in block
            if line.startswith("- **postgresql, ")
            and line.split(",")[1].split()[0].strip("*") not in labels
        ]
    size_lines = sorted(
        kept + [run.detail() for run in runs],
        key=lambda line: -size_value(line.split(",")[1].split()[0].strip("*")),
    )
    details = [
        DETAILS_BEGIN,
        f"### {BENCH}",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs. Per size, a "
        "fresh database (migrated by `invoicetrail migrate`) is bulk-loaded with COPY: N "
        "invoices over 400 days (80 % paid, 15 % open, 5 % void; card, ACH and bank "
        "transfer), their payments, finalize / receipt / void entries with balanced lines, "
        "monthly CSV export batches acknowledged by the ERP and a recent batch awaiting its "
        "answer; 0.1 % of N faults planted over all 11 kinds the checks raise (missing "
        "receipt entry, receipt without payment, amount mismatch, duplicate reference, ACH "
        "processing overdue, failed export row, export not synced, void not in ERP, not "
        "delivered, parked card payment, unmatched transfer). `measured` is the wall time of "
        "`invoicetrail reconcile --as-of TODAY --json` as a child process (start-up, the ten "
        "checks, the exception items and run record written in one transaction) and its "
        "peak RSS (wait4 ru_maxrss); the planted list is compared with the open exception "
        "items by kind and refs. Baseline: the same ten queries and the invoice count, "
        "hand-written, run through psycopg on one connection (rows fetched, no writes); "
        "ratio = ours ÷ baseline. The machine is shared with other work, so figures move "
        "between runs.",
        "",
        *size_lines,
        DETAILS_END,
    ]
    if DETAILS_BEGIN in lines and DETAILS_END in lines:
        lines[lines.index(DETAILS_BEGIN) : lines.index(DETAILS_END) + 1] = details
    else:
        lines += ["", *details]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="invoices per run")
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    parser.add_argument("--pg-database", default=PG_DATABASE)
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the last database")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",") if size]
    runs = [
        bench_size(args.pg_admin_dsn, args.pg_database, size, args.keep and i == len(sizes) - 1)
        for i, size in enumerate(sizes)
    ]
    if not args.no_write:
        write_results(runs, args.results)
        print(f"\nwrote {args.results}")
    failed = [size_label(run.size) for run in runs if not run.ok]
    if failed:
        print(f"planted-fault verification FAILED at {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
