"""Stripe: `Stripe-Signature: t=…,v1=…`, verified by the official library over the raw bytes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from invoicetrail.payments.providers import (
    REFERENCE_LENGTH_MAX,
    Evidence,
    UnprocessablePayload,
    VerificationFailed,
    check_tolerance,
    header,
    load_event,
    optional_str,
    require_currency,
    require_positive_int,
    require_str,
    unix_instant,
)

METHODS = {"card": "card", "us_bank_account": "ach", "customer_balance": "bank_transfer"}
PAYMENT_INTENT_STATUS = {
    "payment_intent.processing": "processing",
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
}


def verify(
    body: bytes, headers: dict[str, str], secrets: list[str], now: datetime, tolerance_seconds: int
) -> None:
    signature_header = header(headers, "Stripe-Signature")
    if not signature_header:
        raise VerificationFailed("signature_invalid", "Stripe-Signature header is missing")
    if not signature_header.isascii():
        # The library compares with hmac.compare_digest on str, which raises TypeError on
        # non-ASCII: such a header can never match a hex signature, so it is simply invalid.
        raise VerificationFailed("signature_invalid", "Stripe-Signature is not ASCII")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationFailed("signature_invalid", "The body is not UTF-8") from None
    # Imported here: the stripe package takes half a second to import, and most commands
    # (migrate, accounts, worker passes without Stripe endpoints) never verify a Stripe event.
    from stripe import SignatureVerificationError, WebhookSignature

    verified = False
    for secret in secrets:
        try:
            # The library checks the HMAC; the timestamp is ours, against the injected clock.
            WebhookSignature.verify_header(payload, signature_header, secret, tolerance=None)
        except SignatureVerificationError:
            continue
        verified = True
        break
    if not verified:
        raise VerificationFailed("signature_invalid", "No signature matches a current secret")
    timestamps = [part[2:] for part in signature_header.split(",") if part.strip().startswith("t=")]
    try:
        signed_at = float(timestamps[0].strip())
    except (IndexError, ValueError):
        raise VerificationFailed("signature_invalid", "The signature has no timestamp") from None
    check_tolerance(signed_at, now, tolerance_seconds)


def parse(body: bytes) -> Evidence:
    event = load_event(body)
    event_id = require_str(event.get("id"), "id")
    event_type = require_str(event.get("type"), "type")
    data = event.get("data")
    obj: dict[str, Any] = data.get("object") if isinstance(data, dict) else None  # type: ignore[assignment]
    occurred_at = unix_instant(event.get("created"))
    if event_type in PAYMENT_INTENT_STATUS:
        if not isinstance(obj, dict):
            raise UnprocessablePayload("data.object must be a PaymentIntent")
        status = PAYMENT_INTENT_STATUS[event_type]
        raw_metadata = obj.get("metadata")
        metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
        methods = obj.get("payment_method_types") or []
        method = None
        if isinstance(methods, list) and methods:
            method = METHODS.get(methods[0], "other") if isinstance(methods[0], str) else "other"
        amount_field = "amount_received" if status == "succeeded" else "amount"
        return Evidence(
            provider_event_id=event_id,
            event_type=event_type,
            action="payment",
            status=status,
            reference=require_str(obj.get("id"), "data.object.id", REFERENCE_LENGTH_MAX),
            invoice_id=optional_str(metadata.get("invoice"), "data.object.metadata.invoice"),
            amount_minor=require_positive_int(obj.get(amount_field), f"data.object.{amount_field}"),
            currency=require_currency(obj.get("currency"), "data.object.currency"),
            method=method,
            occurred_at=occurred_at,
        )
    if event_type in ("charge.refunded", "charge.dispute.created"):
        if not isinstance(obj, dict):
            raise UnprocessablePayload("data.object must be a Charge or Dispute")
        refunded = event_type == "charge.refunded"
        amount = obj.get("amount")
        amount_refunded = obj.get("amount_refunded")
        currency = obj.get("currency")
        return Evidence(
            provider_event_id=event_id,
            event_type=event_type,
            action="refund" if refunded else "dispute",
            status="refunded" if refunded else "disputed",
            reference=require_str(
                obj.get("payment_intent"), "data.object.payment_intent", REFERENCE_LENGTH_MAX
            ),
            amount_minor=amount if isinstance(amount, int) and amount > 0 else None,
            currency=require_currency(currency, "data.object.currency") if currency else None,
            occurred_at=occurred_at,
            fully_refunded=bool(obj.get("refunded"))
            or (
                isinstance(amount, int)
                and isinstance(amount_refunded, int)
                and amount_refunded >= amount
            ),
        )
    return Evidence(provider_event_id=event_id, event_type=event_type, action="ignored")


def sign(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """What Stripe sends, made by the official library (simulations and tests)."""
    from stripe import WebhookSignature

    return {
        "Stripe-Signature": WebhookSignature.generate_signature_header(
            body.decode(), secret, timestamp=timestamp
        )
    }
