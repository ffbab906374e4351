from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from invoicetrail.core.context import Ctx
from invoicetrail.core.http import ListOut, PageParams, Read, Write, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body
from invoicetrail.exceptions import service
from invoicetrail.exceptions.schemas import (
    ExceptionAssign,
    ExceptionItemOut,
    ExceptionResolve,
    ExceptionSnooze,
)

router = APIRouter(prefix="/v1", tags=["exceptions"])


@router.get("/exception_items", response_model=ListOut[ExceptionItemOut], responses=READ_ERRORS)
def list_exception_items(
    ctx: Read,
    page: PageParams,
    status: Literal["open", "snoozed", "resolved"] | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    invoice: Annotated[str | None, Query(max_length=64)] = None,
    owner: Annotated[str | None, Query(max_length=256)] = None,
    overdue: bool | None = None,
) -> Response:
    rows, has_more = service.list_items(
        ctx, page, status=status, kind=kind, invoice_id=invoice, owner=owner, overdue=overdue
    )
    return json_response(
        ListOut[ExceptionItemOut](data=[ExceptionItemOut.of(i) for i in rows], has_more=has_more),
        ctx.request_id,
    )


@router.get("/exception_items/{item_id}", response_model=ExceptionItemOut, responses=READ_ERRORS)
def get_exception_item(item_id: str, ctx: Read) -> Response:
    return json_response(ExceptionItemOut.of(service.get(ctx, item_id)), ctx.request_id)


@router.post(
    "/exception_items/{item_id}/assign",
    response_model=ExceptionItemOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ExceptionAssign),
)
def assign_exception_item(item_id: str, write: Write) -> Response:
    def command(ctx: Ctx, body: ExceptionAssign) -> ExceptionItemOut:
        return ExceptionItemOut.of(service.assign(ctx, item_id, body.owner, body.note))

    return write.run(
        ExceptionAssign,
        command,
        object_name="exception_item",
        action="assign an exception item",
        status_code=200,
    )


@router.post(
    "/exception_items/{item_id}/snooze",
    response_model=ExceptionItemOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ExceptionSnooze),
)
def snooze_exception_item(item_id: str, write: Write) -> Response:
    def command(ctx: Ctx, body: ExceptionSnooze) -> ExceptionItemOut:
        return ExceptionItemOut.of(service.snooze(ctx, item_id, body.until, body.note))

    return write.run(
        ExceptionSnooze,
        command,
        object_name="exception_item",
        action="snooze an exception item",
        status_code=200,
    )


@router.post(
    "/exception_items/{item_id}/resolve",
    response_model=ExceptionItemOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ExceptionResolve, required=False),
)
def resolve_exception_item(item_id: str, write: Write) -> Response:
    def command(ctx: Ctx, body: ExceptionResolve) -> ExceptionItemOut:
        return ExceptionItemOut.of(service.resolve(ctx, item_id, body.note))

    return write.run(
        ExceptionResolve,
        command,
        object_name="exception_item",
        action="resolve an exception item",
        status_code=200,
    )
