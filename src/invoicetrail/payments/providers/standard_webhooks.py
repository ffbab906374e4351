"""Standard Webhooks: `webhook-id` / `webhook-timestamp` / `webhook-signature`, `whsec_` secrets."""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

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
)

STATUS = {
    "payment.processing": "processing",
    "payment.succeeded": "succeeded",
    "payment.failed": "failed",
    "payment.refunded": "refunded",
}
METHODS = ("card", "ach", "bank_transfer")


def is_valid_secret(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(secret[6:], validate=True)) >= 16
    except (binascii.Error, ValueError):
        return False


def verify(
    body: bytes, headers: dict[str, str], secrets: list[str], now: datetime, tolerance_seconds: int
) -> str:
    """Returns the `webhook-id` (the provider event id) once a signature matches."""
    msg_id = header(headers, "webhook-id")
    msg_timestamp = header(headers, "webhook-timestamp")
    msg_signature = header(headers, "webhook-signature")
    if not (msg_id and msg_timestamp and msg_signature):
        raise VerificationFailed(
            "signature_invalid", "webhook-id, -timestamp or -signature missing"
        )
    try:
        payload = body.decode("utf-8")
        signed_at = datetime.fromtimestamp(int(msg_timestamp), UTC)
    except (UnicodeDecodeError, ValueError, OverflowError, OSError):
        raise VerificationFailed("signature_invalid", "Unreadable body or timestamp") from None
    presented = []
    for versioned in msg_signature.split(" "):
        version, _, signature = versioned.partition(",")
        if version == "v1" and signature:
            try:
                presented.append(base64.b64decode(signature, validate=True))
            except (binascii.Error, ValueError):
                continue
    for secret in secrets:
        # The library computes the HMAC; the timestamp check is ours (injected clock).
        expected = Webhook(secret).sign(msg_id=msg_id, timestamp=signed_at, data=payload)
        expected_bytes = base64.b64decode(expected.split(",", 1)[1])
        if any(hmac.compare_digest(expected_bytes, candidate) for candidate in presented):
            check_tolerance(signed_at.timestamp(), now, tolerance_seconds)
            return msg_id
    raise VerificationFailed("signature_invalid", "No signature matches a current secret")


def parse(body: bytes, provider_event_id: str) -> Evidence:
    event = load_event(body)
    event_type = require_str(event.get("type"), "type")
    data = event.get("data")
    if event_type not in STATUS and event_type != "transfer.received":
        return Evidence(
            provider_event_id=provider_event_id, event_type=event_type, action="ignored"
        )
    if not isinstance(data, dict):
        raise UnprocessablePayload("data must be an object")
    method = data.get("method")
    occurred_at = None
    if isinstance(data.get("occurred_at"), str):
        try:
            occurred_at = datetime.fromisoformat(data["occurred_at"].replace("Z", "+00:00"))
        except ValueError:
            occurred_at = None
    common = {
        "provider_event_id": provider_event_id,
        "event_type": event_type,
        "reference": require_str(
            data.get("payment_reference"), "data.payment_reference", REFERENCE_LENGTH_MAX
        ),
        "invoice_id": optional_str(data.get("invoice"), "data.invoice"),
        "amount_minor": require_positive_int(data.get("amount"), "data.amount"),
        "currency": require_currency(data.get("currency"), "data.currency"),
        "method": method if method in METHODS else "other",
        "occurred_at": occurred_at,
    }
    if event_type == "transfer.received":
        return Evidence(
            action="transfer",
            status="succeeded",
            reference_code=optional_str(data.get("reference_code"), "data.reference_code"),
            **common,  # type: ignore[arg-type]
        )
    status = STATUS[event_type]
    return Evidence(
        action="refund" if status == "refunded" else "payment",
        status=status,
        **common,  # type: ignore[arg-type]
    )


def sign(body: bytes, secret: str, msg_id: str, timestamp: datetime) -> dict[str, str]:
    """What a Standard Webhooks sender puts on the request (the simulated provider uses it)."""
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }
