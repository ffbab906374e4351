"""Money math: integer minor units, ISO 4217 exponents, half-up rounding (only here)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from iso4217 import Currency

AMOUNT_ABS_MAX_MINOR = 10**15


def currency_exponent(code: str) -> int | None:
    """The ISO 4217 minor-unit exponent, or None for an unknown or unit-less code (XAU, XXX)."""
    member = Currency.__members__.get(code.upper())
    if member is None:
        return None
    exponent = member.exponent
    return int(exponent) if exponent is not None else None


def is_known_currency(code: str) -> bool:
    return (
        len(code) == 3 and code.isascii() and code.isalpha() and currency_exponent(code) is not None
    )


def round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class LineAmounts:
    amount_minor: int
    tax_minor: int


def line_amounts(
    quantity: Decimal, unit_amount_minor: int, tax_rate_percent: Decimal
) -> LineAmounts:
    """Per line: amount = round(q × unit), tax = round(amount × rate / 100).

    Tax is never rounded once on the subtotal."""
    amount_minor = round_half_up(quantity * unit_amount_minor)
    tax_minor = round_half_up(Decimal(amount_minor) * tax_rate_percent / 100)
    return LineAmounts(amount_minor=amount_minor, tax_minor=tax_minor)


def format_major(amount_minor: int, currency: str) -> str:
    """`163293, "eur"` → `1632.93`: plain decimal, no grouping (ledger files, CSV)."""
    exponent = currency_exponent(currency) or 0
    sign = "-" if amount_minor < 0 else ""
    digits = str(abs(amount_minor)).rjust(exponent + 1, "0")
    if exponent == 0:
        return sign + digits
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"


def format_display(amount_minor: int, currency: str) -> str:
    """`119000, "eur"` → `1,190.00 EUR`: grouped, the currency's exponent (documents, e-mail)."""
    plain = format_major(amount_minor, currency)
    sign = "-" if plain.startswith("-") else ""
    whole, _, fraction = plain.removeprefix("-").partition(".")
    grouped = f"{int(whole):,}" + (f".{fraction}" if fraction else "")
    return f"{sign}{grouped} {currency.upper()}"
