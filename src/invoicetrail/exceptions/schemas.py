from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import Body, Instant
from invoicetrail.exceptions.models import ExceptionItem

REF_NAMES = ("invoice", "payment", "provider_event", "journal_entry", "export_row")


class ExceptionItemOut(BaseModel):
    id: str
    object: str = "exception_item"
    kind: str
    status: str
    owner: str
    next_action: str
    due_at: str | None
    snoozed_until: str | None
    refs: dict[str, Any]
    detail: dict[str, Any]
    history: list[dict[str, Any]]
    created: str | None

    @classmethod
    def of(cls, item: ExceptionItem) -> ExceptionItemOut:
        return cls(
            id=item.id,
            kind=item.kind,
            status=item.status,
            owner=item.owner,
            next_action=item.next_action,
            due_at=iso_instant(item.due_at),
            snoozed_until=iso_instant(item.snoozed_until),
            refs={name: item.refs.get(name) for name in REF_NAMES}
            | {k: v for k, v in item.refs.items() if k not in REF_NAMES},
            detail=item.detail,
            history=item.history,
            created=iso_instant(item.created_at),
        )


class ExceptionAssign(Body):
    owner: Annotated[str, Field(min_length=1, max_length=256)]
    note: Annotated[str, Field(max_length=5000)] | None = None


class ExceptionSnooze(Body):
    until: Instant
    note: Annotated[str, Field(max_length=5000)] | None = None


class ExceptionResolve(Body):
    # Required by the service (400 parameter_missing), so a missing note names the param.
    note: Annotated[str, Field(max_length=5000)] | None = None
