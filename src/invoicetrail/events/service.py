"""The outbox: every state change records its event in the same transaction."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import NotFound
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.events.models import Event


def record(ctx: Ctx, event_type: str, obj: BaseModel) -> Event:
    object_id = getattr(obj, "id", None)
    if not isinstance(object_id, str):
        raise TypeError("an event's object needs a string id")
    event = Event(
        id=new_id("evt"),
        account_id=ctx.account_id,
        type=event_type,
        object_id=object_id,
        data_json=obj.model_dump_json(),
        request_id=ctx.request_id,
        created_at=ctx.now,
    )
    ctx.session.add(event)
    return event


def get(ctx: Ctx, event_id: str) -> Event:
    event = ctx.session.execute(
        select(Event).where(Event.id == event_id, Event.account_id == ctx.account_id)
    ).scalar_one_or_none()
    if event is None:
        raise NotFound("event", event_id)
    return event


def list_events(
    ctx: Ctx, page: Page, *, event_type: str | None, object_id: str | None
) -> tuple[list[Event], bool]:
    filters = []
    if event_type is not None:
        filters.append(Event.type == event_type)
    if object_id is not None:
        filters.append(Event.object_id == object_id)
    return list_page(ctx, Event, page, *filters, object_name="event")


def for_object(ctx: Ctx, object_id: str) -> list[Event]:
    return list(
        ctx.session.execute(
            select(Event)
            .where(Event.account_id == ctx.account_id, Event.object_id == object_id)
            .order_by(Event.seq)
        ).scalars()
    )


def prune_expired(session: Session, now: datetime, retention_days: int) -> int:
    """Worker housekeeping across accounts: events past their retention are deleted."""
    cutoff = now - timedelta(days=retention_days)
    result = session.execute(delete(Event).where(Event.created_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
