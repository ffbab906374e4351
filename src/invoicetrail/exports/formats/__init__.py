"""Export formats: pure writers from export rows (in entry order) to lines of text."""

from __future__ import annotations

from invoicetrail.exports.formats import beancount, hledger, jsonl, netsuite, quickbooks, xero
from invoicetrail.exports.formats import csv as generic_csv
from invoicetrail.exports.formats.rows import AccountUse, ExportLine, FileFacts, Format

_CSV = "text/csv; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"

FORMATS: dict[str, Format] = {
    spec.name: spec
    for spec in (
        Format("csv", _CSV, "csv", generic_csv.write, whole_entries=False),
        Format(
            "jsonl", "application/jsonl; charset=utf-8", "jsonl", jsonl.write, whole_entries=False
        ),
        Format("netsuite", _CSV, "csv", netsuite.write, whole_entries=True),
        Format("quickbooks", _CSV, "csv", quickbooks.write, whole_entries=True),
        Format("xero", _CSV, "csv", xero.write, whole_entries=True),
        Format("hledger", _TEXT, "journal", hledger.write, whole_entries=True),
        Format("beancount", _TEXT, "beancount", beancount.write, whole_entries=True),
    )
}

__all__ = ["FORMATS", "AccountUse", "ExportLine", "FileFacts", "Format"]
