"""The overview: where the account stands, each figure one set-based query (no row loops).

Invoices by status and currency, what is open and overdue, ACH debits still processing, open
exception items by owner, the last reconciliation run and the go-live check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from fastapi.responses import Response

from invoicetrail.console.web import Page
from invoicetrail.core.clock import iso_instant
from invoicetrail.exceptions import service as exceptions
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.models import INVOICE_STATUSES
from invoicetrail.payments import service as payments
from invoicetrail.reconciliation import golive
from invoicetrail.reconciliation import service as reconciliation


@dataclass
class StatusCount:
    status: str
    count: int = 0
    by_currency: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class OwnerLoad:
    owner: str
    open_count: int
    overdue_count: int
    queue_url: str
    overdue_url: str


def _queue_url(**filters: str) -> str:
    return "/console/exceptions?" + urlencode(filters)


def _by_status(current: Page) -> list[StatusCount]:
    """Every status, zero included, so the page always reads the same way."""
    rows = {status: StatusCount(status) for status in INVOICE_STATUSES}
    for status, currency, count in invoices.counts_by_status(current.ctx):
        row = rows.setdefault(status, StatusCount(status))
        row.count += count
        row.by_currency.append((currency, count))
    return list(rows.values())


def build(current: Page) -> Response:
    ctx = current.ctx
    today = ctx.now.date()
    owners = [
        OwnerLoad(
            owner,
            open_count,
            overdue_count,
            _queue_url(owner=owner),
            _queue_url(owner=owner, overdue="1"),
        )
        for owner, open_count, overdue_count in exceptions.open_by_owner(ctx)
    ]
    last_run = reconciliation.latest(ctx)
    checks = golive.run_checks(ctx)
    return current.render(
        "overview.html.j2",
        title="Overview",
        today=today.isoformat(),
        statuses=_by_status(current),
        amounts=invoices.open_amounts(ctx, today),
        ach=payments.processing_totals(ctx, method="ach"),
        owners=owners,
        open_total=sum(o.open_count for o in owners),
        overdue_total=sum(o.overdue_count for o in owners),
        overdue_url=_queue_url(overdue="1"),
        last_run=last_run,
        last_run_created=iso_instant(last_run.created_at) if last_run else None,
        last_run_completed=iso_instant(last_run.completed_at) if last_run else None,
        checks=checks,
        failing=[check for check in checks if not check.ok],
    )
