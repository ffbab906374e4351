"""CFDI transports: the built-in sandbox PAC and an HTTP client for a real PAC.

A PAC (proveedor autorizado de certificación) validates a signed CFDI, stamps it with a
TimbreFiscalDigital (the folio fiscal UUID and SAT's seal) and reports it to SAT; stamping is
synchronous, so `submit` answers `accepted` or `rejected`, never `submitted`.

`SandboxPac` opens no connection: it checks what a PAC checks first (cfdv40.xsd with the
Pagos 2.0 and TFD 1.1 schemas, the issuer's Sello) and adds a TimbreFiscalDigital whose UUID
is derived from the document's SHA-256, so resubmitting the same bytes gives the same UUID.
Its SelloSAT is a digest, not a signature: a sandbox stamp is never a real one.

`HttpPac` speaks the REST shape below, modelled on the common Mexican PAC REST APIs (SW
sapien's `/security/authenticate` + `/cfdi40/stamp`); a PAC with another shape needs an
adapter of its own. All bodies are JSON, `Content-Type: application/json`.

    POST {base}/security/authenticate  {"user": …, "password": …}
        200 {"data": {"token": "…"}}               401 bad credentials
    POST {base}/cfdi40/stamp           Authorization: Bearer <token>
                                       {"xml": "<base64 of the signed CFDI>"}
        200 {"data": {"uuid": "…", "fechaTimbrado": "2026-11-20T12:30:05",
                      "cfdi": "<base64 of the stamped CFDI>"}}
        400 {"code": "CFDI40102", "message": "…", "messageDetail": "…"}   SAT/PAC rejection
        401 token expired or unknown: we authenticate once more and retry once
    POST {base}/cfdi40/cancel          Authorization: Bearer <token>
                                       {"uuid": "…", "rfc": "<issuer RFC>", "motivo": "02"}
        200 cancelled (or already cancelled)
        4xx {"code": "…", "message": "…"}  refused (unknown UUID, window closed, …)

How failures are classed (see transports.py): connection errors, timeouts, 408, 429, 5xx,
401 after one fresh token, 403 (an account problem at the PAC, e.g. no stamps left) and
unreadable 2xx answers raise `TransportUnavailable`; any other 4xx on stamp is a rejection
of the document (`SubmitResult` rejected, findings `[{"rule": code, "message"}]`); any
other 4xx on cancel raises `CancelRefused`. Resubmitting the same signed XML after a lost
answer is safe: PACs answer a document they already stamped with its existing stamp.

Credentials: `INVOICETRAIL_PAC_URL`, `INVOICETRAIL_PAC_USERNAME`, `INVOICETRAIL_PAC_PASSWORD`
(`Settings.pac_url`, `pac_username`, `pac_password`), timeout
`INVOICETRAIL_EINVOICE_TIMEOUT_SECONDS`. Documents signed with a generated test CSD never
leave: `HttpPac` rejects them before opening a connection (rule `TEST_CERTIFICATE`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import uuid as uuidlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from lxml import etree

from invoicetrail.core.config import Settings
from invoicetrail.einvoicing import cfdi
from invoicetrail.einvoicing.transports import (
    CancelRefused,
    SubmitResult,
    Transport,
    TransportUnavailable,
)
from invoicetrail.einvoicing.validation import validate_cfdi

# The sandbox stamps as a PAC would; these identify it as the sandbox's own stamp.
SANDBOX_RFC_PROV_CERTIF = "SPR190613I52"
SANDBOX_NO_CERTIFICADO_SAT = "30001000000500003456"
# motivo de cancelación 02: "comprobante emitido con errores sin relación". 01 needs the
# substituting UUID (folioSustitucion), which a plain cancel does not have.
CANCEL_MOTIVOS = frozenset({"02", "03", "04"})
DEFAULT_CANCEL_MOTIVO = "02"
MESSAGE_CHARS_MAX = 1000
TEST_CERTIFICATE_FINDING = {
    "rule": "TEST_CERTIFICATE",
    "message": "signed with a generated test certificate; configure the entity's CSD",
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _sandbox_uuid(document: bytes) -> str:
    """A UUID4-shaped folio fiscal derived from the document, so a retry gets the same one."""
    digest = hashlib.sha256(document).digest()
    return str(uuidlib.UUID(bytes=digest[:16], version=4)).upper()


def _precheck(document: bytes) -> list[dict[str, str]]:
    """What any PAC checks first: the schemas, then the issuer's seal."""
    report = validate_cfdi(document)
    if not report.valid:
        return [{"rule": f.rule, "message": f.message} for f in report.fatal]
    if not cfdi.verify_sello(document):
        return [
            {
                "rule": "CFDI40102",
                "message": "El resultado de la digestión debe ser igual al resultado de la "
                "desencripción del sello.",
            }
        ]
    return []


