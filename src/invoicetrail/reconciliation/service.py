"""Reconciliation runs: the checks, then one exception item per finding, in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from invoicetrail.accounts.models import Account
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import bound_statements
from invoicetrail.core.errors import NotFound, ValidationFailed
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.exceptions import service as exceptions
from invoicetrail.exceptions.service import Finding
from invoicetrail.reconciliation import checks
from invoicetrail.reconciliation.models import ReconciliationFinding, ReconciliationRun

Progress = Callable[[str, int, int], None]


def _instant_of(ctx: Ctx, as_of: date) -> datetime:
    """The end of `as_of` (UTC), or now while that day is not over."""
    end_of_day = datetime.combine(as_of + timedelta(days=1), time(), tzinfo=UTC)
    return min(end_of_day, ctx.now)


def run(
    ctx: Ctx,
    as_of: date | None,
    *,
    trigger: str = "api",
    progress: Progress | None = None,
) -> ReconciliationRun:
    today = ctx.now.date()
    as_of = as_of or today
    if as_of > today:
        raise ValidationFailed(
            f"as_of {as_of.isoformat()} is in the future; reconcile up to today "
            f"({today.isoformat()})",
            param="as_of",
            object_name="reconciliation_run",
        )
    bound_statements(ctx.session, ctx.settings.job_statement_timeout_seconds)
    # One run at a time per account (API, CLI, console, worker): two runs deciding "no open
    # item yet" for the same cause at once would each insert one.
    ctx.session.execute(select(Account.id).where(Account.id == ctx.account_id).with_for_update())
    window = checks.window_for(_instant_of(ctx, as_of), ctx.settings)
    record = ReconciliationRun(
        id=new_id("rec"),
        account_id=ctx.account_id,
        as_of=as_of,
        status="running",
        checks_total=len(checks.CHECKS),
        checks_done=0,
        invoices_checked=0,
        counts={},
        items_created=0,
        items_updated=0,
        items_resolved=0,
        error=None,
        trigger=trigger,
        created_at=ctx.now,
        completed_at=None,
        request_id=ctx.request_id,
    )
    ctx.session.add(record)
    ctx.session.flush()
    found: dict[str, list[Finding]] = {}
    for name, check in checks.CHECKS.items():
        found[name] = check(ctx, window)
        record.checks_done += 1
        if progress is not None:
            progress(name, record.checks_done, record.checks_total)
    # A run as of an earlier day cannot see causes that arose since, so it must not resolve
    # the items that later runs (or events) raised: only a run as of today resolves.
    synced = exceptions.sync_findings(
        ctx,
        list(checks.CHECKS),
        found,
        note=f"reconciliation {record.id} as of {as_of.isoformat()}",
        resolve_missing=as_of == today,
    )
    record.invoices_checked = checks.invoices_checked(ctx, window)
    counts: dict[str, int] = {}
    invoices_with_findings: set[str] = set()
    rows = []
    for findings in found.values():
        for finding in findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
            invoice_id = finding.refs.get("invoice")
            if invoice_id:
                invoices_with_findings.add(invoice_id)
            item = synced.items[finding.dedupe_key()]
            rows.append(
                {
                    "run_id": record.id,
                    "kind": finding.kind,
                    "item_id": item.id,
                    "invoice_id": invoice_id,
                    "refs": item.refs,
                }
            )
    if rows:
        ctx.session.execute(insert(ReconciliationFinding), rows)
    record.counts = {
        "matched": max(record.invoices_checked - len(invoices_with_findings), 0),
        **dict(sorted(counts.items())),
    }
    record.items_created = synced.created
    record.items_updated = synced.updated + synced.reopened
    record.items_resolved = synced.resolved
    record.status = "completed"
    record.completed_at = ctx.now
    ctx.session.flush()
    return record


def get(ctx: Ctx, run_id: str) -> ReconciliationRun:
    record = ctx.session.execute(
        select(ReconciliationRun).where(
            ReconciliationRun.id == run_id, ReconciliationRun.account_id == ctx.account_id
        )
    ).scalar_one_or_none()
    if record is None:
        raise NotFound("reconciliation_run", run_id)
    return record


def list_runs(ctx: Ctx, page: Page) -> tuple[list[ReconciliationRun], bool]:
    return list_page(ctx, ReconciliationRun, page, object_name="reconciliation_run")


def latest(ctx: Ctx) -> ReconciliationRun | None:
    return ctx.session.execute(
        select(ReconciliationRun)
        .where(ReconciliationRun.account_id == ctx.account_id)
        .order_by(ReconciliationRun.seq.desc())
        .limit(1)
    ).scalar_one_or_none()


def findings_of(ctx: Ctx, run_id: str) -> list[ReconciliationFinding]:
    record = get(ctx, run_id)
    return list(
        ctx.session.execute(
            select(ReconciliationFinding)
            .where(ReconciliationFinding.run_id == record.id)
            .order_by(ReconciliationFinding.seq)
        ).scalars()
    )


def claim_daily(session: Session, account_id: str, today: date) -> bool:
    """Locks the account row, then re-checks: two workers never run the same day twice."""
    session.execute(select(Account.id).where(Account.id == account_id).with_for_update())
    return (
        session.execute(
            select(ReconciliationRun.seq)
            .where(ReconciliationRun.account_id == account_id, ReconciliationRun.as_of >= today)
            .limit(1)
        ).first()
        is None
    )


def accounts_due(session: Session, today: date) -> list[str]:
    """Accounts with no run as of today yet (the worker's daily run)."""
    ran_today = select(ReconciliationRun.account_id).where(ReconciliationRun.as_of >= today)
    return list(
        session.execute(
            select(Account.id).where(Account.id.not_in(ran_today)).order_by(Account.seq)
        ).scalars()
    )
