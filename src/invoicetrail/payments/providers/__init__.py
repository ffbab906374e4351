"""Provider adapters: pure functions from verified bytes to `Evidence`; no session, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Action = Literal["payment", "refund", "dispute", "transfer", "ignored"]


class VerificationFailed(Exception):
    """The request is not from the provider; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnprocessablePayload(Exception):
    """Verified bytes we cannot read: kept and flagged, never applied."""


@dataclass(frozen=True)
class Evidence:
    provider_event_id: str
    event_type: str
    action: Action
    status: str | None = None
    reference: str | None = None
    invoice_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    method: str | None = None
    reference_code: str | None = None
    occurred_at: datetime | None = None
    fully_refunded: bool = True


def header(headers: dict[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def check_tolerance(signed_at_unix: float, now: datetime, tolerance_seconds: int) -> None:
    if abs(now.timestamp() - signed_at_unix) > tolerance_seconds:
        raise VerificationFailed(
            "timestamp_out_of_tolerance",
            f"The signature timestamp is more than {tolerance_seconds} s away from now",
        )


def require_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnprocessablePayload(f"{field} must be an integer")
    return value


def require_positive_int(value: object, field: str) -> int:
    amount = require_int(value, field)
    if not 0 < amount <= 10**15:
        raise UnprocessablePayload(f"{field} must be between 1 and 10^15 minor units")
    return amount


def require_str(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise UnprocessablePayload(f"{field} must be a non-empty string")
    return value


def optional_str(value: object, field: str) -> str | None:
    if value is None:
        return None
    return require_str(value, field)
