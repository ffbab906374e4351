"""HTTP plumbing shared by every domain's routes: request ids, body parsing, errors, the
authenticated `Read` and `Write` dependencies, pagination and rate limiting."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invoicetrail.core import idempotency
from invoicetrail.core.clock import Clock
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import read_session, write_transaction
from invoicetrail.core.errors import ApiError, IdempotencyError, ValidationFailed
from invoicetrail.core.faults import crash_point
from invoicetrail.core.ids import new_id

log = logging.getLogger("invoicetrail.http")

JSON_NESTING_DEPTH_MAX = 64
IDEMPOTENCY_KEY_LENGTH_MAX = 255
WRITE_ATTEMPTS_MAX = 3


@dataclass(frozen=True)
class Principal:
    account_id: str
    key_id: str


Authenticator = Callable[[Session, str | None], Principal]


class RateLimiter:
    """A token bucket per secret key, per process (SPEC allows per-process buckets)."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str) -> None:
        if self.per_second <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return
            self._buckets[key_id] = (tokens, now)
            wait_seconds = max(1, int((1.0 - tokens) / self.per_second + 0.999))
        raise ApiError(
            "Too many requests for this key; retry after the time in Retry-After",
            code="rate_limited",
            retryable=True,
            headers={"Retry-After": str(wait_seconds)},
            status_code=429,
        )


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    authenticate: Authenticator
    limiter: RateLimiter
    is_postgres: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_postgres = self.engine.dialect.name == "postgresql"


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.invoicetrail
    return state


