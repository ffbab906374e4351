from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from invoicetrail.core.http import ListOut, PageParams, Read, Write, app_state, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body
from invoicetrail.exports import service
from invoicetrail.exports.formats import FORMATS
from invoicetrail.exports.schemas import (
    ExportAcknowledge,
    ExportCreate,
    ExportOut,
    ExportRowOut,
    FormatName,
    filename,
)

router = APIRouter(prefix="/v1", tags=["exports"])

RowStatusFilter = Literal["exported", "synced", "failed"]

_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    200: {
        "description": "The batch's file, streamed; the same bytes every time",
        "content": {
            media_type: {"schema": {"type": "string"}}
            for media_type in sorted({spec.media_type for spec in FORMATS.values()})
        },
    },
}


@router.post(
    "/exports",
    response_model=ExportOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ExportCreate),
)
def create_export(write: Write) -> Response:
    return write.run(
        ExportCreate,
        lambda ctx, body: ExportOut.of(service.create(ctx, body.format, body.period)),
        object_name="export",
        action="create an export",
    )


@router.get("/exports", response_model=ListOut[ExportOut], responses=READ_ERRORS)
def list_exports(
    ctx: Read,
    page: PageParams,
    format_name: Annotated[FormatName | None, Query(alias="format")] = None,
    period: Annotated[str | None, Query(max_length=7)] = None,
) -> Response:
    rows, has_more = service.list_batches(ctx, page, format_name=format_name, period=period)
    return json_response(
        ListOut[ExportOut](data=[ExportOut.of(b) for b in rows], has_more=has_more),
        ctx.request_id,
    )


@router.get("/exports/{export_id}", response_model=ExportOut, responses=READ_ERRORS)
def get_export(export_id: str, ctx: Read) -> Response:
    return json_response(ExportOut.of(service.get(ctx, export_id)), ctx.request_id)


@router.get(
    "/exports/{export_id}/file", response_class=StreamingResponse, responses=_FILE_RESPONSES
)
def get_export_file(export_id: str, ctx: Read, request: Request) -> Response:
    batch = service.get(ctx, export_id)
    return StreamingResponse(
        service.file_chunks(app_state(request).sessions, ctx.account_id, batch.id),
        media_type=FORMATS[batch.format].media_type,
        headers={
            "Request-Id": ctx.request_id,
            "Content-Disposition": f'attachment; filename="{filename(batch)}"',
            "ETag": f'"{batch.id}"',
        },
    )


@router.get(
    "/exports/{export_id}/rows", response_model=ListOut[ExportRowOut], responses=READ_ERRORS
)
def list_export_rows(
    export_id: str, ctx: Read, page: PageParams, status: RowStatusFilter | None = None
) -> Response:
    rows, has_more = service.list_rows(ctx, export_id, page, status=status)
    return json_response(
        ListOut[ExportRowOut](data=[_row_out(view) for view in rows], has_more=has_more),
        ctx.request_id,
    )


@router.get(
    "/exports/{export_id}/rows/{row_id}", response_model=ExportRowOut, responses=READ_ERRORS
)
def get_export_row(export_id: str, row_id: str, ctx: Read) -> Response:
    return json_response(_row_out(service.get_row(ctx, export_id, row_id)), ctx.request_id)


def _row_out(view: service.RowView) -> ExportRowOut:
    return view.out()


@router.post(
    "/exports/{export_id}/acknowledge",
    response_model=ExportOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ExportAcknowledge),
)
def acknowledge_export(export_id: str, write: Write) -> Response:
    return write.run(
        ExportAcknowledge,
        lambda ctx, body: ExportOut.of(service.acknowledge(ctx, export_id, body.rows)),
        object_name="export",
        action="acknowledge export rows",
    )
