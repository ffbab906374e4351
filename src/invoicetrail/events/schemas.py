from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from invoicetrail.core.clock import iso_instant
from invoicetrail.events.models import Event


class EventOut(BaseModel):
    id: str
    object: str = "event"
    type: str
    created: str | None
    data: dict[str, Any]
    request_id: str | None

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(
            id=event.id,
            type=event.type,
            created=iso_instant(event.created_at),
            data={"object": json.loads(event.data_json)},
            request_id=event.request_id,
        )
