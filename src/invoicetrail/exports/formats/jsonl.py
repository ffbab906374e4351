"""JSON Lines: one JSON object per export row, keys in a fixed order, amounts in minor
units and the currency in lowercase, as the API writes them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring

from invoicetrail.exports.formats.rows import ExportLine, FileFacts, by_entry

_string = encode_basestring


def _nullable(value: str | None) -> str:
    return "null" if value is None else _string(value)


def write(_facts: FileFacts, rows: Iterable[ExportLine]) -> Iterator[str]:
    for first, lines in by_entry(rows):
        # The entry's keys are encoded once per entry.
        dated = (
            f'"date":"{first.entry_date.isoformat()}","period":{_string(first.period)},'
            f'"business_key":{_string(first.business_key)},'
            f'"description":{_string(first.description)},'
        )
        refs = (
            f'"invoice":{_nullable(first.invoice_id)},"payment":{_nullable(first.payment_id)},'
            f'"credit_note":{_nullable(first.credit_note_id)},'
            f'"customer":{_nullable(first.customer_id)},"reverses":{_nullable(first.reverses)}}}\n'
        )
        yield "".join(
            [
                f'{{"object":"export_row","id":{_string(row.row_id)},'
                f'"journal_entry":{_string(row.entry_id)},"journal_line":{_string(row.line_id)},'
                f'"position":{row.position},{dated}"account":{_string(row.account)},'
                f'"debit":{row.debit_minor},"credit":{row.credit_minor},'
                f'"currency":{_string(row.currency)},{refs}'
                for row in lines
            ]
        )
