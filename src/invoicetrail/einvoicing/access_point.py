"""Peppol: documents go to the issuer's access point (AS4 is the access point's business).

`HttpAccessPoint` speaks the plain REST shape most access-point providers offer to their
customers: `POST {url}` with the UBL document as `application/xml` and a Bearer token;
2xx → accepted (the provider's message id from the JSON answer's `id` or the `Location`
header); 400/422 → rejected with the provider's validation messages; anything else, a
timeout or a connection error → retryable. Unset, the built-in sandbox accepts every
document without opening a connection.
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime
from typing import Any

import httpx

from invoicetrail.core.config import Settings
from invoicetrail.einvoicing.transports import (
    CancelRefused,
    SubmitResult,
    Transport,
    TransportUnavailable,
)

REJECTION_STATUSES = frozenset({400, 409, 422})


class SandboxAccessPoint:
    regime = "peppol"
    sandbox = True

    def submit(self, document: bytes, *, einvoice_id: str, document_type: str) -> SubmitResult:
        message_id = "sandbox-" + hashlib.sha256(document).hexdigest()[:32]
        return SubmitResult(
            status="accepted",
            external_id=message_id,
            accepted_at=datetime.now(UTC),
            detail={"sandbox": True},
        )

    def poll(self, external_id: str, detail: dict[str, Any]) -> SubmitResult:
        return SubmitResult(status="accepted", external_id=external_id)

    def cancel(self, external_id: str, detail: dict[str, Any], reason: str) -> None:
        # Peppol has no cancellation: a delivered invoice is corrected by a credit note.
        raise CancelRefused(
            "a Peppol invoice cannot be cancelled once delivered; issue a credit note"
        )


class HttpAccessPoint:
    regime = "peppol"
    sandbox = False

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout_seconds: float,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.client = client or httpx.Client(timeout=timeout_seconds, follow_redirects=False)

    def submit(self, document: bytes, *, einvoice_id: str, document_type: str) -> SubmitResult:
        headers = {"Content-Type": "application/xml", "Idempotency-Key": einvoice_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.client.post(self.url, content=document, headers=headers)
        except httpx.HTTPError as exc:
            raise TransportUnavailable(f"access point unreachable: {exc!r}") from exc
        if response.status_code in REJECTION_STATUSES:
            return SubmitResult(
                status="rejected",
                findings=tuple(_messages(response)),
                detail={"http_status": response.status_code},
            )
        if not response.is_success:
            raise TransportUnavailable(f"access point answered {response.status_code}")
        message_id = response.headers.get("Location")
        with contextlib.suppress(ValueError):
            message_id = str(response.json().get("id") or message_id)
        return SubmitResult(
            status="accepted",
            external_id=message_id,
            accepted_at=datetime.now(UTC),
            detail={"http_status": response.status_code},
        )

    def poll(self, external_id: str, detail: dict[str, Any]) -> SubmitResult:
        return SubmitResult(status="accepted", external_id=external_id)

    def cancel(self, external_id: str, detail: dict[str, Any], reason: str) -> None:
        raise CancelRefused(
            "a Peppol invoice cannot be cancelled once delivered; issue a credit note"
        )


def _messages(response: httpx.Response) -> list[dict[str, str]]:
    try:
        body = response.json()
    except ValueError:
        return [{"rule": f"HTTP-{response.status_code}", "message": response.text[:500]}]
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return [
            {
                "rule": str(e.get("rule") or e.get("code") or f"HTTP-{response.status_code}"),
                "message": str(e.get("message") or e)[:500],
            }
            for e in errors
            if isinstance(e, dict)
        ]
    return [{"rule": f"HTTP-{response.status_code}", "message": str(body)[:500]}]


def access_point_transport(settings: Settings, client: httpx.Client | None = None) -> Transport:
    if settings.peppol_access_point_url:
        return HttpAccessPoint(
            settings.peppol_access_point_url,
            settings.peppol_access_point_token,
            settings.einvoice_timeout_seconds,
            client,
        )
    return SandboxAccessPoint()
