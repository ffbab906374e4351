"""`/console`: sign-in, sign-out and the pages (one module per area under `console/pages`)."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from invoicetrail.console import service
from invoicetrail.console.pages import (
    exceptions,
    exports,
    invoices,
    overview,
    payments,
    reconciliation,
)
from invoicetrail.console.web import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    ConsoleStaticFiles,
    Page,
    action,
    csrf_refused,
    form_of,
    page,
    redirect,
    render,
)
from invoicetrail.core.db import write_transaction
from invoicetrail.core.errors import ApiError
from invoicetrail.core.http import app_state

router = APIRouter(prefix="/console", include_in_schema=False)
for _area in (exceptions, invoices, payments, reconciliation, exports):
    router.include_router(_area.router)
STATIC_DIR = Path(__file__).parent / "static"
static_files = ConsoleStaticFiles(directory=STATIC_DIR)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or app_state(request).settings.console_secure_cookies


@router.get("/login")
def login_form(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html.j2", login_csrf=token, title="Sign in")
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/console",
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_of(request)
    if not service.tokens_match(form.get("csrf_token"), request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        return csrf_refused(request)
    state = app_state(request)
    key = form.get("secret_key", "").strip()
    with write_transaction(state.sessions) as db:
        try:
            principal = state.authenticate(db, f"Bearer {key}")
        except ApiError:
            token = secrets.token_urlsafe(24)
            response = render(
                request,
                "login.html.j2",
                status_code=401,
                login_csrf=token,
                title="Sign in",
                error="That secret key is not valid (or has expired).",
            )
            response.set_cookie(
                LOGIN_CSRF_COOKIE,
                token,
                httponly=True,
                samesite="strict",
                secure=_secure(request),
                path="/console",
            )
            return response
        session_token = service.sign_in(db, principal, state.clock.now())
        db.commit()
    signed = redirect("/console")
    signed.set_cookie(
        SESSION_COOKIE,
        session_token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/console",
        max_age=int(service.SESSION_LIFETIME.total_seconds()),
    )
    signed.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return signed


def _signed_out(request: Request) -> Response:
    state = app_state(request)
    with write_transaction(state.sessions) as db:
        service.sign_out(db, request.cookies.get(SESSION_COOKIE))
        db.commit()
    response = redirect("/console/login", "Signed out.")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/logout")
def logout_link(request: Request) -> Response:
    """The nav's "Sign out" link. A GET is safe here: the SameSite=Strict cookie never comes
    with a request started by another site, so no other site can sign a user out."""
    return _signed_out(request)


@router.post("/logout")
async def logout(request: Request) -> Response:
    def do(_current: Page, _form: dict[str, str]) -> Response:
        return _signed_out(request)

    return await action(request, do)


@router.get("")
def overview_page(request: Request) -> Response:
    return page(request, overview.build)
