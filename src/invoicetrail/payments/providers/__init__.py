"""Provider adapters: pure functions from verified bytes to `Evidence`; no session, no clock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from invoicetrail.core.money import is_known_currency

# SPEC: a payment `reference` is at most 255 characters (and so is its column).
REFERENCE_LENGTH_MAX = 255

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


def require_str(value: object, field: str, max_length: int | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise UnprocessablePayload(f"{field} must be a non-empty string")
    if max_length is not None and len(value) > max_length:
        raise UnprocessablePayload(f"{field} must be at most {max_length} characters")
    return value


def require_currency(value: object, field: str) -> str:
    if not isinstance(value, str) or not is_known_currency(value):
        raise UnprocessablePayload(f"{field} must be an ISO 4217 currency code")
    return value.lower()


def unix_instant(value: object) -> datetime | None:
    """A Unix timestamp as an instant; None when it is none or out of any calendar's range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def load_event(body: bytes) -> dict[str, Any]:
    """The verified bytes as a JSON object. NaN/Infinity, U+0000 and lone surrogates (which no
    column can hold, and PostgreSQL text refuses) make it unreadable, like malformed JSON."""
    try:
        event = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise UnprocessablePayload("The body is not JSON") from None
    if not isinstance(event, dict):
        raise UnprocessablePayload("The event is not a JSON object")
    stack: list[Any] = [event]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and ("\x00" in item or not _is_utf8(item)):
            raise UnprocessablePayload("The event holds U+0000 or a lone surrogate")
    return event


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def optional_str(value: object, field: str) -> str | None:
    if value is None:
        return None
    return require_str(value, field)
