"""QuickBooks Online journal entry import (Settings → Import data → Journal entries).

Lines sharing a Journal No. form one journal entry; each journal balances."""

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
    "Journal No.",
    "Journal Date",
    "Currency",
    "Memo",
    "Account Name",
    "Debits",
    "Credits",
    "Description",
    "Name",
)
JOURNAL_NO_LENGTH_MAX = 21


def journal_no(entry_id: str) -> str:
    """QuickBooks keeps at most 21 characters of a journal number: the id's random tail
    (the full `je_…` id is in Memo)."""
    return entry_id.split("_", 1)[-1][-JOURNAL_NO_LENGTH_MAX:]


def write(_facts: FileFacts, rows: Iterable[ExportLine]) -> Iterator[str]:
    yield csv_line(HEADER)
    for first, lines in by_entry(rows):
        # The journal's columns are the same on each of its lines.
        memo = one_line(f"{first.entry_id} {first.description} [{first.business_key}]")
        journal = (
            f"{journal_no(first.entry_id)},{first.entry_date.strftime('%m/%d/%Y')},"
            f"{first.currency_code},{csv_field(memo)},"
        )
        # QuickBooks needs a Name on Accounts Receivable lines; the entry's customer goes on
        # every line of the journal, whatever the receivable account is called.
        customer = csv_field(first.customer_id or "")
        yield "".join(
            [
                f"{journal}{csv_field(row.account)},{row.major_or_blank(row.debit_minor)},"
                f"{row.major_or_blank(row.credit_minor)},{row.row_id},{customer}\r\n"
                for row in lines
            ]
        )
