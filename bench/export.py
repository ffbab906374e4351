"""export: build and stream an ERP export of 1,000,000 (and 100,000) journal lines.

SPEC "Benchmarks" and issue 5: bulk-load the journal lines (COPY into journal_entries and
journal_lines, one account and one period), then, for each format, export them through the
service exactly as `POST /v1/exports` + `GET /v1/exports/{id}/file` do: build the batch in
one transaction (export rows + batch membership + summary), commit, then stream the file
from a server-side cursor. Each format runs in its own child process so its peak RSS
(VmHWM) is its own. The same-run baseline is a plain `COPY (SELECT … the same columns …)
TO STDOUT` of the same rows in the same order. ratio = ours ÷ baseline (seconds).

Target: ≤ 30 s and < 200 MiB peak RSS for 1M lines on PostgreSQL, every format. The script
prints the figures and rewrites the export rows of bench/RESULTS.md; it asserts nothing.

    .venv/bin/python bench/export.py [--sizes 1000000,100000] [--formats csv,hledger]
                                     [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

BENCH = "export"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
TABLE_HEADER = "| bench | backend | size | measured | baseline | ratio | target | met |"
TABLE_RULE = "|---|---|---|---|---|---|---|---|"
DETAILS_BEGIN = f"<!-- {BENCH}:details -->"
DETAILS_END = f"<!-- /{BENCH}:details -->"
TARGET_SECONDS = 30.0
TARGET_RSS_MIB = 200.0
TARGET_TEXT = "≤ 30 s and < 200 MiB peak RSS (1M lines, every format)"
PG_ADMIN_DSN = os.environ.get(
    "INVOICETRAIL_BENCH_POSTGRES_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
PG_DATABASE = "invoicetrail_bench_export"
FORMATS = ("csv", "jsonl", "netsuite", "quickbooks", "xero", "hledger", "beancount")
LINES_PER_ENTRY = 3
PERIODS = {1_000_000: "2026-09", 100_000: "2026-10"}


def size_label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size % 1_000 == 0:
        return f"{size // 1_000}k"
    return f"{size:,}"


# --- database --------------------------------------------------------------------------------


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
    from invoicetrail.core.config import Settings
    from invoicetrail.core.migrate import upgrade

    upgrade(Settings(database_url=url))
    return url, dsn


def create_account(url: str, name: str) -> str:
    from invoicetrail.accounts import service as accounts
    from invoicetrail.core.config import Settings
    from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction

    engine = make_engine(Settings(database_url=url))
    try:
        with write_transaction(make_sessionmaker(engine)) as session:
            created = accounts.create_account(
                session, name=name, country=None, now=datetime.now(UTC)
            )
            session.commit()
            return created.account.id
    finally:
        engine.dispose()


def bulk_load(dsn: str, account_id: str, period: str, line_count: int) -> float:
    """COPY journal entries of 3 balanced lines each (receivable / revenue / tax) into one
    period; returns seconds. Ids have the shape of real ones (`je_` + 26 characters)."""
    started = time.perf_counter()
    entry_count = line_count // LINES_PER_ENTRY
    first_day = date.fromisoformat(f"{period}-01")
    created_at = datetime.now(UTC)
    tag = account_id[-6:]
    with psycopg.connect(dsn) as connection:
        with connection.cursor() as cursor:
            with cursor.copy(
                "COPY journal_entries (id, account_id, business_key, entry_date, period, "
                "currency, debit_total_minor, credit_total_minor, description, invoice_id, "
                "customer_id, created_at) FROM STDIN"
            ) as copy:
                for number in range(entry_count):
                    invoice_id = f"in_B{tag}{number:019d}"
                    total = 1190 + number % 10_000
                    copy.write_row(
                        (
                            f"je_B{tag}{number:019d}",
                            account_id,
                            f"finalize:{invoice_id}",
                            first_day + timedelta(days=number % 28),
                            period,
                            "eur",
                            total,
                            total,
                            f"Invoice BENCH-{number:07d}",
                            invoice_id,
                            f"cus_B{tag}{number % 5000:019d}",
                            created_at,
                        )
                    )
            with cursor.copy(
                "COPY journal_lines (id, entry_id, account_id, position, ledger_account, "
                "debit_minor, credit_minor, currency) FROM STDIN"
            ) as copy:
                for number in range(entry_count):
                    entry_id = f"je_B{tag}{number:019d}"
                    total = 1190 + number % 10_000
                    tax = total // 10
                    for position, (account, debit, credit) in enumerate(
                        (
                            ("Assets:Receivable", total, 0),
                            ("Income:Revenue", 0, total - tax),
                            ("Liabilities:Tax:Payable", 0, tax),
                        )
                    ):
                        copy.write_row(
                            (
                                f"jl_B{tag}{number:018d}{position}",
                                entry_id,
                                account_id,
                                position,
                                account,
                                debit,
                                credit,
                                "eur",
                            )
                        )
        connection.commit()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE journal_entries")
        connection.execute("VACUUM ANALYZE journal_lines")
    return time.perf_counter() - started


def baseline_copy(dsn: str, batch_id: str) -> tuple[float, int]:
    """The same rows and columns (the row id included), joined and ordered the same way,
    straight out of COPY."""
    sql = (
        "COPY (SELECT 'exr_' || substr(l.id, 4) || 'C', l.entry_id, l.id, l.position, "
        "e.entry_date, e.period, e.business_key, e.description, l.ledger_account, "
        "l.debit_minor, l.credit_minor, l.currency, e.invoice_id, e.payment_id, "
        "e.credit_note_id, e.customer_id, e.reverses "
        "FROM export_batches b "
        "JOIN journal_entries e ON e.account_id = b.account_id AND e.period = b.period "
        "JOIN journal_lines l ON l.entry_id = e.id "
        "WHERE b.id = %s AND EXISTS (SELECT 1 FROM export_batch_rows br "
        "WHERE br.batch_seq = b.seq AND br.journal_line_seq = l.seq) "
        "ORDER BY e.seq, l.position) TO STDOUT WITH (FORMAT csv)"
    )
    started = time.perf_counter()
    lines = 0
    with (
        psycopg.connect(dsn) as connection,
        connection.cursor() as cursor,
        cursor.copy(sql, (batch_id,)) as copy,
    ):
        for block in copy:
            lines += bytes(block).count(b"\n")
    return time.perf_counter() - started, lines


# --- one format, in its own process -----------------------------------------------------------


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(url: str, account_id: str, format_name: str, period: str) -> dict[str, Any]:
    """POST /v1/exports then GET …/file, through the service, in this process."""
    import invoicetrail.models  # noqa: F401  (every table, so foreign keys resolve)
    from invoicetrail.core.config import Settings
    from invoicetrail.core.context import Ctx
    from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
    from invoicetrail.core.ids import new_id
    from invoicetrail.exports import service

    settings = Settings(database_url=url)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    with write_transaction(sessions) as session:
        ctx = Ctx(
            session=session,
            account_id=account_id,
            request_id=new_id("req"),
            now=datetime.now(UTC),
            settings=settings,
        )
        batch = service.create(ctx, format_name, period)
        batch_id, row_count = batch.id, batch.row_count
        session.commit()
    built = time.perf_counter()
    size = 0
    lines = 0
    with open(os.devnull, "wb") as sink:
        for chunk in service.file_chunks(sessions, account_id, batch_id):
            size += len(chunk)
            lines += chunk.count(b"\n")
            sink.write(chunk)
    streamed = time.perf_counter()
    engine.dispose()
    return {
        "format": format_name,
        "batch": batch_id,
        "rows": row_count,
        "build_seconds": built - started,
        "stream_seconds": streamed - built,
        "seconds": streamed - started,
        "bytes": size,
        "lines": lines,
        "rss_mib": peak_rss_mib(),
        "rss_at_start_mib": rss_before,
    }


def run_child(url: str, account_id: str, format_name: str, period: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            json.dumps(
                {"url": url, "account": account_id, "format": format_name, "period": period}
            ),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"export child {format_name} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- reporting -------------------------------------------------------------------------------


@dataclass
class SizeRun:
    size: int
    load_seconds: float
    results: list[dict[str, Any]] = field(default_factory=list)
    baseline_seconds: float = 0.0
    baseline_lines: int = 0

    @property
    def worst(self) -> dict[str, Any]:
        return max(self.results, key=lambda r: r["seconds"])

    @property
    def peak_rss(self) -> float:
        return max(r["rss_mib"] for r in self.results)

    @property
    def ratio(self) -> float:
        return self.worst["seconds"] / self.baseline_seconds if self.baseline_seconds else 0.0

    @property
    def met(self) -> bool:
        return all(
            r["seconds"] <= TARGET_SECONDS and r["rss_mib"] < TARGET_RSS_MIB for r in self.results
        )

    def table_row(self) -> str:
        target_applies = self.size >= 1_000_000
        target = TARGET_TEXT if target_applies else "— (reported only)"
        met = ("yes" if self.met else "no") if target_applies else "—"
        worst = self.worst
        return (
            f"| {BENCH} | postgresql | {size_label(self.size)} | {worst['seconds']:.1f} s, "
            f"{self.peak_rss:.0f} MiB peak RSS | "
            f"{self.baseline_seconds:.1f} s (COPY TO STDOUT) | {self.ratio:.2f} | {target} | "
            f"{met} |"
        )

    def details(self) -> list[str]:
        out = [
            f"- **postgresql, {size_label(self.size)} lines** (slowest: "
            f"`{self.worst['format']}`; bulk load {self.load_seconds:.1f} s; "
            f"baseline COPY {self.baseline_seconds:.2f} s, {self.baseline_lines:,} lines, "
            f"{self.baseline_lines / self.baseline_seconds:,.0f} lines/s):",
        ]
        for r in self.results:
            out.append(
                f"  - `{r['format']}`: {r['seconds']:.1f} s = build {r['build_seconds']:.1f} s + "
                f"stream {r['stream_seconds']:.1f} s; {r['rows'] / r['seconds']:,.0f} lines/s "
                f"overall, {r['rows'] / r['stream_seconds']:,.0f} lines/s streamed; "
                f"{r['bytes'] / 1_048_576:,.0f} MiB file; peak RSS {r['rss_mib']:.0f} MiB; "
                f"stream ÷ COPY {r['stream_seconds'] / self.baseline_seconds:.2f}"
            )
        return out


def print_run(run: SizeRun) -> None:
    print(f"\n{BENCH} · postgresql · {size_label(run.size)} lines (load {run.load_seconds:.1f} s)")
    print(f"  baseline COPY TO STDOUT  {run.baseline_seconds:6.2f} s  {run.baseline_lines:,} lines")
    for r in run.results:
        print(
            f"  {r['format']:<11} {r['seconds']:6.1f} s (build {r['build_seconds']:5.1f} + "
            f"stream {r['stream_seconds']:5.1f})  {r['rows'] / r['seconds']:>9,.0f} lines/s  "
            f"peak RSS {r['rss_mib']:5.0f} MiB  rows {r['rows']:,}"
        )
    print(f"  ratio (slowest ÷ COPY)  {run.ratio:.2f}")
    if run.size >= 1_000_000:
        print(f"  target {TARGET_TEXT}: {'met' if run.met else 'NOT met'}")


def write_results(runs: Sequence[SizeRun], path: Path = RESULTS_PATH) -> None:
    """Replaces this bench's rows in the first table (keeping other benches' rows) and its
    details block."""
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    mine = [run.table_row() for run in sorted(runs, key=lambda r: -r.size)]
    if TABLE_HEADER in lines:
        start = lines.index(TABLE_HEADER)
        end = start + 2
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        rows = lines[start + 2 : end]
        others = [line for line in rows if not line.startswith(f"| {BENCH} |")]
        # Keep the benches' order: ours where our old rows were, else at the end.
        old_at = next((i for i, line in enumerate(rows) if line.startswith(f"| {BENCH} |")), None)
        if old_at is None:
            merged = others + mine
        else:
            before = [line for line in rows[:old_at] if not line.startswith(f"| {BENCH} |")]
            merged = before + mine + [line for line in others if line not in before]
        lines[start:end] = [TABLE_HEADER, TABLE_RULE, *merged]
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
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs. Journal lines "
        "bulk-loaded with COPY (3 per entry, one account, one period). Per format, in its own "
        "process: the service builds the batch in one committed transaction (membership "
        "and summary) as `POST /v1/exports` does, then streams the file from a server-side "
        "cursor as `GET /v1/exports/{id}/file` does. `measured` is the slowest format "
        "(build + stream) and the highest peak RSS (VmHWM) of any format; baseline: "
        "`COPY (SELECT the same columns, same joins and order) TO STDOUT`. The machine is "
        "shared with other work, so figures move by ±30 % between runs.",
        "",
        *[line for run in sorted(runs, key=lambda r: -r.size) for line in run.details()],
        DETAILS_END,
    ]
    if DETAILS_BEGIN in lines and DETAILS_END in lines:
        lines[lines.index(DETAILS_BEGIN) : lines.index(DETAILS_END) + 1] = details
    else:
        lines += ["", *details]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,100000", help="journal lines per run")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    parser.add_argument("--pg-database", default=PG_DATABASE)
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(spec["url"], spec["account"], spec["format"], spec["period"])))
        return 0

    sizes = [int(size) for size in args.sizes.split(",")]
    formats = [name for name in args.formats.split(",") if name]
    url, dsn = prepare_postgres(args.pg_admin_dsn, args.pg_database)
    runs: list[SizeRun] = []
    for size in sizes:
        account_id = create_account(url, f"bench export {size_label(size)}")
        period = PERIODS.get(size, "2026-08")
        run = SizeRun(size=size, load_seconds=bulk_load(dsn, account_id, period, size))
        for format_name in formats:
            run.results.append(run_child(url, account_id, format_name, period))
            print(f"  … {size_label(size)} {format_name}: {run.results[-1]['seconds']:.1f} s")
        csv_batch = next(r["batch"] for r in run.results)
        run.baseline_seconds, run.baseline_lines = baseline_copy(dsn, csv_batch)
        print_run(run)
        runs.append(run)
    if not args.no_write:
        write_results(runs, args.results)
        print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
