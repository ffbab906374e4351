"""ERP exports: the only writer of export batches, their membership and the ERP's answers.

Every journal line is an export row in each format, `exr_…` (its line id's body and the
format's letter). A row is "ready" until a batch of its format takes its line, then
`exported` (a membership row, no answer yet), then `synced` or `failed` when the ERP
answers (an `export_rows` record). A batch holds every line of its period not yet synced in
its format; if those are exactly the latest batch's lines, that batch is the answer (same
id, same bytes).

The journal is read set-based (an export is a bulk read of journal lines, like a
reconciliation run) and never written. Queries are driven from the journal side: right
after a million-line batch the export tables' statistics are stale, the journal's are not.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import String, and_, func, insert, literal, select, text
from sqlalchemy.orm import Session, sessionmaker

from invoicetrail.core.context import Ctx
from invoicetrail.core.db import bound_statements, read_session
from invoicetrail.core.errors import InvalidTransition, NotFound, ValidationFailed, invariant
from invoicetrail.core.faults import crash_point
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.events import service as events
from invoicetrail.exceptions import service as exceptions
from invoicetrail.exports.formats import FORMATS, AccountUse, ExportLine, FileFacts
from invoicetrail.exports.models import ExportBatch, ExportBatchRow, ExportRow
from invoicetrail.exports.schemas import ExportOut, ExportRowOut, RowAcknowledgement
from invoicetrail.ledger import service as ledger
from invoicetrail.ledger.models import JournalEntry, JournalLine

EXPORTED, SYNCED, FAILED = "exported", "synced", "failed"
FORMAT_LETTERS = {
    "csv": "C",
    "jsonl": "J",
    "netsuite": "N",
    "quickbooks": "Q",
    "xero": "X",
    "hledger": "H",
    "beancount": "B",
}
_FORMAT_OF_LETTER = {letter: name for name, letter in FORMAT_LETTERS.items()}
FILE_CHUNK_CHARACTERS = 64 * 1024
STREAM_BATCH_ROWS = 5000
IN_CLAUSE_IDS_MAX = 500
# PostgreSQL: building a batch hashes and the file's query sorts every line of it; give
# them room in memory for the length of that transaction only.
BULK_WORK_MEM = "64MB"
_LOCK_NAMESPACE = int.from_bytes(
    hashlib.sha256(b"invoicetrail.exports").digest()[:4], "big", signed=True
)


def row_id_of(line_id: str, format_name: str) -> str:
    """`jl_01J…` in `csv` → `exr_01J…C`."""
    return f"exr_{line_id.split('_', 1)[-1]}{FORMAT_LETTERS[format_name]}"


def line_id_of(row_id: str) -> tuple[str, str] | None:
    """`exr_01J…C` → (`jl_01J…`, `csv`); None when it cannot be an export row id."""
    body = row_id.removeprefix("exr_")
    if body == row_id or len(body) < 2 or body[-1] not in _FORMAT_OF_LETTER:
        return None
    return f"jl_{body[:-1]}", _FORMAT_OF_LETTER[body[-1]]


# --- building a batch ----------------------------------------------------------------------


def create(ctx: Ctx, format_name: str, period: str) -> ExportBatch:
    """The batch of the period's lines not yet synced in the format; the latest batch when
    it already holds exactly those lines."""
    ledger.check_period(period)
    invariant(format_name in FORMATS, f"format {format_name} is known")
    bound_statements(ctx.session, ctx.settings.job_statement_timeout_seconds)
    _lock_format(ctx, format_name)
    answered = _answered_counts(ctx, format_name, period)
    candidates = _count_period_lines(ctx, period) - answered[SYNCED]
    latest = _latest_batch(ctx, format_name, period)
    # The latest batch took every line then unsynced. None of them synced since (any row
    # synced since was one of them) and the same count (no new line): the same lines.
    if latest is not None and latest.synced_count == 0 and latest.row_count == candidates:
        return latest
    batch = ExportBatch(
        id=new_id("exp"),
        account_id=ctx.account_id,
        format=format_name,
        period=period,
        row_count=candidates,
        exported_count=candidates - answered[FAILED],
        synced_count=0,
        failed_count=answered[FAILED],
        accounts=[],
        totals=[],
        created_at=ctx.now,
        updated_at=ctx.now,
        request_id=ctx.request_id,
    )
    ctx.session.add(batch)
    ctx.session.flush()
    summary = _take_lines(ctx, batch)
    crash_point("export_mid_batch")
    # The membership is the truth: a line posted since the count (another transaction's
    # commit) is in it, and the summary was read in the same statement (PostgreSQL) or
    # under the same write lock (SQLite).
    batch.row_count = sum(count for *_, count in summary)
    batch.exported_count = batch.row_count - batch.failed_count
    _summarise(batch, summary)
    ctx.session.flush()
    events.record(ctx, "export.created", ExportOut.of(batch))
    return batch


def _lock_format(ctx: Ctx, format_name: str) -> None:
    """Builds and acknowledgements of one account and format take turns (PostgreSQL; a
    SQLite write transaction already holds the database lock)."""
    if ctx.session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"{ctx.account_id}:{format_name}".encode()).digest()
    ctx.session.execute(
        text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
        {"namespace": _LOCK_NAMESPACE, "key": int.from_bytes(digest[:4], "big", signed=True)},
    )


def _period_lines(account_id: str, period: str) -> Any:
    return and_(
        JournalEntry.id == JournalLine.entry_id,
        JournalEntry.account_id == account_id,
        JournalEntry.period == period,
    )


def _synced_in(format_name: str) -> Any:
    return (
        select(ExportRow.seq)
        .where(
            ExportRow.journal_line_seq == JournalLine.seq,
            ExportRow.format == format_name,
            ExportRow.status == SYNCED,
        )
        .exists()
    )


def _count_period_lines(ctx: Ctx, period: str) -> int:
    return int(
        ctx.session.execute(
            select(func.count())
            .select_from(JournalLine)
            .join(JournalEntry, _period_lines(ctx.account_id, period))
        ).scalar_one()
    )


def _answered_counts(ctx: Ctx, format_name: str, period: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for status, count in ctx.session.execute(
        select(ExportRow.status, func.count())
        .where(
            ExportRow.account_id == ctx.account_id,
            ExportRow.format == format_name,
            ExportRow.period == period,
        )
        .group_by(ExportRow.status)
    ):
        counts[status] = int(count)
    return counts


def _latest_batch(ctx: Ctx, format_name: str, period: str) -> ExportBatch | None:
    return ctx.session.execute(
        select(ExportBatch)
        .where(
            ExportBatch.account_id == ctx.account_id,
            ExportBatch.format == format_name,
            ExportBatch.period == period,
        )
        .order_by(ExportBatch.seq.desc())
        .limit(1)
    ).scalar_one_or_none()


def _in_batch(batch_seq: int) -> Any:
    return (
        select(ExportBatchRow.journal_line_seq)
        .where(
            ExportBatchRow.batch_seq == batch_seq,
            ExportBatchRow.journal_line_seq == JournalLine.seq,
        )
        .exists()
    )


SummaryRow = tuple[str, str, Any, Any, Any, int]


def _take_lines(ctx: Ctx, batch: ExportBatch) -> list[SummaryRow]:
    """Inserts the batch's membership (the period's lines not synced in the format, in
    line order) and returns (account, currency, first date, debit, credit, lines) of what
    it took. On PostgreSQL it is one statement, so the membership and its summary come from
    one snapshot whatever is posted meanwhile; SQLite's write lock gives the same."""
    taken = (
        select(
            JournalLine.seq.label("seq"),
            JournalLine.ledger_account.label("account"),
            JournalLine.currency.label("currency"),
            JournalEntry.entry_date.label("entry_date"),
            JournalLine.debit_minor.label("debit"),
            JournalLine.credit_minor.label("credit"),
        )
        .select_from(JournalLine)
        .join(JournalEntry, _period_lines(ctx.account_id, batch.period))
        .where(~_synced_in(batch.format))
        .cte("taken")
    )
    membership = insert(ExportBatchRow).from_select(
        ["batch_seq", "journal_line_seq"],
        select(literal(batch.seq), taken.c.seq).order_by(taken.c.seq),
    )
    summary = select(
        taken.c.account,
        taken.c.currency,
        func.min(taken.c.entry_date),
        func.sum(taken.c.debit),
        func.sum(taken.c.credit),
        func.count(),
    ).group_by(taken.c.account, taken.c.currency)
    if ctx.session.get_bind().dialect.name == "postgresql":
        _room_for_bulk(ctx.session)
        statement = summary.add_cte(membership.cte("membership"))
        return [tuple(row) for row in ctx.session.execute(statement)]
    ctx.session.execute(membership)
    return [tuple(row) for row in ctx.session.execute(summary)]


