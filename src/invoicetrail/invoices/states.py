"""Invoice status: the one table of allowed moves, and the only code that sets `.status`."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from invoicetrail.core.errors import InvalidTransition, invariant
from invoicetrail.invoices.models import Invoice


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


DRAFT, OPEN, PAID, VOID, UNCOLLECTIBLE = (
    InvoiceStatus.DRAFT,
    InvoiceStatus.OPEN,
    InvoiceStatus.PAID,
    InvoiceStatus.VOID,
    InvoiceStatus.UNCOLLECTIBLE,
)

TRANSITIONS: Final = frozenset(
    {(DRAFT, OPEN), (OPEN, PAID), (OPEN, VOID), (OPEN, UNCOLLECTIBLE), (UNCOLLECTIBLE, PAID)}
)

# Which statuses each API action may start from; the refusal names them.
ACTIONS: Final[dict[str, tuple[frozenset[InvoiceStatus], str]]] = {
    "update": (frozenset({DRAFT}), "a draft invoice"),
    "finalize": (frozenset({DRAFT}), "a draft invoice"),
    "send": (frozenset({OPEN, PAID, UNCOLLECTIBLE}), "a finalized, non-void invoice"),
    "void": (frozenset({OPEN}), "an open invoice"),
    "mark_uncollectible": (frozenset({OPEN}), "an open invoice"),
    "pay": (frozenset({OPEN, UNCOLLECTIBLE}), "an open or uncollectible invoice"),
}


def require_action(invoice: Invoice, action: str) -> None:
    allowed, needs = ACTIONS[action]
    if invoice.status not in allowed:
        raise InvalidTransition("invoice", invoice.id, invoice.status, action, needs)


def transition(invoice: Invoice, target: InvoiceStatus) -> None:
    current = InvoiceStatus(invoice.status)
    invariant((current, target) in TRANSITIONS, f"invoice {invoice.id}: {current} → {target}")
    invoice.status = target.value
