from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from invoicetrail.core.http import ListOut, PageParams, Read, json_response
from invoicetrail.core.openapi import READ_ERRORS
from invoicetrail.exceptions import service
from invoicetrail.exceptions.schemas import ExceptionItemOut

router = APIRouter(prefix="/v1", tags=["exceptions"])


@router.get("/exception_items", response_model=ListOut[ExceptionItemOut], responses=READ_ERRORS)
def list_exception_items(
    ctx: Read,
    page: PageParams,
    status: Literal["open", "snoozed", "resolved"] | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    invoice: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    rows, has_more = service.list_items(ctx, page, status=status, kind=kind, invoice_id=invoice)
    return json_response(
        ListOut[ExceptionItemOut](data=[ExceptionItemOut.of(i) for i in rows], has_more=has_more),
        ctx.request_id,
    )


@router.get("/exception_items/{item_id}", response_model=ExceptionItemOut, responses=READ_ERRORS)
def get_exception_item(item_id: str, ctx: Read) -> Response:
    return json_response(ExceptionItemOut.of(service.get(ctx, item_id)), ctx.request_id)
