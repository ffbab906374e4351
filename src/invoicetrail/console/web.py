"""What every console page shares: the session, CSRF, templates and writes through the API path.

Pages are server-rendered (Jinja2); the only script is `static/console.js` (local times,
table sorting). Every write goes through `core.http.WriteRequest` — the same transaction,
idempotency key, validation and service function as the API — with the signed-in key as the
principal, so a console action is indistinguishable from the API call in history and trace.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import BaseModel

from invoicetrail.console import service
from invoicetrail.console.models import ConsoleSession
from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import read_session
from invoicetrail.core.errors import ApiError
from invoicetrail.core.http import (
    AppState,
    Principal,
    WriteRequest,
    app_state,
    read_body_limited,
    request_id_of,
)
from invoicetrail.core.money import format_display

SESSION_COOKIE = "it_console"
LOGIN_CSRF_COOKIE = "it_login_csrf"
M = TypeVar("M", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


def _money(amount_minor: int | None, currency: str | None) -> str:
    if amount_minor is None or not currency:
        return "—"
    return format_display(amount_minor, currency)


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("invoicetrail.console", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    env.filters["instant"] = lambda value: iso_instant(value) if value is not None else None
    return env


@dataclass
class Page:
    """A signed-in request: read context, session row and the app state."""

    request: Request
    state: AppState
    session: ConsoleSession
    ctx: Ctx

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return render(
            self.request,
            template,
            status_code=status_code,
            signed_in=True,
            csrf_token=self.csrf_token,
            account_id=self.ctx.account_id,
            **context,
        )


def render(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    context.setdefault("signed_in", False)
    context.setdefault("csrf_token", "")
    context.setdefault("account_id", "")
    context.setdefault("flash", request.query_params.get("flash"))
    context.setdefault("error", None)
    html = (
        environment()
        .get_template(template)
        .render(
            request_path=request.url.path,
            new_key=lambda: secrets.token_urlsafe(16),
            **context,
        )
    )
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Request-Id": request_id_of(request),
            "Cache-Control": "no-store",
            # Same-origin only; scripts and styles come from /console/static, nothing inline.
            "Content-Security-Policy": (
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


class ConsoleStaticFiles(StaticFiles):
    """The console's scripts and styles, never MIME-sniffed into something else."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def to_login(request: Request) -> RedirectResponse:
    return RedirectResponse("/console/login", status_code=303)


@contextmanager
def signed_in(request: Request) -> Iterator[Page | None]:
    """The page's read session, or None when nobody (or an expired key) is signed in."""
    state = app_state(request)
    with read_session(state.sessions) as db:
        now = state.clock.now()
        row = service.find(db, request.cookies.get(SESSION_COOKIE), now)
        if row is None:
            yield None
            return
        # Detached, so `action` can still read it once the read session has ended.
        db.expunge(row)
        ctx = Ctx(db, row.account_id, request_id_of(request), now, state.settings, actor="console")
        yield Page(request, state, row, ctx)


def page(request: Request, build: Callable[[Page], Response]) -> Response:
    """Runs a page builder signed in; API errors become an error page with their status."""
    with signed_in(request) as current:
        if current is None:
            return to_login(request)
        try:
            return build(current)
        except ApiError as exc:
            return current.render(
                "error.html.j2",
                status_code=exc.status_code,
                title="Not found" if exc.status_code == 404 else "Refused",
                message=exc.message,
            )


async def form_of(request: Request) -> dict[str, str]:
    """A urlencoded form (the console's only kind), size-limited like every body."""
    state = app_state(request)
    body = await read_body_limited(request, state.settings.body_bytes_max)
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError):
        return {}


def csrf_refused(request: Request) -> HTMLResponse:
    return render(
        request,
        "error.html.j2",
        status_code=403,
        title="Form refused",
        message="This form has no valid CSRF token. Reload the page and try again.",
    )


@dataclass
class WriteOutcome:
    ok: bool
    status_code: int
    body: dict[str, Any]
    message: str | None


def api_write(
    current: Page,
    form: dict[str, str],
    *,
    path: str,
    payload: dict[str, Any],
    body_model: type[M],
    command: Callable[[Ctx, M], Out],
    object_name: str,
    action: str,
) -> WriteOutcome:
    """The API write of `path`, keyed by the form's idempotency key (a resubmitted form is a
    replay, never a second action)."""
    write = WriteRequest(
        state=current.state,
        request_id=request_id_of(current.request),
        method="POST",
        path=path,
        authorization=None,
        idempotency_key=form.get("idempotency_key") or None,
        content_type="application/json",
        body=json.dumps(payload).encode(),
        principal=Principal(account_id=current.ctx.account_id, key_id=current.session.api_key_id),
    )
    try:
        response = write.run(body_model, command, object_name=object_name, action=action)
    except ApiError as exc:
        return WriteOutcome(False, exc.status_code, {}, exc.message)
    body = json.loads(bytes(response.body))
    if response.status_code >= 400:
        error = body.get("error", {})
        return WriteOutcome(False, response.status_code, body, error.get("message"))
    return WriteOutcome(True, response.status_code, body, None)


async def action(request: Request, do: Callable[[Page, dict[str, str]], Response]) -> Response:
    """A form POST: signed in and carrying the session's CSRF token, else refused (403).

    `do` runs after the page's read session has ended (so its own write transaction never
    waits on it): use `api_write`, not `page.ctx.session`.
    """
    form = await form_of(request)
    with signed_in(request) as current:
        if current is None:
            return to_login(request)
        if not service.tokens_match(form.get("csrf_token"), current.csrf_token):
            return csrf_refused(request)
    return do(current, form)


def redirect(path: str, flash: str | None = None) -> RedirectResponse:
    from urllib.parse import urlencode

    target = path + (("&" if "?" in path else "?") + urlencode({"flash": flash}) if flash else "")
    return RedirectResponse(target, status_code=303)
