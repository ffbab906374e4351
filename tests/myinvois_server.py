"""A local MyInvois for tests: the SDK's login, submit, get-submission and cancel calls on a
loopback port, with the behaviour the SDK pages describe and an injectable clock.

    with running_myinvois(clock=ManualClock(start)) as server:
        transport = HttpMyInvois(api_url=server.url, identity_url=server.url, ...)
        server.advance(timedelta(hours=73))   # cancellation now answers OperationPeriodOver
        server.fail_with_status = 503         # every call answers 503 (an outage)

What it really does with a submission: base64-decodes each document, compares its SHA-256
with `documentHash`, runs the shape check (`myinvois.check_structure`) and refuses a
document issued more than 72 h ago (CF321). Accepted documents become Valid at once with
`dateTimeValidated` = the server clock (set `auto_validate = False` to keep them Submitted
until `validate()` / `invalidate()`).

Error codes where the SDK pages name one are the SDK's (BadStructure, OperationPeriodOver,
IncorrectState, invalid_client, …). The SDK's validation-rule list is not among the pages
shipped here: CF321 ("issuance date time value of the document is too old") is recalled
from LHDN's published error list and could not be checked offline; every other refusal of a
document uses BadArgument, or the shape check's own rule name (MYINVOIS-…) as the detail
code, which is this server's convention, not LHDN's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import string
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from invoicetrail.core.clock import Clock, ManualClock, SystemClock
from invoicetrail.einvoicing import myinvois

HOST = "127.0.0.1"
CANCEL_WINDOW = timedelta(hours=72)  # Cancel Document: 72 h from validation
ISSUE_AGE_MAX = timedelta(hours=72)  # CF321: a document must be submitted within 72 h
DOCUMENT_BYTES_MAX = 300 * 1024  # Submit Documents: 300 KB per document
DOCUMENTS_MAX = 100
REASON_CHARS_MAX = 300
_ALNUM = string.ascii_uppercase + string.digits
_SUBMISSION = re.compile(r"^/api/v1\.0/documentsubmissions/([^/]+)$")
_DETAILS = re.compile(r"^/api/v1\.0/documents/([^/]+)/details$")
_CANCEL = re.compile(r"^/api/v1\.0/documents/state/([^/]+)/state$")


def _uid(length: int = 26) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The SDK's standard error response."""
    return {"error": {"code": code, "message": message, "target": None, "details": details}}


@dataclass
class StoredDocument:
    uuid: str
    submission_uid: str
    code_number: str
    content: dict[str, Any]
    received_at: datetime
    status: str = "Submitted"  # Submitted | Valid | Invalid | Cancelled
    validated_at: datetime | None = None
    long_id: str | None = None
    cancelled_at: datetime | None = None
    status_reason: str | None = None
    validation_errors: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        invoice = self.content["Invoice"][0]
        supplier = invoice["AccountingSupplierParty"][0]["Party"][0]
        buyer = invoice["AccountingCustomerParty"][0]["Party"][0]
        totals = invoice["LegalMonetaryTotal"][0]

        def scheme(party: dict[str, Any], name: str) -> str | None:
            for item in party.get("PartyIdentification", []):
                if item["ID"][0].get("schemeID") == name:
                    return str(item["ID"][0]["_"])
            return None

        def amount(key: str) -> Any:
            return totals.get(key, [{"_": None}])[0]["_"]

        return {
            "uuid": self.uuid,
            "submissionUid": self.submission_uid,
            "longId": self.long_id if self.status in ("Valid", "Cancelled") else None,
            "internalId": self.code_number,
            "typeName": "invoice",
            "typeVersionName": invoice["InvoiceTypeCode"][0].get("listVersionID"),
            "issuerTin": scheme(supplier, "TIN"),
            "issuerName": supplier["PartyLegalEntity"][0]["RegistrationName"][0]["_"],
            "receiverId": scheme(buyer, "BRN") or scheme(buyer, "NRIC"),
            "receiverName": buyer["PartyLegalEntity"][0]["RegistrationName"][0]["_"],
            "dateTimeIssued": f"{invoice['IssueDate'][0]['_']}T{invoice['IssueTime'][0]['_']}",
            "dateTimeReceived": _stamp(self.received_at),
            "dateTimeValidated": _stamp(self.validated_at),
            "totalExcludingTax": amount("TaxExclusiveAmount"),
            "totalDiscount": amount("AllowanceTotalAmount"),
            "totalNetAmount": amount("LineExtensionAmount"),
            "totalPayableAmount": amount("PayableAmount"),
            "status": self.status,
            "cancelDateTime": _stamp(self.cancelled_at),
            "rejectRequestDateTime": None,
            "documentStatusReason": self.status_reason,
            "createdByUserId": "test-client",
        }


