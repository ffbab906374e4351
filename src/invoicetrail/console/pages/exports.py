"""Console pages: exports — create a batch for a period and format, download its file, follow
the ERP's acknowledgement of each row.

A batch is made through `POST /v1/exports` (the API's body model and command, the form's
idempotency key); the download streams the same bytes as `GET /v1/exports/{id}/file`.
"""

from __future__ import annotations

from typing import get_args

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from invoicetrail.console.web import Page, action, api_write, page, redirect
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import ValidationFailed
from invoicetrail.core.http import Page as ListPage
from invoicetrail.core.http import request_id_of
from invoicetrail.exports import service
from invoicetrail.exports.formats import FORMATS
from invoicetrail.exports.schemas import (
    ExportCreate,
    ExportOut,
    FormatName,
    filename,
)

# Included by `console.routes.router` (prefix `/console`): paths here are relative to it.
router = APIRouter(include_in_schema=False)

BATCHES_PER_PAGE = 25
ROWS_PER_PAGE = 50
FORMAT_LABELS = {
    "csv": "CSV",
    "jsonl": "JSON Lines",
    "netsuite": "NetSuite",
    "quickbooks": "QuickBooks",
    "xero": "Xero",
    "hledger": "hledger",
    "beancount": "Beancount",
}
FORMAT_CHOICES = [(name, FORMAT_LABELS.get(name, name)) for name in get_args(FormatName)]
ROW_STATUSES = ("exported", "synced", "failed")


def _create_command(ctx: Ctx, body: ExportCreate) -> ExportOut:
    """Exactly what `POST /v1/exports` runs."""
    return ExportOut.of(service.create(ctx, body.format, body.period))


def _exports_page(
    current: Page,
    *,
    chosen_format: str = "csv",
    period: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    ctx = current.ctx
    starting_after = current.request.query_params.get("starting_after") or None
    rows, has_more = service.list_batches(
        ctx, ListPage(BATCHES_PER_PAGE, starting_after), format_name=None, period=None
    )
    return current.render(
        "exports.html.j2",
        status_code=status_code,
        title="Exports",
        exports=[ExportOut.of(batch) for batch in rows],
        has_more=has_more,
        paged=starting_after is not None,
        formats=FORMAT_CHOICES,
        format_labels=FORMAT_LABELS,
        chosen_format=chosen_format,
        period=period if period is not None else ctx.now.strftime("%Y-%m"),
        error=error,
    )


@router.get("/exports")
def exports(request: Request) -> Response:
    return page(request, _exports_page)


@router.post("/exports")
async def create_export(request: Request) -> Response:
    def do(current: Page, form: dict[str, str]) -> Response:
        chosen_format = form.get("format", "").strip()
        period = form.get("period", "").strip()
        outcome = api_write(
            current,
            form,
            path="/v1/exports",
            payload={"format": chosen_format, "period": period},
            body_model=ExportCreate,
            command=_create_command,
            object_name="export",
            action="create an export",
        )
        if not outcome.ok:
            return page(
                request,
                lambda again: _exports_page(
                    again,
                    chosen_format=chosen_format,
                    period=period,
                    error=outcome.message or "The export was refused.",
                    status_code=outcome.status_code,
                ),
            )
        body = outcome.body
        return redirect(
            f"/console/exports/{body['id']}",
            f"Export {body['id']}: {body['row_count']} rows of {body['period']} as "
            f"{FORMAT_LABELS.get(body['format'], body['format'])}.",
        )

    return await action(request, do)


@router.get("/exports/{export_id}")
def export_page(export_id: str, request: Request) -> Response:
    def build(current: Page) -> Response:
        ctx = current.ctx
        batch = ExportOut.of(service.get(ctx, export_id))
        status = request.query_params.get("status") or None
        if status is not None and status not in ROW_STATUSES:
            raise ValidationFailed(
                f"status must be one of {', '.join(ROW_STATUSES)}",
                param="status",
                object_name="export_row",
            )
        starting_after = request.query_params.get("starting_after") or None
        views, has_more = service.list_rows(
            ctx, export_id, ListPage(ROWS_PER_PAGE, starting_after), status=status
        )
        rows = [view.out() for view in views]
        base_url = f"/console/exports/{batch.id}" + (f"?status={status}" if status else "")
        return current.render(
            "export.html.j2",
            title=f"Export {batch.id}",
            export=batch,
            format_label=FORMAT_LABELS.get(batch.format, batch.format),
            rows=rows,
            has_more=has_more,
            paged=starting_after is not None,
            status_filter=status,
            statuses=ROW_STATUSES,
            base_url=base_url,
        )

    return page(request, build)


@router.get("/exports/{export_id}/file")
def export_file(export_id: str, request: Request) -> Response:
    """The same stream as `GET /v1/exports/{id}/file`, signed in by the session."""

    def build(current: Page) -> Response:
        batch = service.get(current.ctx, export_id)
        return StreamingResponse(
            service.file_chunks(current.state.sessions, current.ctx.account_id, batch.id),
            media_type=FORMATS[batch.format].media_type,
            headers={
                "Request-Id": request_id_of(request),
                "Content-Disposition": f'attachment; filename="{filename(batch)}"',
                "ETag": f'"{batch.id}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return page(request, build)