class SandboxPac:
    """The built-in PAC: opens no connection, stamps every valid CFDI."""

    regime = "cfdi"
    sandbox = True

    def __init__(self, now: Callable[[], datetime] = _utcnow) -> None:
        self._now = now

    def submit(self, document: bytes, *, einvoice_id: str, document_type: str) -> SubmitResult:
        findings = _precheck(document)
        if findings:
            return SubmitResult(
                status="rejected", findings=tuple(findings), detail={"sandbox": True}
            )
        stamp_uuid = _sandbox_uuid(document)
        stamped_at = self._now().astimezone(UTC).replace(microsecond=0)
        stamped = cfdi.add_timbre(
            document,
            uuid=stamp_uuid,
            stamped_at=stamped_at,
            rfc_prov_certif=SANDBOX_RFC_PROV_CERTIF,
            no_certificado_sat=SANDBOX_NO_CERTIFICADO_SAT,
        )
        return SubmitResult(
            status="accepted",
            external_id=stamp_uuid,
            accepted_at=stamped_at,
            detail={
                "stamp_date": stamped_at.isoformat(),
                "fecha_timbrado": cfdi.mexico_local(stamped_at),
                "rfc_emisor": cfdi.issuer_rfc(document),
                "sandbox": True,
            },
            stamped_document=stamped,
        )

    def poll(self, external_id: str, detail: dict[str, Any]) -> SubmitResult:
        return SubmitResult(
            status="accepted",
            external_id=external_id,
            accepted_at=_stamp_date(detail),
            detail=detail,
        )

    def cancel(self, external_id: str, detail: dict[str, Any], reason: str) -> None:
        return None