def _room_for_bulk(session: Session) -> None:
    """PostgreSQL, for this transaction only: sorts and hashes of a whole batch in memory,
    and no JIT compilation (it costs more than it saves on these plain scans)."""
    session.execute(text(f"SET LOCAL work_mem = '{BULK_WORK_MEM}'"))
    session.execute(text("SET LOCAL jit = off"))


def _summarise(batch: ExportBatch, summary: list[SummaryRow]) -> None:
    """Accounts (with the first date each is used) and totals per currency."""
    first_dates: dict[str, date] = {}
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for account, currency, first_date, debit, credit, _count in summary:
        day = first_date if isinstance(first_date, date) else date.fromisoformat(str(first_date))
        first_dates[account] = min(first_dates.get(account, day), day)
        totals[currency][0] += int(debit)
        totals[currency][1] += int(credit)
    batch.accounts = [[name, first_dates[name].isoformat()] for name in sorted(first_dates)]
    batch.totals = [
        {"currency": currency, "debit": debit, "credit": credit}
        for currency, (debit, credit) in sorted(totals.items())
    ]
    if FORMATS[batch.format].whole_entries:
        for currency, (debit, credit) in totals.items():
            invariant(debit == credit, f"{batch.format} batch balances in {currency}")


# --- reading -------------------------------------------------------------------------------


