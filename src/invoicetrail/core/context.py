"""`Ctx`: everything a service needs, passed in; services never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from invoicetrail.core.config import Settings


@dataclass(frozen=True)
class Ctx:
    session: Session
    account_id: str
    request_id: str
    now: datetime
    settings: Settings
    actor: str = "api"
