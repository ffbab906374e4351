"""Posting rules: pure functions from facts to balanced entries (no session)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from invoicetrail.core.errors import invariant
from invoicetrail.ledger import chart


@dataclass(frozen=True)
class Line:
    ledger_account: str
    debit_minor: int = 0
    credit_minor: int = 0


@dataclass(frozen=True)
class Entry:
    business_key: str
    entry_date: date
    currency: str
    description: str
    lines: list[Line]
    invoice_id: str | None = None
    payment_id: str | None = None
    credit_note_id: str | None = None
    customer_id: str | None = None
    reverses: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def normalized(lines: list[Line]) -> list[Line]:
    """Drops zero lines and turns a negative debit into a credit (and back)."""
    out = []
    for line in lines:
        net = line.debit_minor - line.credit_minor
        if net > 0:
            out.append(Line(line.ledger_account, debit_minor=net))
        elif net < 0:
            out.append(Line(line.ledger_account, credit_minor=-net))
    debit = sum(line.debit_minor for line in out)
    credit = sum(line.credit_minor for line in out)
    invariant(debit == credit, f"entry does not balance: {debit} ≠ {credit}")
    return out


def reversal_lines(lines: list[Line]) -> list[Line]:
    return [Line(line.ledger_account, line.credit_minor, line.debit_minor) for line in lines]


@dataclass(frozen=True)
class InvoiceFacts:
    invoice_id: str
    customer_id: str
    number: str
    currency: str
    subtotal_minor: int
    tax_minor: int
    total_minor: int


def finalize_lines(facts: InvoiceFacts) -> list[Line]:
    return [
        Line(chart.RECEIVABLE, debit_minor=facts.total_minor),
        Line(chart.REVENUE, credit_minor=facts.subtotal_minor),
        Line(chart.TAX_PAYABLE, credit_minor=facts.tax_minor),
    ]


def split_revenue_and_tax(facts: InvoiceFacts, amount_minor: int) -> tuple[int, int]:
    """Cash policy: the part of a receipt that is tax, in the invoice's own proportion."""
    if facts.total_minor == 0:
        return amount_minor, 0
    tax = (amount_minor * facts.tax_minor * 2 + facts.total_minor) // (2 * facts.total_minor)
    return amount_minor - tax, tax
