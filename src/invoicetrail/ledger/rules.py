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
    # The invoice's (subtotal, tax): how receivable splits into revenue and tax on a cash basis.
    revenue_split: tuple[int, int] | None = None
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


def to_cash_basis(lines: list[Line], revenue_split: tuple[int, int] | None) -> list[Line]:
    """Cash policy: receivable and bad debt never exist; what would move them moves revenue and
    tax in the invoice's proportion instead. Finalize, void and write-off then net to nothing,
    and a receipt recognises revenue when the money arrives."""
    subtotal_minor, tax_minor = revenue_split or (1, 0)
    facts = InvoiceFacts("", "", "", "", subtotal_minor, tax_minor, subtotal_minor + tax_minor)
    net: dict[str, int] = {}
    for line in lines:
        amount = line.debit_minor - line.credit_minor
        if line.ledger_account in (chart.RECEIVABLE, chart.BAD_DEBT):
            sign = 1 if amount >= 0 else -1
            revenue, tax = split_revenue_and_tax(facts, abs(amount))
            net[chart.REVENUE] = net.get(chart.REVENUE, 0) + sign * revenue
            net[chart.TAX_PAYABLE] = net.get(chart.TAX_PAYABLE, 0) + sign * tax
        else:
            net[line.ledger_account] = net.get(line.ledger_account, 0) + amount
    return [
        Line(account, debit_minor=max(amount, 0), credit_minor=max(-amount, 0))
        for account, amount in net.items()
        if amount
    ]
