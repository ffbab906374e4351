"""Request field types shared by several domains: limits from SPEC, each named once."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

import pycountry
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from invoicetrail.core.money import AMOUNT_ABS_MAX_MINOR, is_known_currency

NAME_LENGTH_MAX = 256
EMAIL_LENGTH_MAX = 512
DESCRIPTION_LENGTH_MAX = 5000
REFERENCE_LENGTH_MAX = 255
METADATA_KEYS_MAX = 50
METADATA_KEY_LENGTH_MAX = 40
METADATA_VALUE_LENGTH_MAX = 500

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class Body(BaseModel):
    """Request bodies: unknown fields are refused, nothing is coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _calendar_date(value: Any) -> Any:
    if isinstance(value, str):
        if not _DATE.match(value):
            raise ValueError("must be a calendar date YYYY-MM-DD")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("must be a real calendar date YYYY-MM-DD") from None
    raise ValueError("must be a calendar date string YYYY-MM-DD")


def _currency(value: str) -> str:
    if not is_known_currency(value):
        raise ValueError(f"'{value}' is not an ISO 4217 currency with minor units")
    return value.lower()


def _country(value: str) -> str:
    if len(value) != 2 or pycountry.countries.get(alpha_2=value.upper()) is None:
        raise ValueError(f"'{value}' is not an ISO 3166-1 alpha-2 country code")
    return value.upper()


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an e-mail address like name@example.com")
    return value


def _metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > METADATA_KEYS_MAX:
        raise ValueError(f"at most {METADATA_KEYS_MAX} keys")
    for key, item in value.items():
        if not 1 <= len(key) <= METADATA_KEY_LENGTH_MAX:
            raise ValueError(f"keys must be 1–{METADATA_KEY_LENGTH_MAX} characters ('{key[:50]}')")
        if len(item) > METADATA_VALUE_LENGTH_MAX:
            raise ValueError(f"value of '{key}' is longer than {METADATA_VALUE_LENGTH_MAX}")
    return value


def _instant(value: Any) -> Any:
    if isinstance(value, str) and 20 <= len(value) <= 40 and value[:4].isdigit():
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            try:
                return parsed.astimezone(UTC)
            except OverflowError:  # off the calendar in UTC (year 1 at +14:00, 9999 at -14:00)
                pass
    raise ValueError("must be an ISO 8601 instant with a time zone, like 2026-11-25T10:00:00Z")


CalendarDate = Annotated[date, BeforeValidator(_calendar_date)]
Instant = Annotated[datetime, BeforeValidator(_instant)]
CurrencyCode = Annotated[str, AfterValidator(_currency)]
CountryCode = Annotated[str, AfterValidator(_country)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH_MAX)]
Email = Annotated[str, Field(max_length=EMAIL_LENGTH_MAX), AfterValidator(_email)]
Description = Annotated[str, Field(max_length=DESCRIPTION_LENGTH_MAX)]
Reference = Annotated[str, Field(min_length=1, max_length=REFERENCE_LENGTH_MAX)]
ShortText = Annotated[str, Field(max_length=NAME_LENGTH_MAX)]
AmountMinor = Annotated[StrictInt, Field(ge=-AMOUNT_ABS_MAX_MINOR, le=AMOUNT_ABS_MAX_MINOR)]
PositiveAmountMinor = Annotated[StrictInt, Field(ge=1, le=AMOUNT_ABS_MAX_MINOR)]
Metadata = Annotated[dict[str, str], AfterValidator(_metadata)]


class AddressIn(Body):
    line1: ShortText | None = None
    line2: ShortText | None = None
    city: ShortText | None = None
    postal_code: Annotated[str, Field(max_length=32)] | None = None
    state: ShortText | None = None
    country: CountryCode


class TaxIdIn(Body):
    type: Annotated[str, Field(pattern=r"^[a-z]{2,3}_[a-z]{2,6}$")]
    value: Annotated[str, Field(min_length=1, max_length=64)]
