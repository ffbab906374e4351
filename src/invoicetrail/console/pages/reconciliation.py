"""Console pages: reconciliation — start a run, follow its progress, read its findings.

A run goes through `POST /v1/reconciliation_runs` (the API's body model and command, the
form's idempotency key), so a resubmitted form shows the same run, never a second one.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from invoicetrail.console.web import Page, action, api_write, page, redirect
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import NotFound
from invoicetrail.core.http import Page as ListPage
from invoicetrail.reconciliation import service
from invoicetrail.reconciliation.schemas import (
    ReconciliationFindingOut,
    ReconciliationRunCreate,
    ReconciliationRunOut,
)

# Included by `console.routes.router` (prefix `/console`): paths here are relative to it.
router = APIRouter(include_in_schema=False)

RUNS_PER_PAGE = 25
FINDINGS_PER_PAGE = 100
# While a run is still working its page reloads itself (seconds).
REFRESH_SECONDS = 2
UNFINISHED = ("pending", "running")


def _run_command(ctx: Ctx, body: ReconciliationRunCreate) -> ReconciliationRunOut:
    """Exactly what `POST /v1/reconciliation_runs` runs."""
    return ReconciliationRunOut.of(service.run(ctx, body.as_of))


def _findings_total(run: ReconciliationRunOut) -> int:
    return sum(count for outcome, count in run.counts.items() if outcome != "matched")


def _runs_page(
    current: Page,
    *,
    as_of: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    ctx = current.ctx
    starting_after = current.request.query_params.get("starting_after") or None
    rows, has_more = service.list_runs(ctx, ListPage(RUNS_PER_PAGE, starting_after))
    runs = [ReconciliationRunOut.of(row) for row in rows]
    today = ctx.now.date().isoformat()
    return current.render(
        "reconciliation.html.j2",
        status_code=status_code,
        title="Reconciliation",
        runs=runs,
        findings_total=_findings_total,
        has_more=has_more,
        paged=starting_after is not None,
        today=today,
        as_of=as_of if as_of is not None else today,
        error=error,
    )


@router.get("/reconciliation")
def runs(request: Request) -> Response:
    return page(request, _runs_page)


@router.post("/reconciliation")
async def start_run(request: Request) -> Response:
    def do(current: Page, form: dict[str, str]) -> Response:
        as_of = form.get("as_of", "").strip()
        outcome = api_write(
            current,
            form,
            path="/v1/reconciliation_runs",
            payload={"as_of": as_of} if as_of else {},
            body_model=ReconciliationRunCreate,
            command=_run_command,
            object_name="reconciliation_run",
            action="run a reconciliation",
        )
        if not outcome.ok:
            return page(
                request,
                lambda again: _runs_page(
                    again,
                    as_of=as_of,
                    error=outcome.message or "The run was refused.",
                    status_code=outcome.status_code,
                ),
            )
        run_id = outcome.body["id"]
        return redirect(
            f"/console/reconciliation/{run_id}",
            f"Reconciliation run {run_id} as of {outcome.body['as_of']}: {outcome.body['status']}.",
        )

    return await action(request, do)


@router.get("/reconciliation/{run_id}")
def run_page(run_id: str, request: Request) -> Response:
    def build(current: Page) -> Response:
        ctx = current.ctx
        run = ReconciliationRunOut.of(service.get(ctx, run_id))
        findings = [ReconciliationFindingOut.of(f) for f in service.findings_of(ctx, run_id)]
        # Findings page by their exception item (one item per finding within a run).
        starting_after = request.query_params.get("starting_after") or None
        if starting_after is not None:
            ids = [f.exception_item for f in findings]
            if starting_after not in ids:
                raise NotFound("reconciliation_finding", starting_after, param="starting_after")
            findings = findings[ids.index(starting_after) + 1 :]
        shown = findings[:FINDINGS_PER_PAGE]
        return current.render(
            "reconciliation_run.html.j2",
            title=f"Reconciliation run {run.id}",
            run=run,
            findings=shown,
            findings_total=_findings_total(run),
            has_more=len(findings) > FINDINGS_PER_PAGE,
            paged=starting_after is not None,
            refresh_seconds=REFRESH_SECONDS if run.status in UNFINISHED else None,
        )

    return page(request, build)
