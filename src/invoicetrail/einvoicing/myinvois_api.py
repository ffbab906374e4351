"""MyInvois transports: the LHDN e-Invoice API over HTTP, and a sandbox that opens no connection.

The HTTP adapter follows the SDK pages (tests/fixtures/einvoicing/myinvois/api/):
- Login as Taxpayer System: `POST {identity}/connect/token`, OAuth 2.0 client credentials,
  scope `InvoicingAPI`; the token is reused until shortly before `expires_in` runs out (the
  SDK asks ERPs not to log in per call), and dropped and renewed once on a 401.
- Submit Documents: `POST /api/v1.0/documentsubmissions/`, answered 202 with accepted and
  rejected documents. Accepted means "passed the synchronous checks": the document is
  `submitted` until Get Submission reports it Valid or Invalid.
- Get Submission: `GET /api/v1.0/documentsubmissions/{submissionUid}`.
- Cancel Document: `PUT /api/v1.0/documents/state/{uuid}/state`; a 400 (OperationPeriodOver
  after 72 h, IncorrectState, ActiveReferencingDocuments) or 403 is a `CancelRefused`.

Connection errors, timeouts, 5xx and 429 are `TransportUnavailable` (retry later), as is a
422 DuplicateSubmission (the SDK says: submit again after `Retry-After`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from invoicetrail.core.clock import Clock, SystemClock
from invoicetrail.core.config import Settings
from invoicetrail.einvoicing.transports import (
    CancelRefused,
    SubmitResult,
    Transport,
    TransportUnavailable,
)

TOKEN_PATH = "/connect/token"
SUBMIT_PATH = "/api/v1.0/documentsubmissions/"
SUBMISSION_PATH = "/api/v1.0/documentsubmissions/{uid}"
DETAILS_PATH = "/api/v1.0/documents/{uuid}/details"
CANCEL_PATH = "/api/v1.0/documents/state/{uuid}/state"
SCOPE = "InvoicingAPI"
# Renew this long before the token expires so a request never leaves with a dying token.
TOKEN_MARGIN_SECONDS = 60.0
REASON_CHARS_MAX = 300  # Cancel Document: "limited to 300 chars"
PAGE_SIZE = 100  # Get Submission's maximum page size
RETRYABLE = frozenset({422, 429})  # 422: DuplicateSubmission, retry after Retry-After
REFUSED = frozenset({400, 403, 413})  # the submission itself is refused as it is


def _error(body: Any, status: int) -> tuple[str, str, list[dict[str, Any]]]:
    """(code, message, details) from the SDK's standard error response. Real responses are
    not always shaped alike (`error` object or flat; `code` or `errorCode`), so read leniently."""
    if not isinstance(body, dict):
        return str(status), f"HTTP {status}", []
    error = body.get("error", body)
    if isinstance(error, str):  # OAuth: {"error": "invalid_client", "error_description"}
        return error, str(body.get("error_description") or error), []
    if not isinstance(error, dict):
        return str(status), f"HTTP {status}", []
    code = error.get("code") or error.get("errorCode") or str(status)
    message = error.get("message") or error.get("error") or error.get("errorMS") or code
    details = error.get("details") or error.get("innerError") or []
    if not isinstance(details, list):
        details = []
    return str(code), str(message), [item for item in details if isinstance(item, dict)]


def _finding(item: dict[str, Any]) -> dict[str, str]:
    code = item.get("code") or item.get("errorCode") or "error"
    message = item.get("message") or item.get("error") or item.get("errorMS") or code
    finding = {"rule": str(code), "message": str(message)}
    location = item.get("propertyPath") or item.get("target")
    if location:
        finding["location"] = str(location)
    return finding


def _findings(error: Any, status: int) -> tuple[dict[str, str], ...]:
    """A rejected document's findings: the error's details when it has any (each names one
    failed rule), else the error itself."""
    code, message, details = _error({"error": error} if isinstance(error, dict) else {}, status)
    if details:
        return tuple(_finding(item) for item in details)
    return ({"rule": code, "message": message},)


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_datetime(text: str) -> datetime:
    """MyInvois date-times ("2015-02-13T13:15:10Z", sometimes with 7 fraction digits) as UTC."""
    value = datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip()))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _code_number(document: bytes, fallback: str) -> str:
    """codeNumber is the issuer's own number for the document: its ID."""
    try:
        value = json.loads(document)["Invoice"][0]["ID"][0]["_"]
    except (ValueError, KeyError, IndexError, TypeError):
        return fallback
    return value if isinstance(value, str) and value else fallback


