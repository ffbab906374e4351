from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import Body, CalendarDate
from invoicetrail.reconciliation.models import ReconciliationFinding, ReconciliationRun


class ReconciliationRunCreate(Body):
    # Default: today. A run as of an earlier day raises what it finds but resolves nothing.
    as_of: CalendarDate | None = None


class ReconciliationRunOut(BaseModel):
    id: str
    object: str = "reconciliation_run"
    as_of: str
    status: str
    counts: dict[str, int]
    invoices_checked: int
    items: dict[str, int]
    progress: dict[str, int]
    trigger: str
    created: str | None
    completed_at: str | None
    request_id: str | None

    @classmethod
    def of(cls, run: ReconciliationRun) -> ReconciliationRunOut:
        return cls(
            id=run.id,
            as_of=run.as_of.isoformat(),
            status=run.status,
            counts=run.counts,
            invoices_checked=run.invoices_checked,
            items={
                "created": run.items_created,
                "updated": run.items_updated,
                "resolved": run.items_resolved,
            },
            progress={
                "checks_done": run.checks_done,
                "checks_total": run.checks_total,
                "percent": run.checks_done * 100 // max(run.checks_total, 1),
            },
            trigger=run.trigger,
            created=iso_instant(run.created_at),
            completed_at=iso_instant(run.completed_at),
            request_id=run.request_id,
        )


class ReconciliationFindingOut(BaseModel):
    object: str = "reconciliation_finding"
    kind: str
    exception_item: str
    invoice: str | None
    refs: dict[str, Any]

    @classmethod
    def of(cls, finding: ReconciliationFinding) -> ReconciliationFindingOut:
        return cls(
            kind=finding.kind,
            exception_item=finding.item_id,
            invoice=finding.invoice_id,
            refs=finding.refs,
        )


class GoliveCheckOut(BaseModel):
    name: str
    ok: bool
    detail: str


class GoliveOut(BaseModel):
    object: str = "golive_check"
    ready: bool
    checks: list[GoliveCheckOut]
