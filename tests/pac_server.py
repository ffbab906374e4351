"""A local test PAC speaking HttpPac's REST shape (see invoicetrail.einvoicing.pac).

It runs a `ThreadingHTTPServer` on 127.0.0.1 (a free port) in a daemon thread:

- `POST /security/authenticate` checks the user and password and hands out a token;
- `POST /cfdi40/stamp` checks the bearer token, validates the CFDI with `validate_cfdi`
  (XSD-invalid → 400 code "301", SW sapien's "XML mal formado"), checks the Sello
  (→ 400 "CFDI40102", SAT's code), and stamps it with a TimbreFiscalDigital. A document it
  already stamped gets the same stamp again, as real PACs do;
- `POST /cfdi40/cancel` marks an issued UUID cancelled (unknown UUID → 404 code "205", an
  RFC that is not the issuer's → 400 "203", as SAT's cancellation service answers).

Switches: `fail_with_status` answers every request with that status (an outage),
`delay_seconds` holds every answer (timeouts), `refuse_cancel_with` refuses cancellations
with that code (window closed), `expire_tokens()` forgets every token (401 → re-login).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from invoicetrail.einvoicing import cfdi
from invoicetrail.einvoicing.validation import validate_cfdi

HOST = "127.0.0.1"
PAC_RFC = "SPR190613I52"
PAC_NO_CERTIFICADO_SAT = "30001000000500003456"
DEFAULT_USER = "pac-user"
DEFAULT_PASSWORD = "pac-secret"


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]
    authorization: str | None


@dataclass
class Issued:
    uuid: str
    rfc: str
    stamped: bytes
    fecha_timbrado: str
    status: str = "stamped"  # stamped | cancelled
    motivo: str | None = None


@dataclass
class LocalPac:
    username: str = DEFAULT_USER
    password: str = DEFAULT_PASSWORD
    url: str = ""
    received: list[Received] = field(default_factory=list)
    issued: dict[str, Issued] = field(default_factory=dict)
    fail_with_status: int | None = None
    delay_seconds: float = 0.0
    refuse_cancel_with: str | None = None
    tokens: set[str] = field(default_factory=set)
    _by_digest: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        server = _Server((HOST, 0), _Handler)
        server.pac = self
        port = server.server_address[1]
        self.url = f"http://{HOST}:{port}"
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="local-pac", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def paths(self) -> list[str]:
        return [item.path for item in self.received]

    # -- request handling (called from the server threads) -----------------------------

    def handle(self, path: str, body: dict[str, Any], authorization: str | None) -> tuple[int, Any]:
        with self._lock:
            self.received.append(Received(path, body, authorization))
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        if self.fail_with_status is not None:
            return self.fail_with_status, {"message": "service unavailable (test outage)"}
        if path == "/security/authenticate":
            return self._authenticate(body)
        token = (authorization or "").removeprefix("Bearer ")
        with self._lock:
            known = token in self.tokens
        if not known:
            return 401, {"message": "token invalid or expired"}
        if path == "/cfdi40/stamp":
            return self._stamp(body)
        if path == "/cfdi40/cancel":
            return self._cancel(body)
        return 404, {"message": f"no route {path}"}

    def _authenticate(self, body: dict[str, Any]) -> tuple[int, Any]:
        if body.get("user") != self.username or body.get("password") != self.password:
            return 401, {"message": "bad credentials"}
        token = secrets.token_hex(16)
        with self._lock:
            self.tokens.add(token)
        return 200, {"status": "success", "data": {"token": token}}

    def _stamp(self, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            xml = base64.b64decode(str(body.get("xml") or ""), validate=True)
        except binascii.Error:
            return 400, {"code": "301", "message": "XML mal formado", "messageDetail": "base64"}
        report = validate_cfdi(xml)
        if not report.valid:
            detail = "; ".join(f.message for f in report.fatal[:3])
            return 400, {"code": "301", "message": "XML mal formado", "messageDetail": detail}
        if not cfdi.verify_sello(xml):
            return 400, {
                "code": "CFDI40102",
                "message": "El resultado de la digestión debe ser igual al resultado de la "
                "desencripción del sello.",
            }
        digest = hashlib.sha256(xml).hexdigest()
        with self._lock:
            known = self._by_digest.get(digest)
            issued = self.issued[known] if known else None
            if issued is None:
                stamp_uuid = str(uuid.uuid4()).upper()
                stamped_at = datetime.now(UTC).replace(microsecond=0)
                stamped = cfdi.add_timbre(
                    xml,
                    uuid=stamp_uuid,
                    stamped_at=stamped_at,
                    rfc_prov_certif=PAC_RFC,
                    no_certificado_sat=PAC_NO_CERTIFICADO_SAT,
                )
                issued = Issued(
                    uuid=stamp_uuid,
                    rfc=cfdi.issuer_rfc(xml) or "",
                    stamped=stamped,
                    fecha_timbrado=cfdi.mexico_local(stamped_at),
                )
                self.issued[stamp_uuid] = issued
                self._by_digest[digest] = stamp_uuid
        return 200, {
            "status": "success",
            "data": {
                "uuid": issued.uuid,
                "fechaTimbrado": issued.fecha_timbrado,
                "cfdi": base64.b64encode(issued.stamped).decode("ascii"),
            },
        }

    def _cancel(self, body: dict[str, Any]) -> tuple[int, Any]:
        stamp_uuid = str(body.get("uuid") or "").upper()
        with self._lock:
            issued = self.issued.get(stamp_uuid)
            if issued is None:
                return 404, {"code": "205", "message": "UUID no existe"}
            if body.get("rfc") != issued.rfc:
                return 400, {"code": "203", "message": "UUID no corresponde al emisor"}
            if body.get("motivo") not in ("01", "02", "03", "04"):
                return 400, {"code": "CA1001", "message": "motivo de cancelación inválido"}
            if self.refuse_cancel_with is not None:
                return 400, {"code": self.refuse_cancel_with, "message": "no cancelable"}
            issued.status = "cancelled"
            issued.motivo = str(body["motivo"])
        return 200, {"status": "success", "data": {"uuid": stamp_uuid, "status": "cancelled"}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    pac: LocalPac


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._answer(400, {"code": "400", "message": "the body is not a JSON object"})
            return
        pac = cast(_Server, self.server).pac
        status, answer = pac.handle(self.path, body, self.headers.get("Authorization"))
        self._answer(status, answer)

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        return None  # keep pytest output clean


@contextmanager
def running_pac(
    username: str = DEFAULT_USER, password: str = DEFAULT_PASSWORD
) -> Iterator[LocalPac]:
    pac = LocalPac(username=username, password=password)
    pac.start()
    try:
        yield pac
    finally:
        pac.stop()
