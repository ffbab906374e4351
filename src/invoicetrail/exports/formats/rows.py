"""What every format reads: one `ExportLine` per export row, in entry order, plus the facts
about the whole file that a format needs before its first row. Pure: no session, no clock."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from itertools import groupby
from operator import attrgetter
from typing import NamedTuple

from invoicetrail.core.money import currency_exponent


class ExportLine(NamedTuple):
    """A tuple, so a million of them are cheap to make from database rows."""

    row_id: str
    entry_id: str
    line_id: str
    position: int
    entry_date: date
    period: str
    business_key: str
    description: str
    account: str
    debit_minor: int
    credit_minor: int
    currency: str
    invoice_id: str | None = None
    payment_id: str | None = None
    credit_note_id: str | None = None
    customer_id: str | None = None
    reverses: str | None = None

    @property
    def currency_code(self) -> str:
        """The uppercase ISO 4217 code: the commodity in ledger files, the ERPs' currency."""
        return self.currency.upper()

    @property
    def signed_minor(self) -> int:
        """Debit positive, credit negative: ledger postings and Xero's Amount."""
        return self.debit_minor - self.credit_minor

    def major(self, amount_minor: int) -> str:
        return major_units(amount_minor, self.currency)

    def major_or_blank(self, amount_minor: int) -> str:
        return major_units(amount_minor, self.currency) if amount_minor else ""


@lru_cache(maxsize=256)
def _exponent(currency: str) -> int:
    return currency_exponent(currency) or 0


def major_units(amount_minor: int, currency: str) -> str:
    """`core.money.format_major` with the exponent looked up once per currency (a million
    rows format a million amounts): `163293, "eur"` → `1632.93`, `-5, "kwd"` → `-0.005`."""
    exponent = _exponent(currency)
    if exponent == 0:
        return str(amount_minor)
    whole, fraction = divmod(abs(amount_minor), 10**exponent)
    sign = "-" if amount_minor < 0 else ""
    return f"{sign}{whole}.{fraction:0{exponent}d}"


@dataclass(frozen=True)
class AccountUse:
    account: str
    first_date: date


@dataclass(frozen=True)
class FileFacts:
    """Known when the batch is built: the ledger accounts used (sorted) with the first date
    each is used, and the currencies (sorted, as stored)."""

    accounts: tuple[AccountUse, ...] = ()
    currencies: tuple[str, ...] = ()


Writer = Callable[[FileFacts, Iterable[ExportLine]], Iterator[str]]


@dataclass(frozen=True)
class Format:
    name: str
    media_type: str
    extension: str
    write: Writer
    # The file holds balanced journal entries (ERP journals, ledger transactions): the rows
    # of one entry are imported together, so they are acknowledged together.
    whole_entries: bool


_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
_UNTIDY = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|\s\s|^\s|\s$")


def one_line(text: str) -> str:
    """Control characters and line breaks become one space: one output line per row."""
    if _UNTIDY.search(text) is None:
        return text
    return _SPACES.sub(" ", _BREAKS.sub(" ", text)).strip()


_ENTRY_ID = attrgetter("entry_id")


def by_entry(rows: Iterable[ExportLine]) -> Iterator[tuple[ExportLine, list[ExportLine]]]:
    """Consecutive rows of one journal entry (rows come ordered by entry, then position)."""
    for _entry_id, group in groupby(rows, key=_ENTRY_ID):
        lines = list(group)
        yield lines[0], lines


def csv_field(value: str | int) -> str:
    """RFC 4180, quoting only where needed (as `csv.QUOTE_MINIMAL` does)."""
    if isinstance(value, int):
        return str(value)
    if '"' in value or "," in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(values: Sequence[str | int]) -> str:
    """One CSV record and its CRLF: about three times quicker than `csv.writer` per row."""
    return ",".join([csv_field(value) for value in values]) + "\r\n"