def get(ctx: Ctx, export_id: str) -> ExportBatch:
    batch = ctx.session.execute(
        select(ExportBatch).where(
            ExportBatch.id == export_id, ExportBatch.account_id == ctx.account_id
        )
    ).scalar_one_or_none()
    if batch is None:
        raise NotFound("export", export_id)
    return batch


def list_batches(
    ctx: Ctx, page: Page, *, format_name: str | None, period: str | None
) -> tuple[list[ExportBatch], bool]:
    filters = []
    if format_name is not None:
        filters.append(ExportBatch.format == format_name)
    if period is not None:
        filters.append(ExportBatch.period == ledger.check_period(period))
    return list_page(ctx, ExportBatch, page, *filters, object_name="export")


@dataclass(frozen=True)
class RowView:
    """An export row as the API shows it: its line, its entry's invoice, its answer."""

    format: str
    period: str
    line: JournalLine
    invoice_id: str | None
    answer: ExportRow | None

    @property
    def id(self) -> str:
        return row_id_of(self.line.id, self.format)

    def out(self) -> ExportRowOut:
        """The row as `GET /v1/exports/{id}/rows/{exr}` answers it (also in trace, console)."""
        return ExportRowOut.of(
            row_id=self.id,
            format_name=self.format,
            period=self.period,
            line=self.line,
            invoice_id=self.invoice_id,
            answer=self.answer,
        )

    @property
    def status(self) -> str:
        return self.answer.status if self.answer is not None else EXPORTED


def _row_views(batch: ExportBatch) -> Any:
    return (
        select(JournalLine, JournalEntry.invoice_id, ExportRow)
        .select_from(ExportBatchRow)
        .join(JournalLine, JournalLine.seq == ExportBatchRow.journal_line_seq)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .outerjoin(
            ExportRow,
            and_(
                ExportRow.journal_line_seq == JournalLine.seq,
                ExportRow.format == batch.format,
            ),
        )
        .where(ExportBatchRow.batch_seq == batch.seq)
    )


def _status_is(status: str) -> Any:
    if status == EXPORTED:
        return ExportRow.seq.is_(None)
    return ExportRow.status == status


def list_rows(
    ctx: Ctx, export_id: str, page: Page, *, status: str | None
) -> tuple[list[RowView], bool]:
    """Newest first by the rows' journal lines' creation sequence: a total order."""
    batch = get(ctx, export_id)
    stmt = _row_views(batch)
    if status is not None:
        stmt = stmt.where(_status_is(status))
    if page.starting_after is not None:
        cursor = _member_line(ctx, batch, page.starting_after)
        if cursor is None:
            raise NotFound("export_row", page.starting_after, param="starting_after")
        stmt = stmt.where(ExportBatchRow.journal_line_seq < cursor.seq)
    found = [
        RowView(batch.format, batch.period, line, invoice_id, answer)
        for line, invoice_id, answer in ctx.session.execute(
            stmt.order_by(ExportBatchRow.journal_line_seq.desc()).limit(page.limit + 1)
        )
    ]
    return found[: page.limit], len(found) > page.limit


