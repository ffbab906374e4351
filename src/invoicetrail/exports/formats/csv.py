"""Generic CSV: one header line, then one line per export row; nothing else."""

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
    "export_row",
    "journal_entry",
    "journal_line",
    "position",
    "date",
    "period",
    "business_key",
    "description",
    "account",
    "debit",
    "credit",
    "currency",
    "debit_minor",
    "credit_minor",
    "invoice",
    "payment",
    "credit_note",
    "customer",
    "reverses",
)


def write(_facts: FileFacts, rows: Iterable[ExportLine]) -> Iterator[str]:
    yield csv_line(HEADER)
    accounts: dict[str, str] = {}
    for first, lines in by_entry(rows):
        # Columns that are the entry's are made once per entry; ids, dates, periods,
        # amounts and currency codes never need quoting.
        dated = (
            f"{first.entry_date.isoformat()},{first.period},"
            f"{csv_field(one_line(first.business_key))},{csv_field(one_line(first.description))},"
        )
        refs = (
            f"{first.invoice_id or ''},{first.payment_id or ''},{first.credit_note_id or ''},"
            f"{first.customer_id or ''},{first.reverses or ''}\r\n"
        )
        out = []
        for row in lines:
            account = accounts.get(row.account)
            if account is None:
                account = accounts[row.account] = csv_field(row.account)
            out.append(
                f"{row.row_id},{row.entry_id},{row.line_id},{row.position},{dated}{account},"
                f"{row.major(row.debit_minor)},{row.major(row.credit_minor)},{row.currency_code},"
                f"{row.debit_minor},{row.credit_minor},{refs}"
            )
        yield "".join(out)
