from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from invoicetrail.core.context import Ctx
from invoicetrail.core.http import ListOut, PageParams, Read, Write, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body
from invoicetrail.reconciliation import golive, service
from invoicetrail.reconciliation.schemas import (
    GoliveCheckOut,
    GoliveOut,
    ReconciliationFindingOut,
    ReconciliationRunCreate,
    ReconciliationRunOut,
)

router = APIRouter(prefix="/v1", tags=["control"])


@router.post(
    "/reconciliation_runs",
    response_model=ReconciliationRunOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ReconciliationRunCreate, required=False),
)
def create_reconciliation_run(write: Write) -> Response:
    def command(ctx: Ctx, body: ReconciliationRunCreate) -> ReconciliationRunOut:
        return ReconciliationRunOut.of(service.run(ctx, body.as_of))

    return write.run(
        ReconciliationRunCreate,
        command,
        object_name="reconciliation_run",
        action="run a reconciliation",
    )


@router.get(
    "/reconciliation_runs", response_model=ListOut[ReconciliationRunOut], responses=READ_ERRORS
)
def list_reconciliation_runs(ctx: Read, page: PageParams) -> Response:
    rows, has_more = service.list_runs(ctx, page)
    return json_response(
        ListOut[ReconciliationRunOut](
            data=[ReconciliationRunOut.of(r) for r in rows], has_more=has_more
        ),
        ctx.request_id,
    )


@router.get(
    "/reconciliation_runs/{run_id}", response_model=ReconciliationRunOut, responses=READ_ERRORS
)
def get_reconciliation_run(run_id: str, ctx: Read) -> Response:
    return json_response(ReconciliationRunOut.of(service.get(ctx, run_id)), ctx.request_id)


@router.get(
    "/reconciliation_runs/{run_id}/findings",
    response_model=ListOut[ReconciliationFindingOut],
    responses=READ_ERRORS,
)
def list_reconciliation_findings(run_id: str, ctx: Read) -> Response:
    findings = service.findings_of(ctx, run_id)
    return json_response(
        ListOut[ReconciliationFindingOut](
            data=[ReconciliationFindingOut.of(f) for f in findings], has_more=False
        ),
        ctx.request_id,
    )


@router.get("/golive_check", response_model=GoliveOut, responses=READ_ERRORS)
def golive_check(ctx: Read) -> Response:
    results = golive.run_checks(ctx)
    return json_response(
        GoliveOut(
            ready=all(r.ok for r in results),
            checks=[GoliveCheckOut(name=r.name, ok=r.ok, detail=r.detail) for r in results],
        ),
        ctx.request_id,
    )