def get_row(ctx: Ctx, export_id: str, row_id: str) -> RowView:
    batch = get(ctx, export_id)
    line = _member_line(ctx, batch, row_id)
    if line is None:
        raise NotFound("export_row", row_id)
    found = ctx.session.execute(
        _row_views(batch).where(ExportBatchRow.journal_line_seq == line.seq)
    ).one()
    return RowView(batch.format, batch.period, found[0], found[1], found[2])


def rows_of_entries(ctx: Ctx, entries: Sequence[JournalEntry]) -> list[tuple[RowView, ExportBatch]]:
    """Every export row of these entries' lines, in each format a batch took them in
    (`exported`, or `synced`/`failed` once answered), each with the first batch that took
    it; a line no batch took is "ready" and has no row yet. Three reads, by key: the
    entries' periods' batches, their membership of these lines, the ERP's answers."""
    lines = {line.seq: (entry, line) for entry in entries for line in entry.lines}
    if not lines:
        return []
    batches = {
        batch.seq: batch
        for batch in ctx.session.execute(
            select(ExportBatch).where(
                ExportBatch.account_id == ctx.account_id,
                ExportBatch.period.in_(sorted({entry.period for entry in entries})),
            )
        ).scalars()
    }
    if not batches:
        return []
    first: dict[tuple[int, str], ExportBatch] = {}
    for batch_seq, line_seq in ctx.session.execute(
        select(ExportBatchRow.batch_seq, ExportBatchRow.journal_line_seq)
        .where(
            ExportBatchRow.batch_seq.in_(sorted(batches)),
            ExportBatchRow.journal_line_seq.in_(sorted(lines)),
        )
        .order_by(ExportBatchRow.batch_seq)
    ):
        first.setdefault((line_seq, batches[batch_seq].format), batches[batch_seq])
    answers = {
        (row.journal_line_seq, row.format): row
        for row in ctx.session.execute(
            select(ExportRow).where(
                ExportRow.account_id == ctx.account_id,
                ExportRow.journal_line_seq.in_(sorted(lines)),
            )
        ).scalars()
    }
    found = []
    for (line_seq, format_name), batch in first.items():
        entry, line = lines[line_seq]
        answer = answers.get((line_seq, format_name))
        found.append((RowView(format_name, entry.period, line, entry.invoice_id, answer), batch))
    return found


def _member_line(ctx: Ctx, batch: ExportBatch, row_id: str) -> JournalLine | None:
    """The journal line of a row of this batch, or None (unknown id, other format, other
    account, or not taken by this batch)."""
    parsed = line_id_of(row_id)
    if parsed is None or parsed[1] != batch.format:
        return None
    return ctx.session.execute(
        select(JournalLine)
        .join(
            ExportBatchRow,
            and_(
                ExportBatchRow.batch_seq == batch.seq,
                ExportBatchRow.journal_line_seq == JournalLine.seq,
            ),
        )
        .where(JournalLine.id == parsed[0], JournalLine.account_id == ctx.account_id)
    ).scalar_one_or_none()


# --- the file ------------------------------------------------------------------------------


def file_chunks(
    sessions: sessionmaker[Session], account_id: str, export_id: str
) -> Iterator[bytes]:
    """The batch's file, streamed: rows come from a server-side cursor in entry order and
    leave in chunks of about 64 KiB, so memory stays flat whatever the row count."""
    with read_session(sessions) as session:
        batch = session.execute(
            select(ExportBatch).where(
                ExportBatch.id == export_id, ExportBatch.account_id == account_id
            )
        ).scalar_one()
        spec = FORMATS[batch.format]
        facts = file_facts(batch)
        pending: list[str] = []
        size = 0
        lines = stream_lines(session, batch)
        try:
            for piece in spec.write(facts, lines):
                pending.append(piece)
                size += len(piece)
                if size >= FILE_CHUNK_CHARACTERS:
                    yield "".join(pending).encode()
                    pending.clear()
                    size = 0
            if pending:
                yield "".join(pending).encode()
        finally:
            lines.close()  # stops the read-ahead before the session goes


def file_facts(batch: ExportBatch) -> FileFacts:
    return FileFacts(
        accounts=tuple(
            AccountUse(account, date.fromisoformat(first_date))
            for account, first_date in batch.accounts
        ),
        currencies=tuple(total["currency"] for total in batch.totals),
    )


