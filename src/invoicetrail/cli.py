"""`invoicetrail` command line: migrate, serve, worker, accounts, demo."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated

import typer

from invoicetrail import cli_control
from invoicetrail.core import http
from invoicetrail.core.config import Settings
from invoicetrail.core.migrate import SchemaOutOfDate, require_current_schema, upgrade
from invoicetrail.einvoicing.cli import einvoice_app

app = typer.Typer(
    help="invoicetrail: invoicing as a controlled chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
accounts_app = typer.Typer(help="Accounts (tenants) and their secret keys.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")


def _settings() -> Settings:
    return Settings()


def _log_to_stderr() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def _require_schema(settings: Settings) -> None:
    try:
        require_current_schema(settings)
    except SchemaOutOfDate as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None


@app.command()
def migrate() -> None:
    """Bring the schema to head (safe to run again)."""
    _log_to_stderr()
    upgrade(_settings())
    typer.echo("schema is at head", err=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="API processes (env INVOICETRAIL_SERVE_WORKERS)")
    ] = None,
) -> None:
    """API, OpenAPI at /openapi.json, docs at /docs and the ops console at /console."""
    import uvicorn

    settings = _settings()
    _require_schema(settings)
    uvicorn.run(
        "invoicetrail.api:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers or settings.serve_workers,
        h11_max_incomplete_event_size=http.HEADER_BYTES_MAX,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@app.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="Drain what is due now, then exit")] = False,
) -> None:
    """Background work: deliveries, e-mail, submissions, reconciliation, housekeeping."""
    from invoicetrail.worker import Worker

    _log_to_stderr()
    settings = _settings()
    _require_schema(settings)
    runner = Worker(settings)
    if once:
        report = runner.run_once()
        runner.close()
        typer.echo(json.dumps(report.__dict__), err=True)
        return
    runner.run_forever()


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Option(help="Account name")],
    country: Annotated[
        str | None, typer.Option(help="Country of the default legal entity (default US)")
    ] = None,
) -> None:
    """Create an account; prints {"id", "secret_key"} as the only line on stdout."""
    import pycountry

    from invoicetrail.accounts import service as accounts
    from invoicetrail.core.clock import SystemClock
    from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction

    settings = _settings()
    _require_schema(settings)
    if country is not None and pycountry.countries.get(alpha_2=country.upper()) is None:
        typer.echo(f"--country {country!r} is not an ISO 3166-1 alpha-2 code", err=True)
        raise typer.Exit(code=2)
    engine = make_engine(settings)
    try:
        with write_transaction(make_sessionmaker(engine)) as session:
            created = accounts.create_account(
                session, name=name, country=country, now=SystemClock().now()
            )
            session.commit()
    finally:
        engine.dispose()
    typer.echo(json.dumps({"id": created.account.id, "secret_key": created.secret_key}))


@accounts_app.command("rotate-key")
def accounts_rotate_key(
    account: Annotated[str, typer.Option(help="acct_… id")],
    overlap_seconds: Annotated[
        int | None, typer.Option(help="How long current keys keep working (default 24 h)")
    ] = None,
) -> None:
    """Issue a new secret key; current keys expire after the overlap. Prints the new key."""
    from invoicetrail.accounts import service as accounts
    from invoicetrail.core.clock import SystemClock
    from invoicetrail.core.context import Ctx
    from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
    from invoicetrail.core.errors import ApiError
    from invoicetrail.core.ids import new_id

    settings = _settings()
    _require_schema(settings)
    engine = make_engine(settings)
    try:
        with write_transaction(make_sessionmaker(engine)) as session:
            try:
                accounts.get_account(session, account)
            except ApiError as exc:
                typer.echo(exc.message, err=True)
                raise typer.Exit(code=1) from None
            ctx = Ctx(
                session=session,
                account_id=account,
                request_id=new_id("req"),
                now=SystemClock().now(),
                settings=settings,
                actor="cli",
            )
            rotated = accounts.rotate_keys(ctx, overlap_seconds)
            session.commit()
    finally:
        engine.dispose()
    typer.echo(json.dumps({"id": account, "secret_key": rotated.issued.secret_key}))


@app.command()
def demo(
    if_empty: Annotated[
        bool,
        typer.Option(
            "--if-empty",
            help="Load demo data only into an empty database; otherwise print a fresh key "
            "for the existing demo account",
        ),
    ] = False,
) -> None:
    """Create a new demo account with data in every state; prints its sk_… key."""
    from invoicetrail import demo as demo_data

    _log_to_stderr()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = _settings()
    _require_schema(settings)
    if if_empty and not demo_data.database_is_empty(settings):
        existing_key = demo_data.key_for_existing_demo(settings)
        if existing_key is not None:
            typer.echo(existing_key)
            return
    typer.echo(demo_data.create_demo_account(settings))


@app.command()
def trace(
    invoice: Annotated[str, typer.Argument(help="in_… id")],
    account: Annotated[
        str | None, typer.Option(help="acct_… id (default: the database's only account)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print GET /v1/invoices/{id}/trace's JSON")
    ] = False,
) -> None:
    """One invoice's whole chain (requests, provider events, payments, journal entries,
    export rows, exception items, events) as a timeline, one line per item in time order."""
    from invoicetrail.trace import service as traces
    from invoicetrail.trace.schemas import headline, timeline_line

    with cli_control.account_ctx(account, write=False) as ctx:
        built = traces.build(ctx, invoice)
    if as_json:
        typer.echo(built.out.model_dump_json(indent=2))
        return
    typer.echo(headline(built.out.invoice))
    for step in built.timeline():
        typer.echo(timeline_line(step.at, step.item))


def main() -> None:
    app()


cli_control.register(app)
app.add_typer(einvoice_app, name="einvoice")


if __name__ == "__main__":
    main()
