"""Xero manual journal import (Accounting → Manual journals → Import), the template's own
header. Lines with the same Narration and Date form one journal; Amount is signed."""

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
    "*Narration",
    "*Date",
    "Description",
    "*AccountCode",
    "*TaxRate",
    "*Amount",
    "TrackingName1",
    "TrackingOption1",
    "TrackingName2",
    "TrackingOption2",
)
# Tax is already its own journal line, so no tax is computed on any line.
TAX_RATE = "Tax Exempt"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def xero_date(row: ExportLine) -> str:
    """`dd mmm yyyy`: one of Xero's two accepted forms, read the same in every region."""
    day = row.entry_date
    return f"{day.day:02d} {_MONTHS[day.month - 1]} {day.year:04d}"


def write(_facts: FileFacts, rows: Iterable[ExportLine]) -> Iterator[str]:
    yield csv_line(HEADER)
    for first, lines in by_entry(rows):
        # Narration and Date group the lines into one journal.
        narration = csv_field(
            one_line(f"{first.entry_id} {first.description} ({first.currency_code})")
        )
        day = xero_date(first)
        yield "".join(
            [
                f"{narration},{day},{csv_field(one_line(f'{row.row_id} {row.business_key}'))},"
                f"{csv_field(row.account)},{TAX_RATE},{row.major(row.signed_minor)},,,,\r\n"
                for row in lines
            ]
        )