def stream_lines(session: Session, batch: ExportBatch) -> Generator[ExportLine]:
    """The batch's lines in entry order: the period's lines that belong to the batch, in
    the columns (and order) of `ExportLine`, the row id made by the database."""
    stmt = (
        select(
            literal("exr_", String())
            + func.substr(JournalLine.id, 4)
            + literal(FORMAT_LETTERS[batch.format], String()),
            JournalLine.entry_id,
            JournalLine.id,
            JournalLine.position,
            JournalEntry.entry_date,
            JournalEntry.period,
            JournalEntry.business_key,
            JournalEntry.description,
            JournalLine.ledger_account,
            JournalLine.debit_minor,
            JournalLine.credit_minor,
            JournalLine.currency,
            JournalEntry.invoice_id,
            JournalEntry.payment_id,
            JournalEntry.credit_note_id,
            JournalEntry.customer_id,
            JournalEntry.reverses,
        )
        .select_from(JournalLine)
        .join(JournalEntry, _period_lines(batch.account_id, batch.period))
        .where(_in_batch(batch.seq))
        .order_by(JournalEntry.seq, JournalLine.position)
    )
    make = ExportLine._make
    for partition in _read_ahead(_partitions(session, stmt)):
        for values in partition:
            yield make(values)


def _partitions(session: Session, stmt: Any) -> Generator[Sequence[Any]]:
    """Lists of STREAM_BATCH_ROWS plain rows. PostgreSQL: a named (server-side) psycopg
    cursor, one FETCH per list, its tuples as they come (a million rows skip building a
    million SQLAlchemy rows); SQLite: the lazy sqlite3 cursor through SQLAlchemy."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        result = connection.execution_options(stream_results=True).execute(stmt)
        yield from result.partitions(STREAM_BATCH_ROWS)
        return
    _room_for_bulk(session)
    compiled = stmt.compile(dialect=connection.dialect)
    driver: Any = connection.connection.driver_connection
    with driver.cursor(name=f"export_{uuid.uuid4().hex}") as cursor:
        cursor.execute(str(compiled), compiled.params)
        while rows := cursor.fetchmany(STREAM_BATCH_ROWS):
            yield rows


_DONE = object()


def _read_ahead(partitions: Generator[Sequence[Any]]) -> Generator[Sequence[Any]]:
    """Fetches the next partition in a thread while the caller formats this one, so the
    database's time overlaps ours. At most two partitions wait (memory stays flat); the
    thread alone touches the connection until it has finished, and it stops when the
    download is abandoned."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def fetch() -> None:
        try:
            for partition in partitions:
                while not stop.is_set():
                    try:
                        ready.put(partition, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_DONE)
        except BaseException as exc:  # handed to the reader, raised there
            ready.put(exc)
        finally:
            partitions.close()  # the cursor is closed by the thread that used it

    worker = threading.Thread(target=fetch, name="export-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
        worker.join()


# --- acknowledgements ----------------------------------------------------------------------


@dataclass
class _Target:
    """A row being answered: its line, its current answer, the answer it gets."""

    line: JournalLine
    answer: ExportRow | None
    given: RowAcknowledgement
    index: int

    @property
    def status(self) -> str:
        return self.answer.status if self.answer is not None else EXPORTED


def acknowledge(ctx: Ctx, export_id: str, answers: Sequence[RowAcknowledgement]) -> ExportBatch:
    """Records the ERP's answer per row: a record id makes it `synced` (and resolves its
    `export_failed` item), an error makes it `failed` (and raises one). In formats whose
    files hold balanced journals the ERP imports an entry whole, so an answer for one row
    is the answer for every row of its entry in the batch."""
    batch = get(ctx, export_id)
    _lock_format(ctx, batch.format)
    positions: dict[str, int] = {}
    for index, given in enumerate(answers):
        if given.id in positions:
            raise ValidationFailed(
                f"rows[{index}].id {given.id} is already answered in rows[{positions[given.id]}]",
                param=f"rows[{index}].id",
                object_name="export_row",
            )
        positions[given.id] = index
    lines = _member_lines(ctx, batch, list(positions))
    for index, given in enumerate(answers):
        if given.id not in lines:
            raise NotFound("export_row", given.id, param=f"rows[{index}].id")
    plan = [_Target(lines[given.id], None, given, index) for index, given in enumerate(answers)]
    if FORMATS[batch.format].whole_entries:
        plan += _entry_siblings(ctx, batch, plan)
    _attach_answers(ctx, batch, plan)
    for target in plan:
        _check_transition(batch, target)
    invoices = _invoices_of(ctx, {t.line.entry_id for t in plan if t.given.error is not None})
    moved: dict[int, tuple[str, str]] = {}  # journal line seq → (status before, after)
    for target in plan:
        before = target.status
        after = SYNCED if target.given.erp_record_id is not None else FAILED
        if before == SYNCED:
            continue  # the same record id again: nothing changes
        row = target.answer or _new_answer(ctx, batch, target.line)
        row.status = after
        row.erp_record_id = target.given.erp_record_id
        row.error = target.given.error
        row.acknowledged_at = ctx.now
        row.updated_at = ctx.now
        row.request_id = ctx.request_id
        if after == SYNCED and before == FAILED:
            exceptions.resolve_matching(
                ctx,
                refs={"export_row": row.id},
                note=f"{batch.format} record {row.erp_record_id} created",
            )
        if after == FAILED:
            _raise_export_failed(ctx, batch, row, invoices.get(target.line.entry_id))
        if before != after:
            moved[target.line.seq] = (before, after)
    ctx.session.flush()
    _move_counters(ctx, batch, moved)
    batch.updated_at = ctx.now
    ctx.session.flush()
    events.record(ctx, "export.acknowledged", ExportOut.of(batch))
    return batch


def _member_lines(ctx: Ctx, batch: ExportBatch, row_ids: list[str]) -> dict[str, JournalLine]:
    """Row id → journal line, for the ids that are rows of this batch."""
    wanted: dict[str, str] = {}
    for row_id in row_ids:
        parsed = line_id_of(row_id)
        if parsed is not None and parsed[1] == batch.format:
            wanted[parsed[0]] = row_id
    found: dict[str, JournalLine] = {}
    line_ids = sorted(wanted)
    for start in range(0, len(line_ids), IN_CLAUSE_IDS_MAX):
        for line in ctx.session.execute(
            select(JournalLine)
            .join(
                ExportBatchRow,
                and_(
                    ExportBatchRow.batch_seq == batch.seq,
                    ExportBatchRow.journal_line_seq == JournalLine.seq,
                ),
            )
            .where(
                JournalLine.account_id == ctx.account_id,
                JournalLine.id.in_(line_ids[start : start + IN_CLAUSE_IDS_MAX]),
            )
        ).scalars():
            found[wanted[line.id]] = line
    return found


def _entry_siblings(ctx: Ctx, batch: ExportBatch, plan: list[_Target]) -> list[_Target]:
    """Every row of an answered entry gets the entry's answer; one entry, one outcome."""
    by_entry: dict[str, _Target] = {}
    for target in plan:
        first = by_entry.setdefault(target.line.entry_id, target)
        if (first.given.error is None) != (target.given.error is None):
            raise ValidationFailed(
                f"rows[{target.index}] and rows[{first.index}] belong to journal entry "
                f"{target.line.entry_id}, which {batch.format} imports as one journal: "
                "give its rows one outcome",
                param=f"rows[{target.index}]",
                object_name="export_row",
            )
    answered = {target.line.seq for target in plan}
    extra: list[_Target] = []
    entry_ids = sorted(by_entry)
    for start in range(0, len(entry_ids), IN_CLAUSE_IDS_MAX):
        for line in ctx.session.execute(
            select(JournalLine)
            .join(
                ExportBatchRow,
                and_(
                    ExportBatchRow.batch_seq == batch.seq,
                    ExportBatchRow.journal_line_seq == JournalLine.seq,
                ),
            )
            .where(JournalLine.entry_id.in_(entry_ids[start : start + IN_CLAUSE_IDS_MAX]))
            .order_by(JournalLine.seq)
        ).scalars():
            if line.seq not in answered:
                first = by_entry[line.entry_id]
                extra.append(_Target(line, None, first.given, first.index))
    return extra


def _attach_answers(ctx: Ctx, batch: ExportBatch, plan: list[_Target]) -> None:
    by_seq = {target.line.seq: target for target in plan}
    seqs = sorted(by_seq)
    for start in range(0, len(seqs), IN_CLAUSE_IDS_MAX):
        for row in ctx.session.execute(
            select(ExportRow).where(
                ExportRow.format == batch.format,
                ExportRow.journal_line_seq.in_(seqs[start : start + IN_CLAUSE_IDS_MAX]),
            )
        ).scalars():
            by_seq[row.journal_line_seq].answer = row


def _check_transition(batch: ExportBatch, target: _Target) -> None:
    if target.status != SYNCED:
        return
    row_id = row_id_of(target.line.id, batch.format)
    synced_as = target.answer.erp_record_id if target.answer is not None else None
    if target.given.error is not None:
        refused = InvalidTransition(
            "export_row", row_id, SYNCED, "acknowledge with an error", "an exported or failed row"
        )
        refused.param = f"rows[{target.index}].error"
        raise refused
    if target.given.erp_record_id != synced_as:
        refused = InvalidTransition(
            "export_row",
            row_id,
            SYNCED,
            f"acknowledge with ERP record {target.given.erp_record_id}",
            f"the record it was synced with ({synced_as})",
        )
        refused.param = f"rows[{target.index}].erp_record_id"
        raise refused


def _new_answer(ctx: Ctx, batch: ExportBatch, line: JournalLine) -> ExportRow:
    row = ExportRow(
        id=row_id_of(line.id, batch.format),
        account_id=ctx.account_id,
        format=batch.format,
        period=batch.period,
        journal_entry_id=line.entry_id,
        journal_line_seq=line.seq,
        created_at=ctx.now,
    )
    ctx.session.add(row)
    return row


def _raise_export_failed(
    ctx: Ctx, batch: ExportBatch, row: ExportRow, invoice_id: str | None
) -> None:
    error = row.error or ""
    exceptions.raise_item(
        ctx,
        "export_failed",
        refs={"export_row": row.id, "journal_entry": row.journal_entry_id, "invoice": invoice_id},
        next_action=(
            f"Fix what {batch.format} refused ({error[:200]}), then export "
            f"{batch.format} {batch.period} again and acknowledge the row"
        ),
        detail={"export": batch.id, "format": batch.format, "period": batch.period, "error": error},
    )


def _invoices_of(ctx: Ctx, entry_ids: set[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    ordered = sorted(entry_ids)
    for start in range(0, len(ordered), IN_CLAUSE_IDS_MAX):
        for entry_id, invoice_id in ctx.session.execute(
            select(JournalEntry.id, JournalEntry.invoice_id).where(
                JournalEntry.account_id == ctx.account_id,
                JournalEntry.id.in_(ordered[start : start + IN_CLAUSE_IDS_MAX]),
            )
        ):
            found[entry_id] = invoice_id
    return found


_COUNTERS = {EXPORTED: "exported_count", SYNCED: "synced_count", FAILED: "failed_count"}


def _move_counters(ctx: Ctx, batch: ExportBatch, moved: dict[int, tuple[str, str]]) -> None:
    """A row belongs to every batch of its format and period that took it: their counters
    follow it."""
    if not moved:
        return
    siblings = {
        sibling.seq: sibling
        for sibling in ctx.session.execute(
            select(ExportBatch).where(
                ExportBatch.account_id == ctx.account_id,
                ExportBatch.format == batch.format,
                ExportBatch.period == batch.period,
            )
        ).scalars()
    }
    deltas: dict[int, Counter[str]] = defaultdict(Counter)
    line_seqs = sorted(moved)
    for start in range(0, len(line_seqs), IN_CLAUSE_IDS_MAX):
        for batch_seq, line_seq in ctx.session.execute(
            select(ExportBatchRow.batch_seq, ExportBatchRow.journal_line_seq).where(
                ExportBatchRow.batch_seq.in_(sorted(siblings)),
                ExportBatchRow.journal_line_seq.in_(line_seqs[start : start + IN_CLAUSE_IDS_MAX]),
            )
        ):
            before, after = moved[line_seq]
            deltas[batch_seq][before] -= 1
            deltas[batch_seq][after] += 1
    for batch_seq, delta in deltas.items():
        sibling = siblings[batch_seq]
        for status, change in delta.items():
            attribute = _COUNTERS[status]
            setattr(sibling, attribute, getattr(sibling, attribute) + change)
        invariant(
            sibling.exported_count + sibling.synced_count + sibling.failed_count
            == sibling.row_count,
            f"export {sibling.id} counters add up",
        )
        sibling.updated_at = ctx.now