def request_id_of(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return str(rid) if rid else new_id("req")


# --- errors -------------------------------------------------------------------------------


def error_response(error: ApiError, request_id: str) -> Response:
    return Response(
        content=json.dumps(error.body(request_id), ensure_ascii=False).encode(),
        status_code=error.status_code,
        media_type="application/json",
        headers={"Request-Id": request_id, **error.headers},
    )


def param_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad dict key: the key itself names it
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = part
    return out


def from_validation_error(exc: ValidationError, object_name: str, action: str) -> ApiError:
    first = exc.errors(include_url=False)[0]
    loc = tuple(p for p in first["loc"] if isinstance(p, int) or not str(p).startswith("function"))
    param = param_path(loc) or None
    kind = first["type"]
    if kind == "missing":
        return ValidationFailed(
            f"{param} is required to {action}",
            param=param,
            object_name=object_name,
            code="parameter_missing",
        )
    if kind == "extra_forbidden":
        return ValidationFailed(
            f"Received unknown parameter: {param}",
            param=param,
            object_name=object_name,
            code="parameter_unknown",
        )
    reason = str(first["msg"]).removeprefix("Value error, ")
    return ValidationFailed(
        f"Invalid {param}: {reason}" if param else reason,
        param=param,
        object_name=object_name,
    )


# --- bodies -------------------------------------------------------------------------------


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _depth_and_strings(value: Any) -> None:
    """Iterative walk: nesting ≤ 64, no U+0000 or lone surrogate anywhere (keys included)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict | list) and depth > JSON_NESTING_DEPTH_MAX:
            raise ValidationFailed(
                f"JSON nesting deeper than {JSON_NESTING_DEPTH_MAX} levels", code="invalid_json"
            )
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                _check_string(key, child_path)
                stack.append((child, depth + 1, child_path))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                stack.append((child, depth + 1, f"{path}[{index}]"))
        elif isinstance(item, str):
            _check_string(item, path)


def _check_string(value: str, path: str) -> None:
    if "\x00" in value:
        raise ValidationFailed(f"{path} contains U+0000, which is not allowed", param=path)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed(
            f"{path} contains a lone surrogate, which is not valid Unicode", param=path
        ) from None


def parse_json_object(body: bytes, content_type: str | None) -> dict[str, Any]:
    if not body.strip():
        return {}
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(
            "Request bodies must be JSON sent as application/json",
            code="unsupported_media_type",
            status_code=415,
        )
    try:
        text = body.decode("utf-8")
        parsed = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValidationFailed(
            f"The request body is not valid JSON: {type(exc).__name__}", code="invalid_json"
        ) from None
    if not isinstance(parsed, dict):
        raise ValidationFailed("The request body must be a JSON object", code="invalid_json")
    _depth_and_strings(parsed)
    return parsed


async def read_body_limited(request: Request, body_bytes_max: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_bytes_max:
        raise payload_too_large(body_bytes_max)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > body_bytes_max:
            raise payload_too_large(body_bytes_max)
        chunks.append(chunk)
    return b"".join(chunks)


def payload_too_large(body_bytes_max: int) -> ApiError:
    return ApiError(
        f"The request body is larger than {body_bytes_max} bytes",
        code="payload_too_large",
        status_code=413,
    )


# --- the authenticated dependencies ---------------------------------------------------------

M = TypeVar("M", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)
T = TypeVar("T")


class Empty(BaseModel):
    """The body of an action that takes none (finalize, send, …): `{}` or nothing."""

    model_config = {"extra": "forbid"}


@dataclass
class WriteRequest:
    state: AppState
    request_id: str
    method: str
    path: str
    authorization: str | None
    idempotency_key: str | None
    content_type: str | None
    body: bytes
    url_values: list[tuple[str, str, bool]] = field(default_factory=list)
    # Set by the ops console, whose session already authenticated the key; else the header.
    principal: Principal | None = None

    def run(
        self,
        body_model: type[M],
        command: Callable[[Ctx, M], Out],
        *,
        object_name: str,
        action: str,
        status_code: int = 200,
        retention: timedelta | None = None,
    ) -> Response:
        """The one transaction of an API write: auth, key claim, validation, command, answer."""
        for attempt in range(1, WRITE_ATTEMPTS_MAX + 1):
            try:
                return self._attempt(
                    body_model,
                    command,
                    object_name=object_name,
                    action=action,
                    status_code=status_code,
                    retention=retention,
                )
            except IntegrityError:
                # A concurrent writer won a unique business key; the next attempt's reads see
                # its row and answer as the domain says (e.g. duplicate_external_reference).
                if attempt == WRITE_ATTEMPTS_MAX:
                    raise
        raise AssertionError("unreachable")

    def _attempt(
        self,
        body_model: type[M],
        command: Callable[[Ctx, M], Out],
        *,
        object_name: str,
        action: str,
        status_code: int,
        retention: timedelta | None,
    ) -> Response:
        state = self.state
        with write_transaction(state.sessions) as session:
            principal = self.principal or state.authenticate(session, self.authorization)
            state.limiter.check(principal.key_id)
            key = self._valid_key()
            digest = idempotency.fingerprint(self.method, self.path, self.body)
            if state.is_postgres and not idempotency.try_claim_postgres(
                session, principal.account_id, key
            ):
                raise IdempotencyError(
                    "A request with this Idempotency-Key is still in progress; retry shortly",
                    code="idempotency_key_in_use",
                    retryable=True,
                    status_code=409,
                )
            crash_point("idempotency_locked")
            now = state.clock.now()
            existing = idempotency.find(session, principal.account_id, key, now)
            if existing is not None:
                if existing.fingerprint != digest:
                    raise IdempotencyError(
                        "This Idempotency-Key was already used with a different request "
                        f"({existing.method} {existing.path}); use a new key for a new request",
                        code="idempotency_key_reused",
                        status_code=422,
                    )
                return Response(
                    content=existing.response_body,
                    status_code=existing.status_code,
                    media_type="application/json",
                    headers={"Request-Id": self.request_id, "Idempotent-Replayed": "true"},
                )
            reject_nul_in_url(self.url_values)
            payload = parse_json_object(self.body, self.content_type)
            try:
                parsed = body_model.model_validate(payload)
            except ValidationError as exc:
                raise from_validation_error(exc, object_name, action) from None
            ctx = Ctx(
                session=session,
                account_id=principal.account_id,
                request_id=self.request_id,
                now=now,
                settings=state.settings,
                actor=f"api_key:{principal.key_id}",
            )
            result = command(ctx, parsed)
            content = result.model_dump_json().encode()
            session.flush()
            idempotency.store(
                session,
                account_id=principal.account_id,
                key=key,
                fingerprint_hex=digest,
                method=self.method,
                path=self.path,
                request_id=self.request_id,
                response=idempotency.StoredResponse(status_code, content),
                now=now,
                retention=retention or timedelta(days=state.settings.idempotency_retention_days),
            )
            object_id = getattr(result, "id", None)
            idempotency.log_request(
                session,
                request_id=self.request_id,
                account_id=principal.account_id,
                idempotency_key=key,
                method=self.method,
                path=self.path,
                status_code=status_code,
                object_id=object_id if isinstance(object_id, str) else None,
                actor=f"api_key:{principal.key_id}",
                now=now,
            )
            crash_point("before_commit")
            session.commit()
        crash_point("after_commit_before_response")
        return Response(
            content=content,
            status_code=status_code,
            media_type="application/json",
            headers={"Request-Id": self.request_id},
        )

    def _valid_key(self) -> str:
        key = self.idempotency_key
        if key is None:
            raise IdempotencyError(
                "An Idempotency-Key header is required on every POST, PATCH and DELETE",
                code="idempotency_key_required",
            )
        if not (1 <= len(key) <= IDEMPOTENCY_KEY_LENGTH_MAX):
            raise IdempotencyError(
                f"Idempotency-Key must be 1–{IDEMPOTENCY_KEY_LENGTH_MAX} characters",
                code="idempotency_key_invalid",
            )
        return key


def url_values(request: Request) -> list[tuple[str, str, bool]]:
    """(name, value, is_path) of every path and query parameter."""
    path = [(name, str(value), True) for name, value in request.path_params.items()]
    return path + [(name, value, False) for name, value in request.query_params.multi_items()]


def reject_nul_in_url(values: list[tuple[str, str, bool]]) -> None:
    """PostgreSQL text cannot hold U+0000, so no id or filter containing it can match: answer
    as for any unknown id (path) or invalid parameter (query), never with a driver error."""
    for name, value, is_path in values:
        if "\x00" not in value:
            continue
        if is_path:
            raise ApiError(f"No such object: {value!r}", code="resource_missing", status_code=404)
        raise ValidationFailed(f"{name} contains U+0000, which is not allowed", param=name)


async def write_request(request: Request) -> WriteRequest:
    state = app_state(request)
    body = await read_body_limited(request, state.settings.body_bytes_max)
    return WriteRequest(
        state=state,
        request_id=request_id_of(request),
        method=request.method,
        path=request.url.path,
        authorization=request.headers.get("authorization"),
        idempotency_key=request.headers.get("idempotency-key"),
        content_type=request.headers.get("content-type"),
        body=body,
        url_values=url_values(request),
    )


Write = Annotated[WriteRequest, Depends(write_request)]


def read_access(request: Request) -> Iterator[Ctx]:
    state = app_state(request)
    with read_session(state.sessions) as session:
        principal = state.authenticate(session, request.headers.get("authorization"))
        state.limiter.check(principal.key_id)
        reject_nul_in_url(url_values(request))
        yield Ctx(
            session=session,
            account_id=principal.account_id,
            request_id=request_id_of(request),
            now=state.clock.now(),
            settings=state.settings,
        )


Read = Annotated[Ctx, Depends(read_access)]


def json_response(model: BaseModel, request_id: str, status_code: int = 200) -> Response:
    return Response(
        content=model.model_dump_json().encode(),
        status_code=status_code,
        media_type="application/json",
        headers={"Request-Id": request_id},
    )


# --- lists -------------------------------------------------------------------------------

LIST_LIMIT_MAX = 100


@dataclass(frozen=True)
class Page:
    limit: int
    starting_after: str | None


def page_params(
    limit: Annotated[int, Query(description="1–100, default 10")] = 10,
    starting_after: Annotated[
        str | None, Query(description="The last id of the previous page")
    ] = None,
) -> Page:
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValidationFailed(f"limit must be between 1 and {LIST_LIMIT_MAX}", param="limit")
    return Page(limit=limit, starting_after=starting_after)


PageParams = Annotated[Page, Depends(page_params)]


class ListOut(BaseModel, Generic[T]):
    object: str = "list"
    data: list[T]
    has_more: bool


# --- middleware ----------------------------------------------------------------------------


# SPEC accepts request headers up to 16 KiB in total; far past that is refused here, because
# the server (httptools) sets no limit of its own and the webhook inbox stores headers.
HEADER_BYTES_MAX = 64 * 1024


class RequestIdMiddleware:
    """Gives every request a `req_…` id and puts it on every response, errors included;
    refuses oversized headers with 431 before anything reads them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        header_bytes = sum(len(name) + len(value) for name, value in scope.get("headers", ()))
        if header_bytes > HEADER_BYTES_MAX:
            await _refuse_headers(send, request_id, header_bytes)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"request-id"]
                headers.append((b"request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _refuse_headers(send: Send, request_id: str, header_bytes: int) -> None:
    body = json.dumps(
        {
            "error": {
                "type": "invalid_request_error",
                "code": "request_headers_too_large",
                "message": f"request headers are {header_bytes} bytes; at most "
                f"{HEADER_BYTES_MAX} are accepted",
                "param": None,
                "retryable": False,
                "request_id": request_id,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 431,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