def _stamp_date(detail: dict[str, Any]) -> datetime | None:
    value = detail.get("stamp_date")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of a PAC error answer, whatever shape it came in."""
    code = f"HTTP{response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return code, response.text[:MESSAGE_CHARS_MAX] or response.reason_phrase
    if not isinstance(body, dict):
        return code, str(body)[:MESSAGE_CHARS_MAX]
    code = str(body.get("code") or code)
    message = str(body.get("message") or response.reason_phrase)
    detail = body.get("messageDetail")
    if detail:
        message = f"{message}: {detail}"
    return code, message[:MESSAGE_CHARS_MAX]


def _retryable(status: int) -> bool:
    return status in (403, 408, 429) or status >= 500


class HttpPac:
    """A real PAC over HTTPS (see the module docstring for the REST shape)."""

    regime = "cfdi"
    sandbox = False

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        timeout_seconds: float,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._timeout = timeout_seconds
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout_seconds)
        self._token: str | None = None
        # Worker threads share one transport; one of them refreshes the token at a time.
        self._token_lock = threading.Lock()

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # -- HTTP plumbing ---------------------------------------------------------------

    def _post(self, path: str, payload: dict[str, Any], token: str | None) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return self._client.post(
                f"{self.base_url}{path}", json=payload, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise TransportUnavailable(f"PAC {path}: timed out ({exc})") from exc
        except httpx.HTTPError as exc:
            raise TransportUnavailable(f"PAC {path}: {type(exc).__name__}: {exc}") from exc

    def _authenticate(self, stale: str | None) -> str:
        with self._token_lock:
            # Another thread may have refreshed it while this one waited.
            if self._token is not None and self._token != stale:
                return self._token
            response = self._post(
                "/security/authenticate",
                {"user": self._username, "password": self._password},
                token=None,
            )
            if response.status_code != 200:
                code, message = _error_body(response)
                # Bad credentials are a configuration problem, not the document's: retryable
                # once INVOICETRAIL_PAC_USERNAME / _PASSWORD are fixed.
                raise TransportUnavailable(f"PAC authentication failed: {code}: {message}")
            try:
                token = response.json()["data"]["token"]
            except (ValueError, KeyError, TypeError):
                raise TransportUnavailable("PAC authentication answered without a token") from None
            if not isinstance(token, str) or not token:
                raise TransportUnavailable("PAC authentication answered without a token")
            self._token = token
            return token

    def _call(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        """POST with the bearer token; on 401 a fresh token and exactly one more try."""
        token = self._token or self._authenticate(None)
        response = self._post(path, payload, token)
        if response.status_code != 401:
            return response
        token = self._authenticate(token)
        response = self._post(path, payload, token)
        if response.status_code == 401:
            raise TransportUnavailable(f"PAC {path}: 401 with a fresh token")
        return response

    # -- Transport -------------------------------------------------------------------

    def submit(self, document: bytes, *, einvoice_id: str, document_type: str) -> SubmitResult:
        try:
            certificate = cfdi.certificate_of(document)
            rfc_emisor = cfdi.issuer_rfc(document)
        except etree.XMLSyntaxError as exc:
            finding = {"rule": "XML", "message": f"not well-formed XML: {exc}"}
            return SubmitResult(status="rejected", findings=(finding,))
        if certificate is not None and cfdi.is_test_certificate(certificate):
            # Never hand a test-signed document to a real PAC, whoever queued it.
            return SubmitResult(status="rejected", findings=(dict(TEST_CERTIFICATE_FINDING),))

        payload = {"xml": base64.b64encode(document).decode("ascii")}
        response = self._call("/cfdi40/stamp", payload)
        status = response.status_code
        if 200 <= status < 300:
            return self._stamped(response, rfc_emisor)
        code, message = _error_body(response)
        if _retryable(status) or not 400 <= status < 500:
            raise TransportUnavailable(f"PAC stamp: {status} {code}: {message}")
        # Any other 4xx: SAT's or the PAC's verdict on the document's data.
        return SubmitResult(
            status="rejected",
            findings=({"rule": code, "message": message},),
            detail={"http_status": status},
        )

    def _stamped(self, response: httpx.Response, rfc_emisor: str | None) -> SubmitResult:
        try:
            data = response.json()["data"]
            stamped = base64.b64decode(data["cfdi"], validate=True)
            timbre = cfdi.read_timbre(stamped)
        except (ValueError, KeyError, TypeError, binascii.Error, etree.XMLSyntaxError):
            # The PAC may have stamped it; resubmitting the same XML returns that stamp.
            raise TransportUnavailable("PAC stamp: unreadable answer") from None
        if timbre is None:
            raise TransportUnavailable("PAC stamp: the returned CFDI has no TimbreFiscalDigital")
        stamp_uuid = str(data.get("uuid") or timbre.uuid).upper()
        fecha = str(data.get("fechaTimbrado") or timbre.fecha_timbrado)
        try:
            stamped_at = cfdi.from_mexico_local(fecha)
        except ValueError:
            raise TransportUnavailable(f"PAC stamp: unreadable fechaTimbrado {fecha!r}") from None
        return SubmitResult(
            status="accepted",
            external_id=stamp_uuid,
            accepted_at=stamped_at,
            detail={
                "stamp_date": stamped_at.isoformat(),
                "fecha_timbrado": fecha,
                "rfc_emisor": rfc_emisor,
                "rfc_prov_certif": timbre.rfc_prov_certif,
                "no_certificado_sat": timbre.no_certificado_sat,
            },
            stamped_document=stamped,
        )

    def poll(self, external_id: str, detail: dict[str, Any]) -> SubmitResult:
        # Stamping is synchronous: a stamped CFDI is accepted for good.
        return SubmitResult(
            status="accepted",
            external_id=external_id,
            accepted_at=_stamp_date(detail),
            detail=detail,
        )

    def cancel(self, external_id: str, detail: dict[str, Any], reason: str) -> None:
        rfc = detail.get("rfc_emisor")
        if not isinstance(rfc, str) or not rfc:
            raise CancelRefused("no issuer RFC was recorded when the CFDI was stamped")
        motivo = reason if reason in CANCEL_MOTIVOS else DEFAULT_CANCEL_MOTIVO
        response = self._call("/cfdi40/cancel", {"uuid": external_id, "rfc": rfc, "motivo": motivo})
        status = response.status_code
        if 200 <= status < 300:
            return None
        code, message = _error_body(response)
        if _retryable(status) or not 400 <= status < 500:
            raise TransportUnavailable(f"PAC cancel: {status} {code}: {message}")
        raise CancelRefused(f"{code}: {message}")


def pac_transport(settings: Settings, client: httpx.Client | None = None) -> Transport:
    """HttpPac when INVOICETRAIL_PAC_URL is set, else the built-in SandboxPac."""
    if not settings.pac_url:
        return SandboxPac()
    if not settings.pac_username or not settings.pac_password:
        raise ValueError(
            "INVOICETRAIL_PAC_URL needs INVOICETRAIL_PAC_USERNAME and INVOICETRAIL_PAC_PASSWORD"
        )
    return HttpPac(
        settings.pac_url,
        settings.pac_username,
        settings.pac_password,
        settings.einvoice_timeout_seconds,
        client=client,
    )