class HttpMyInvois:
    """The MyInvois e-Invoice API (preprod or production) for one taxpayer system."""

    regime = "myinvois"
    sandbox = False

    def __init__(
        self,
        *,
        api_url: str,
        identity_url: str | None,
        client_id: str,
        client_secret: str,
        timeout_seconds: float = 10.0,
        client: httpx.Client | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.identity_url = (identity_url or api_url).rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout_seconds = timeout_seconds
        self._owns_client = client is None  # a caller's client is the caller's to close
        self.client = client or httpx.Client(timeout=timeout_seconds)
        self.monotonic = monotonic
        self._token: str | None = None
        self._token_expires = 0.0
        # Workers share one transport; one login at a time keeps them to one token.
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # --- token -----------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            # The setting's timeout applies to a caller's client too.
            response = self.client.request(method, url, timeout=self.timeout_seconds, **kwargs)
        except httpx.HTTPError as exc:  # connection refused, timeout, protocol error
            raise TransportUnavailable(
                f"MyInvois unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 500 or response.status_code in RETRYABLE:
            code, message, _ = _error(_json(response), response.status_code)
            raise TransportUnavailable(
                f"MyInvois answered {response.status_code} ({code}: {message})"
            )
        return response

    def token(self) -> str:
        with self._lock:
            if self._token is not None and self.monotonic() < self._token_expires:
                return self._token
            response = self._send(
                "POST",
                self.identity_url + TOKEN_PATH,
                data={
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                    "grant_type": "client_credentials",
                    "scope": SCOPE,
                },
            )
            body = _json(response)
            if response.status_code != 200 or not isinstance(body, dict):
                # A refused login (invalid_client, blocked user) is a configuration problem
                # of ours, not the document's: report it as unavailable so nothing is
                # marked rejected, and let the operator see the message.
                code, message, _ = _error(body, response.status_code)
                raise TransportUnavailable(f"MyInvois login refused: {code}: {message}")
            token = body.get("access_token")
            if not isinstance(token, str) or not token:
                raise TransportUnavailable("MyInvois login answered without an access_token")
            lifetime = float(body.get("expires_in") or 3600)
            margin = min(TOKEN_MARGIN_SECONDS, lifetime / 2)
            self._token = token
            self._token_expires = self.monotonic() + lifetime - margin
            return token

    def drop_token(self) -> None:
        with self._lock:
            self._token = None
            self._token_expires = 0.0

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated call; on a 401 the token is renewed and the call made once more
        (the SDK: an unauthorised answer most likely means the token expired)."""
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
            response = self._send(method, self.api_url + path, headers=headers, **kwargs)
            if response.status_code != 401:
                return response
            self.drop_token()
            if attempt == 1:
                break
        raise TransportUnavailable("MyInvois refused the access token twice (401)")

    # --- Transport -------------------------------------------------------------------

    def submit(self, document: bytes, *, einvoice_id: str, document_type: str) -> SubmitResult:
        code_number = _code_number(document, einvoice_id)
        payload = {
            "documents": [
                {
                    "format": "JSON",
                    "document": base64.b64encode(document).decode("ascii"),
                    "documentHash": hashlib.sha256(document).hexdigest(),
                    "codeNumber": code_number,
                }
            ]
        }
        response = self._call("POST", SUBMIT_PATH, json=payload)
        body = _json(response)
        if response.status_code in REFUSED:
            # 400 BadStructure / MaximumSizeExceeded, 403 IncorrectSubmitter (the supplier
            # is not the taxpayer these credentials belong to): it cannot go as it is.
            code, message, details = _error(body, response.status_code)
            findings = tuple(_finding(item) for item in details) or (
                {"rule": code, "message": message},
            )
            return SubmitResult(status="rejected", findings=findings)
        if response.status_code != 202 or not isinstance(body, dict):
            # Anything else (404, 405, a 202 without JSON) is not about the document: most
            # likely a wrong INVOICETRAIL_MYINVOIS_URL. Retry later, do not reject.
            raise TransportUnavailable(f"Submit Documents answered {response.status_code}")
        # The Submit page's table spells it submissionUID, every other page submissionUid.
        submission_uid = body.get("submissionUid") or body.get("submissionUID")
        accepted = [d for d in body.get("acceptedDocuments") or [] if isinstance(d, dict)]
        rejected = [d for d in body.get("rejectedDocuments") or [] if isinstance(d, dict)]
        if accepted:
            uuid = str(accepted[0].get("uuid"))
            return SubmitResult(
                status="submitted",
                external_id=uuid,
                detail={"submission_uid": submission_uid, "code_number": code_number},
            )
        if rejected:
            return SubmitResult(
                status="rejected",
                findings=_findings(rejected[0].get("error"), response.status_code),
                detail={"submission_uid": submission_uid, "code_number": code_number},
            )
        raise TransportUnavailable("MyInvois answered 202 without accepted or rejected documents")

    def poll(self, external_id: str, detail: dict[str, Any]) -> SubmitResult:
        submission_uid = detail.get("submission_uid")
        if not submission_uid:
            raise ValueError("a MyInvois poll needs detail['submission_uid']")
        summary = self._summary(str(submission_uid), external_id)
        kept = {**detail, "submission_uid": submission_uid}
        if summary is None:  # not listed yet: still being processed
            return SubmitResult(status="submitted", external_id=external_id, detail=kept)
        status = str(summary.get("status") or "")
        if summary.get("longId"):
            kept["long_id"] = summary["longId"]
        if status == "Valid":
            validated = summary.get("dateTimeValidated")
            accepted_at = parse_datetime(validated) if isinstance(validated, str) else None
            if accepted_at is not None:
                kept["validated_at"] = accepted_at.isoformat()
            return SubmitResult(
                status="accepted", external_id=external_id, accepted_at=accepted_at, detail=kept
            )
        if status == "Invalid":
            return SubmitResult(
                status="rejected",
                external_id=external_id,
                findings=self._validation_findings(external_id, summary),
                detail=kept,
            )
        if status == "Cancelled":
            # Cancelled (by us, or on the buyer's rejection request) before we saw it Valid:
            # it does not stand, so it is reported as rejected with the reason given.
            reason = str(summary.get("documentStatusReason") or "cancelled at MyInvois")
            return SubmitResult(
                status="rejected",
                external_id=external_id,
                findings=({"rule": "Cancelled", "message": reason},),
                detail=kept,
            )
        return SubmitResult(status="submitted", external_id=external_id, detail=kept)

    def _summary(self, submission_uid: str, uuid: str) -> dict[str, Any] | None:
        page = 1
        while True:
            response = self._call(
                "GET",
                SUBMISSION_PATH.format(uid=submission_uid),
                params={"pageNo": page, "pageSize": PAGE_SIZE},
            )
            body = _json(response)
            if response.status_code == 404:
                return None  # the submission is not queryable yet
            if response.status_code != 200 or not isinstance(body, dict):
                code, message, _ = _error(body, response.status_code)
                raise TransportUnavailable(
                    f"Get Submission answered {response.status_code} ({code}: {message})"
                )
            documents = [d for d in body.get("documentSummary") or [] if isinstance(d, dict)]
            for document in documents:
                if document.get("uuid") == uuid:
                    return document
            if len(documents) < PAGE_SIZE:
                return None
            page += 1

    def _validation_findings(
        self, uuid: str, summary: dict[str, Any]
    ) -> tuple[dict[str, str], ...]:
        """Why MyInvois found a document Invalid. Get Submission carries no reasons, so the
        validation results come from Get Document Details (`/documents/{uuid}/details`,
        not among the SDK pages shipped here); without them, one generic finding."""
        results = summary.get("validationResults")
        if not isinstance(results, dict):
            try:
                response = self._call("GET", DETAILS_PATH.format(uuid=uuid))
            except TransportUnavailable:
                response = None
            body = None if response is None or response.status_code != 200 else _json(response)
            if isinstance(body, dict) and isinstance(body.get("validationResults"), dict):
                results = body["validationResults"]
        findings: list[dict[str, str]] = []
        if isinstance(results, dict):
            for step in results.get("validationSteps") or []:
                if not isinstance(step, dict) or not isinstance(step.get("error"), dict):
                    continue
                error = step["error"]
                inner = error.get("innerError") or error.get("details")
                items = [i for i in inner if isinstance(i, dict)] if isinstance(inner, list) else []
                findings.extend(_finding(item) for item in items or [error])
        if not findings:
            reason = summary.get("documentStatusReason") or "MyInvois found the document Invalid"
            findings.append({"rule": "Invalid", "message": str(reason)})
        return tuple(findings)

    def cancel(self, external_id: str, detail: dict[str, Any], reason: str) -> None:
        text = (reason or "").strip() or "Cancelled by the issuer"
        response = self._call(
            "PUT",
            CANCEL_PATH.format(uuid=external_id),
            json={"status": "cancelled", "reason": text[:REASON_CHARS_MAX]},
        )
        if response.status_code == 200:
            return
        code, message, _ = _error(_json(response), response.status_code)
        # 400 OperationPeriodOver / IncorrectState / ActiveReferencingDocuments, 403
        # Forbidden, 404: the authority will not cancel this document as asked.
        raise CancelRefused(f"{code}: {message}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _alnum_id(seed: bytes, length: int) -> str:
    """A MyInvois-like id: upper-case Latin letters and digits, derived from the seed."""
    text = base64.b32encode(hashlib.sha256(seed).digest()).decode("ascii").rstrip("=")
    return text[:length]


class SandboxMyInvois:
    """The built-in transport: opens no connection. Every document is accepted at once with
    ids derived from its bytes (the same document, the same uuid), as if MyInvois had
    validated it on arrival."""

    regime = "myinvois"
    sandbox = True

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()

    def submit(self, document: bytes, *, einvoice_id: str, document_type: str) -> SubmitResult:
        uuid = _alnum_id(b"document:" + document, 26)
        now = self.clock.now().astimezone(UTC)
        return SubmitResult(
            status="accepted",
            external_id=uuid,
            accepted_at=now,
            detail={
                "submission_uid": _alnum_id(b"submission:" + document, 26),
                "long_id": _alnum_id(b"long:" + document, 52),
                "validated_at": now.isoformat(),
                "sandbox": True,
            },
        )

    def poll(self, external_id: str, detail: dict[str, Any]) -> SubmitResult:
        validated = detail.get("validated_at")
        accepted_at = parse_datetime(validated) if isinstance(validated, str) else self.clock.now()
        return SubmitResult(
            status="accepted",
            external_id=external_id,
            accepted_at=accepted_at.astimezone(UTC),
            detail={**detail, "sandbox": True},
        )

    def cancel(self, external_id: str, detail: dict[str, Any], reason: str) -> None:
        return None


def myinvois_transport(settings: Settings, client: httpx.Client | None = None) -> Transport:
    """The HTTP adapter when MyInvois is configured (URL, client id and secret), else the
    sandbox."""
    if settings.myinvois_url and settings.myinvois_client_id and settings.myinvois_client_secret:
        return HttpMyInvois(
            api_url=settings.myinvois_url,
            identity_url=settings.myinvois_identity_url,
            client_id=settings.myinvois_client_id,
            client_secret=settings.myinvois_client_secret,
            timeout_seconds=settings.einvoice_timeout_seconds,
            client=client,
        )
    return SandboxMyInvois()
