"""NetSuite journal entry CSV import (Import Assistant, record type Journal Entry).

Lines sharing an External ID form one journal entry; each journal balances."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from invoicetrail.exports.formats.rows import (
    ExportLine,
    FileFacts,
    by_entry,
    csv_field,
    csv_line,
    one_line,
)

HEADER = (
    "External ID",
    "Date",
    "Posting Period",
    "Currency",
    "Memo",
    "Account",
    "Debit",
    "Credit",
    "Line Memo",
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def posting_period(period: str) -> str:
    """`2026-11` → `Nov 2026`, NetSuite's default accounting period name."""
    return f"{_MONTHS[int(period[5:7]) - 1]} {period[:4]}"


def write(_facts: FileFacts, rows: Iterable[ExportLine]) -> Iterator[str]:
    yield csv_line(HEADER)
    for first, lines in by_entry(rows):
        # The journal's columns are the same on each of its lines.
        journal = (
            f"{first.entry_id},{first.entry_date.strftime('%m/%d/%Y')},"
            f"{posting_period(first.period)},{first.currency_code},"
            f"{csv_field(one_line(f'{first.description} [{first.business_key}]'))},"
        )
        yield "".join(
            [
                f"{journal}{csv_field(row.account)},{row.major_or_blank(row.debit_minor)},"
                f"{row.major_or_blank(row.credit_minor)},{row.row_id}\r\n"
                for row in lines
            ]
        )
