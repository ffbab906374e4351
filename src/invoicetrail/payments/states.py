"""Payment status moves forward only; this table is the whole of it."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from invoicetrail.core.errors import InvalidTransition
from invoicetrail.payments.models import Payment


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"
    DISPUTED = "disputed"


P = PaymentStatus
TRANSITIONS: Final = frozenset(
    {
        (P.PENDING, P.PROCESSING),
        (P.PENDING, P.SUCCEEDED),
        (P.PENDING, P.FAILED),
        (P.PROCESSING, P.SUCCEEDED),
        (P.PROCESSING, P.FAILED),
        (P.SUCCEEDED, P.REFUNDED),
        (P.SUCCEEDED, P.DISPUTED),
    }
)


def can_transition(current: str, target: PaymentStatus) -> bool:
    return (PaymentStatus(current), target) in TRANSITIONS


def transition(payment: Payment, target: PaymentStatus) -> None:
    if not can_transition(payment.status, target):
        raise InvalidTransition(
            "payment", payment.id, payment.status, f"move to {target.value}", "an earlier status"
        )
    payment.status = target.value