class MyInvoisServer:
    """The state of the local MyInvois; `url` serves both identity and API calls."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        client_id: str = "test-client",
        client_secret: str = "test-secret",
        token_lifetime_seconds: int = 3600,
        auto_validate: bool = True,
        check_issue_age: bool = True,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime_seconds = token_lifetime_seconds
        self.auto_validate = auto_validate
        self.check_issue_age = check_issue_age
        self.fail_with_status: int | None = None  # answer every call with this (outage)
        self.url = ""
        self.submissions: dict[str, list[str]] = {}  # submissionUid → document uuids
        self.documents: dict[str, StoredDocument] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) as received
        self.token_requests = 0
        self.tokens: dict[str, datetime] = {}  # access token → expiry (server clock)
        self.lock = threading.RLock()

    # --- test hooks ------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock.now().astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs the server started with a ManualClock")
        self.clock.advance(delta)

    def expire_tokens(self) -> None:
        """Every issued token stops working (the next call answers 401)."""
        with self.lock:
            self.tokens.clear()

    def validate(self, uuid: str, at: datetime | None = None) -> None:
        with self.lock:
            document = self.documents[uuid]
            document.status = "Valid"
            document.validated_at = (at or self.now()).astimezone(UTC)
            document.long_id = document.long_id or _uid(40)

    def set_validated_at(self, uuid: str, at: datetime) -> None:
        with self.lock:
            self.documents[uuid].validated_at = at.astimezone(UTC)

    def invalidate(self, uuid: str, code: str, message: str) -> None:
        """Ends validation as Invalid with one failed rule, as the asynchronous checks do."""
        with self.lock:
            document = self.documents[uuid]
            document.status = "Invalid"
            document.validation_errors.append(
                {"errorCode": code, "error": message, "propertyPath": None}
            )

    def status_of(self, uuid: str) -> str:
        with self.lock:
            return self.documents[uuid].status

    # --- calls -----------------------------------------------------------------------

    def token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        def one(name: str) -> str | None:
            values = form.get(name)
            return values[0] if values else None

        with self.lock:
            self.token_requests += 1
            if one("grant_type") != "client_credentials":
                return 400, {"error": "unsupported_grant_type"}
            if one("client_id") != self.client_id or one("client_secret") != self.client_secret:
                return 400, {"error": "invalid_client", "error_description": "Unknown client"}
            token = secrets.token_urlsafe(24)
            self.tokens[token] = self.now() + timedelta(seconds=self.token_lifetime_seconds)
            return 200, {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime_seconds,
                "scope": one("scope") or "InvoicingAPI",
            }

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        with self.lock:
            expiry = self.tokens.get(header.removeprefix("Bearer "))
            return expiry is not None and self.now() < expiry

    def submit(self, body: Any) -> tuple[int, dict[str, Any]]:
        documents = body.get("documents") if isinstance(body, dict) else None
        fields = ("format", "document", "documentHash", "codeNumber")
        if (
            not isinstance(documents, list)
            or not documents
            or len(documents) > DOCUMENTS_MAX
            or not all(isinstance(d, dict) and all(k in d for k in fields) for d in documents)
        ):
            message = "the submission must hold 1 to 100 documents with " + ", ".join(fields)
            return 400, _error("BadStructure", message)
        with self.lock:
            submission_uid = _uid()
            received = self.now()
            accepted: list[dict[str, Any]] = []
            rejected: list[dict[str, Any]] = []
            for item in documents:
                code_number = str(item["codeNumber"])
                content, problems = self.read(item)
                if problems or content is None:
                    rejected.append(
                        {
                            "invoiceCodeNumber": code_number,
                            "error": {
                                "code": "BadArgument",
                                "message": "Validation Error",
                                "target": code_number,
                                "details": problems,
                            },
                        }
                    )
                    continue
                uuid = _uid()
                self.documents[uuid] = StoredDocument(
                    uuid, submission_uid, code_number, content, received
                )
                self.submissions.setdefault(submission_uid, []).append(uuid)
                if self.auto_validate:
                    self.validate(uuid, received)
                accepted.append({"uuid": uuid, "invoiceCodeNumber": code_number})
            self.submissions.setdefault(submission_uid, [])
            return 202, {
                "submissionUid": submission_uid,
                "acceptedDocuments": accepted,
                "rejectedDocuments": rejected,
            }

    def read(self, item: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The decoded document, or the reasons it is refused."""

        def problem(code: str, message: str, path: str | None = None) -> list[dict[str, Any]]:
            return [{"code": code, "message": message, "target": path, "propertyPath": path}]

        if item["format"] != "JSON":
            return None, problem("BadArgument", "this local MyInvois reads JSON documents only")
        try:
            raw = base64.b64decode(str(item["document"]), validate=True)
        except (binascii.Error, ValueError):
            return None, problem("BadArgument", "document is not valid base64")
        if len(raw) > DOCUMENT_BYTES_MAX:
            return None, problem("MaximumSizeExceeded", "a document may have 300 KB at most")
        if hashlib.sha256(raw).hexdigest() != str(item["documentHash"]).lower():
            return None, problem("BadArgument", "documentHash is not the SHA-256 of document")
        try:
            content = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, problem("BadArgument", f"document is not JSON: {exc}")
        findings = myinvois.check_structure(content)
        if findings:
            return None, [
                {
                    "code": finding.rule,
                    "message": finding.message,
                    "target": finding.location,
                    "propertyPath": finding.location,
                }
                for finding in findings
            ]
        if self.check_issue_age:
            invoice = content["Invoice"][0]
            issued = datetime.fromisoformat(
                f"{invoice['IssueDate'][0]['_']}T{invoice['IssueTime'][0]['_']}"
            )
            if self.now() - issued > ISSUE_AGE_MAX:
                return None, problem(
                    "CF321",
                    "Issuance date time value of the document is too old that cannot be submitted.",
                    "Invoice.IssueDate",
                )
        return content, []

    def submission(self, uid: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if uid not in self.submissions:
                return 404, _error("NotFound", f"submission {uid} not found")
            documents = [self.documents[uuid] for uuid in self.submissions[uid]]
            page = int((query.get("pageNo") or ["1"])[0])
            size = min(int((query.get("pageSize") or ["100"])[0]), 100)
            statuses = {d.status for d in documents}
            if "Submitted" in statuses:
                overall = "in progress"
            elif statuses <= {"Valid", "Cancelled"}:
                overall = "valid"
            elif statuses == {"Invalid"}:
                overall = "invalid"
            else:
                overall = "partially valid"
            return 200, {
                "submissionUid": uid,
                "documentCount": len(documents),
                "dateTimeReceived": _stamp(documents[0].received_at) if documents else None,
                "overallStatus": overall,
                "documentSummary": [
                    d.summary() for d in documents[(page - 1) * size : page * size]
                ],
            }

    def details(self, uuid: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            document = self.documents.get(uuid)
            if document is None:
                return 404, _error("NotFound", f"document {uuid} not found")
            steps = (
                [
                    {
                        "status": "Invalid",
                        "name": "Step03-Document Validator",
                        "error": {
                            "errorCode": "Error",
                            "error": "Validation failed",
                            "innerError": document.validation_errors,
                        },
                    }
                ]
                if document.validation_errors
                else []
            )
            return 200, {
                **document.summary(),
                "validationResults": {"status": document.status, "validationSteps": steps},
            }

    def cancel(self, uuid: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or body.get("status") != "cancelled":
            return 400, _error("BadArgument", "status must be 'cancelled'")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_CHARS_MAX:
            return 400, _error("BadArgument", "reason is mandatory, 300 characters at most")
        with self.lock:
            document = self.documents.get(uuid)
            if document is None:
                return 404, _error("NotFound", f"document {uuid} not found")
            if document.status != "Valid" or document.validated_at is None:
                return 400, _error(
                    "IncorrectState", f"a {document.status} document cannot be cancelled"
                )
            if self.now() > document.validated_at + CANCEL_WINDOW:
                return 400, _error(
                    "OperationPeriodOver",
                    "The time limit for cancellation has run out; issue a credit, debit or "
                    "refund note instead.",
                )
            document.status = "Cancelled"
            document.cancelled_at = self.now()
            document.status_reason = reason
            return 200, {"uuid": uuid, "status": "Cancelled"}


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet in test output
        return

    def _answer(self, status: int, body: dict[str, Any] | None) -> None:
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        app = self.server.app
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        raw = self._body()
        with app.lock:
            app.requests.append((method, path))
            failing = app.fail_with_status
        if failing is not None:
            self._answer(failing, _error("ServiceUnavailable", f"simulated outage ({failing})"))
            return
        if method == "POST" and path == "/connect/token":
            form = parse_qs(raw.decode("utf-8"))
            self._answer(*app.token(form))
            return
        if not app.authorised(self.headers.get("Authorization")):
            self._answer(401, _error("Unauthorized", "the access token is missing or expired"))
            return
        try:
            body = json.loads(raw) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._answer(400, _error("BadStructure", "the body is not JSON"))
            return
        if method == "POST" and path in ("/api/v1.0/documentsubmissions/",):
            self._answer(*app.submit(body))
        elif method == "GET" and (match := _SUBMISSION.match(path)):
            self._answer(*app.submission(match.group(1), query))
        elif method == "GET" and (match := _DETAILS.match(path)):
            self._answer(*app.details(match.group(1)))
        elif method == "PUT" and (match := _CANCEL.match(path)):
            self._answer(*app.cancel(match.group(1), body))
        else:
            self._answer(404, _error("NotFound", f"no route {method} {path}"))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: MyInvoisServer) -> None:
        super().__init__((HOST, 0), _Handler)
        self.app = app


@contextmanager
def running_myinvois(**options: Any) -> Iterator[MyInvoisServer]:
    """A MyInvoisServer answering on a free loopback port for the `with` block."""
    app = MyInvoisServer(**options)
    httpd = _HTTPServer(app)
    app.url = f"http://{HOST}:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="myinvois-test",
        daemon=True,
    )
    thread.start()
    try:
        yield app
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
