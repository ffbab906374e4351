from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from invoicetrail.core.http import ListOut, PageParams, Read, json_response
from invoicetrail.core.openapi import READ_ERRORS
from invoicetrail.events import service
from invoicetrail.events.schemas import EventOut

router = APIRouter(prefix="/v1", tags=["events"])


@router.get("/events", response_model=ListOut[EventOut], responses=READ_ERRORS)
def list_events(
    ctx: Read,
    page: PageParams,
    type: Annotated[str | None, Query(max_length=64)] = None,
    object: Annotated[str | None, Query(max_length=64, description="An object id")] = None,
) -> Response:
    rows, has_more = service.list_events(ctx, page, event_type=type, object_id=object)
    return json_response(
        ListOut[EventOut](data=[EventOut.of(e) for e in rows], has_more=has_more), ctx.request_id
    )


@router.get("/events/{event_id}", response_model=EventOut, responses=READ_ERRORS)
def get_event(event_id: str, ctx: Read) -> Response:
    return json_response(EventOut.of(service.get(ctx, event_id)), ctx.request_id)
