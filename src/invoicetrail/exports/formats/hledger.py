"""hledger journal text that ledger-cli 3.x reads as well: only syntax both accept.

    ; header comment
    account Assets:Receivable          (declarations: `hledger check -s` and
    commodity EUR                       `ledger --pedantic` pass too)
    tag export_row

    2026-11-03 (je_…) Invoice INV-2026-000001 finalized
        ; business_key: finalize:in_…
        Assets:Receivable  1632.93 EUR  ; export_row: exr_…
            ; journal_line: jl_…

One posting per export row, amount explicit in major units ('.' decimal mark, no grouping)
with the uppercase ISO code as commodity; debits positive, credits negative."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

from invoicetrail.exports.formats.rows import ExportLine, FileFacts, by_entry, one_line

TAGS = (
    "business_key",
    "invoice",
    "payment",
    "credit_note",
    "customer",
    "reverses",
    "period",
    "export_row",
    "journal_line",
)
_INDENT = "    "
_WHITESPACE = re.compile(r"\s+")


@lru_cache(maxsize=4096)
def account_name(account: str) -> str:
    """Two spaces end an account name in both tools: keep single spaces only."""
    return _WHITESPACE.sub(" ", account).strip()


def description_text(text: str) -> str:
    """`;` would start a comment and `|` splits payee from note in hledger."""
    return one_line(text).replace(";", ",").replace("|", "/")


def tag_value(text: str) -> str:
    """A tag value runs to the end of the line (ledger) or the next comma (hledger)."""
    return description_text(text).replace(",", " ")


def id_value(value: str) -> str:
    """Our ids (`je_…`, `in_…`, `exr_…`) need no cleaning."""
    return value if value.isascii() and value.isidentifier() else tag_value(value)


def header(facts: FileFacts) -> Iterator[str]:
    yield "; invoicetrail export: one posting per export row; hledger >= 1.25, ledger 3.x\n"
    yield "\n"
    for use in facts.accounts:
        yield f"account {account_name(use.account)}\n"
    for currency in facts.currencies:
        yield f"commodity {currency.upper()}\n"
    for tag in TAGS:
        yield f"tag {tag}\n"


def write(facts: FileFacts, rows: Iterable[ExportLine]) -> Iterator[str]:
    """One string per transaction (its lines), so a million rows stream quickly."""
    yield from header(facts)
    for first, lines in by_entry(rows):
        title = description_text(first.description) or first.entry_id
        out = [
            "\n",
            f"{first.entry_date.isoformat()} ({first.entry_id}) {title}\n",
            f"{_INDENT}; business_key: {tag_value(first.business_key)}\n",
            f"{_INDENT}; period: {first.period}\n",
        ]
        for name, value in (
            ("invoice", first.invoice_id),
            ("payment", first.payment_id),
            ("credit_note", first.credit_note_id),
            ("customer", first.customer_id),
            ("reverses", first.reverses),
        ):
            if value:
                out.append(f"{_INDENT}; {name}: {id_value(value)}\n")
        for row in lines:
            out.append(
                f"{_INDENT}{account_name(row.account)}  "
                f"{row.major(row.signed_minor)} {row.currency_code}  ; export_row: {row.row_id}\n"
                f"{_INDENT}{_INDENT}; journal_line: {row.line_id}\n"
            )
        yield "".join(out)
