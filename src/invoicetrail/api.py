"""`create_app(settings, clock)`: the ASGI app; no module-level engine or settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from invoicetrail.accounts import routes as account_routes
from invoicetrail.accounts import service as accounts
from invoicetrail.console import routes as console_routes
from invoicetrail.core.clock import Clock, SystemClock
from invoicetrail.core.config import Settings
from invoicetrail.core.db import make_engine, make_sessionmaker, read_session
from invoicetrail.core.errors import (
    ApiError,
    InternalError,
    StorageUnavailable,
    ValidationFailed,
)
from invoicetrail.core.http import (
    AppState,
    Principal,
    RateLimiter,
    RequestIdMiddleware,
    error_response,
    param_path,
    request_id_of,
)
from invoicetrail.core.openapi import install_openapi
from invoicetrail.customers import routes as customer_routes
from invoicetrail.einvoicing import routes as einvoice_routes
from invoicetrail.events import routes as event_routes
from invoicetrail.exceptions import routes as exception_routes
from invoicetrail.exports import routes as export_routes
from invoicetrail.invoices import routes as invoice_routes
from invoicetrail.ledger import routes as ledger_routes
from invoicetrail.payments import routes as payment_routes
from invoicetrail.reconciliation import routes as reconciliation_routes
from invoicetrail.trace import routes as trace_routes
from invoicetrail.webhooks import routes as webhook_routes

log = logging.getLogger("invoicetrail.api")


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    clock = clock or SystemClock()
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)

    def authenticate(session: Session, authorization: str | None) -> Principal:
        return accounts.authenticate(session, authorization, clock.now())

    state = AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        clock=clock,
        authenticate=authenticate,
        limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="invoicetrail",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.invoicetrail = state
    app.add_middleware(RequestIdMiddleware)
    _install_error_handlers(app)

    for router in (
        account_routes.router,
        customer_routes.router,
        invoice_routes.router,
        einvoice_routes.router,
        payment_routes.router,
        event_routes.router,
        exception_routes.router,
        ledger_routes.router,
        export_routes.router,
        trace_routes.router,
        reconciliation_routes.router,
        webhook_routes.router,
        console_routes.router,
    ):
        app.include_router(router)
    app.mount("/console/static", console_routes.static_files, name="console-static")

    @app.get("/healthz", include_in_schema=True, tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Database unreachable"}})
    def readyz(request: Request) -> Response:
        try:
            with read_session(sessions) as session:
                session.execute(text("SELECT 1"))
        except (DBAPIError, PoolTimeout, OSError):
            return error_response(
                StorageUnavailable("The database is not reachable"), request_id_of(request)
            )
        return JSONResponse({"status": "ready"})

    install_openapi(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def on_request_validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        loc = tuple(p for p in first.get("loc", ()) if p not in ("query", "path", "header", "body"))
        param = param_path(loc) or None
        reason = str(first.get("msg", "invalid value"))
        return error_response(
            ValidationFailed(f"Invalid {param}: {reason}", param=param), request_id_of(request)
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            error = ApiError(
                f"Unrecognized request URL ({request.method} {request.url.path})",
                code="resource_missing",
                status_code=404,
            )
        elif exc.status_code == 405:
            error = ApiError(
                f"{request.method} is not allowed on {request.url.path}",
                code="method_not_allowed",
                status_code=405,
            )
        else:
            error = ApiError(str(exc.detail), code="http_error", status_code=exc.status_code)
        return error_response(error, request_id_of(request))

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def on_storage_error(request: Request, exc: Exception) -> Response:
        log.warning("storage unavailable: %s", exc)
        return error_response(
            StorageUnavailable("Storage is unavailable right now; retry with the same key"),
            request_id_of(request),
        )

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error (a bug)", exc_info=exc)
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return error_response(
                StorageUnavailable("Storage connection lost; retry with the same key"),
                request_id_of(request),
            )
        return error_response(
            InternalError("An internal error occurred; it has been logged"),
            request_id_of(request),
        )


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory` (serve with several worker processes)."""
    from invoicetrail.core.migrate import require_current_schema

    settings = Settings()
    require_current_schema(settings)
    return create_app(settings)
