"""Beancount 3 input that `bean-check` accepts without a word: every account opened (on the
first date it is used) before the transactions, all under the five root types.

    2026-11-03 open Assets:Receivable

    2026-11-03 * "Invoice INV-2026-000001 finalized" ^je_… ^in_…
      journal_entry: "je_…"
      business_key: "finalize:in_…"
      Assets:Receivable  1632.93 EUR
        export_row: "exr_…"

One posting per export row, amount explicit in major units with the uppercase ISO code."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

from invoicetrail.exports.formats.rows import ExportLine, FileFacts, by_entry, one_line
from invoicetrail.ledger.chart import ROOT_TYPES

_NOT_COMPONENT = re.compile(r"[^A-Za-z0-9-]+")


@lru_cache(maxsize=4096)
def account_name(account: str) -> str:
    """Components start with a capital letter or digit and hold letters, digits and '-';
    a name outside the five root types is kept under Equity:Unmapped."""
    parts = [_NOT_COMPONENT.sub("-", part.strip()).strip("-") for part in account.split(":")]
    parts = [part[0].upper() + part[1:] for part in parts if part]
    if not parts or parts[0] not in ROOT_TYPES:
        parts = ["Equity", "Unmapped", *parts]
    return ":".join(parts)


def quoted(text: str) -> str:
    clean = one_line(text)
    if '"' in clean or "\\" in clean:
        clean = clean.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{clean}"'


def _is_plain_id(value: str) -> bool:
    """Our ids (`je_…`, `in_…`, `exr_…`): ASCII letters, digits and `_`, safe anywhere."""
    return value.isascii() and value.isidentifier()


def quoted_id(value: str) -> str:
    return f'"{value}"' if _is_plain_id(value) else quoted(value)


def header(facts: FileFacts) -> Iterator[str]:
    yield "; invoicetrail export: one posting per export row; bean-check (Beancount 3)\n"
    opened: dict[str, str] = {}
    for use in facts.accounts:
        name = account_name(use.account)
        day = use.first_date.isoformat()
        opened[name] = min(opened.get(name, day), day)
    if opened:
        yield "\n"
    for name in sorted(opened):
        yield f"{opened[name]} open {name}\n"


def write(facts: FileFacts, rows: Iterable[ExportLine]) -> Iterator[str]:
    """One string per transaction (its lines), so a million rows stream quickly."""
    yield from header(facts)
    for first, lines in by_entry(rows):
        ids = (first.entry_id, first.invoice_id)
        links = " ".join(f"^{value}" for value in ids if value and _is_plain_id(value))
        out = [
            "\n",
            f"{first.entry_date.isoformat()} * {quoted(first.description)} {links}\n",
            f"  journal_entry: {quoted_id(first.entry_id)}\n",
            f"  business_key: {quoted(first.business_key)}\n",
            f'  period: "{first.period}"\n',
        ]
        for name, value in (
            ("invoice", first.invoice_id),
            ("payment", first.payment_id),
            ("credit_note", first.credit_note_id),
            ("customer", first.customer_id),
            ("reverses", first.reverses),
        ):
            if value:
                out.append(f"  {name}: {quoted_id(value)}\n")
        for row in lines:
            out.append(
                f"  {account_name(row.account)}  {row.major(row.signed_minor)} "
                f"{row.currency_code}\n"
                f"    export_row: {quoted_id(row.row_id)}\n"
                f"    journal_line: {quoted_id(row.line_id)}\n"
            )
        yield "".join(out)
