"""`invoicetrail reconcile | golive-check | exceptions … | ownership … | gates …`.

Each command works through the same service functions as the API, in one transaction, with
actor `cli` and a fresh request id in the history it writes.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx

exceptions_app = typer.Typer(help="The exception queue.", no_args_is_help=True)
ownership_app = typer.Typer(help="Who owns each area of the chain.", no_args_is_help=True)
gates_app = typer.Typer(help="Launch gates (KYB, AML, tax forms…).", no_args_is_help=True)

AccountOption = Annotated[
    str | None, typer.Option(help="acct_… id (default: the database's only account)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code=code)


@contextmanager
def account_ctx(account: str | None, *, write: bool) -> Iterator[Ctx]:
    """A Ctx for one account: the write commits when the block ends without an error."""
    from invoicetrail.accounts.models import Account
    from invoicetrail.core.clock import SystemClock
    from invoicetrail.core.db import make_engine, make_sessionmaker, read_session
    from invoicetrail.core.db import write_transaction as write_tx
    from invoicetrail.core.errors import ApiError
    from invoicetrail.core.ids import new_id
    from invoicetrail.core.migrate import SchemaOutOfDate, require_current_schema

    settings = Settings()
    try:
        require_current_schema(settings)
    except SchemaOutOfDate as exc:
        raise _fail(str(exc)) from None
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    try:
        with write_tx(sessions) if write else read_session(sessions) as session:
            if account is None:
                found = list(session.execute(select(Account.id).limit(2)).scalars())
                if len(found) != 1:
                    raise _fail(
                        "several accounts: name one with --account acct_…"
                        if found
                        else "no accounts in this database",
                        code=2 if found else 1,
                    )
                account = found[0]
            elif session.execute(select(Account.id).where(Account.id == account)).first() is None:
                raise _fail(f"No such account: '{account}'")
            ctx = Ctx(session, account, new_id("req"), SystemClock().now(), settings, "cli")
            try:
                yield ctx
            except ApiError as exc:
                raise _fail(f"{exc.code}: {exc.message}") from None
            if write:
                session.commit()
    finally:
        engine.dispose()


def _echo_json(model: BaseModel) -> None:
    typer.echo(model.model_dump_json(indent=2))


def reconcile(
    account: AccountOption = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="YYYY-MM-DD (default: today)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Three-way match of invoices, payment evidence and the journal, plus export status."""
    from invoicetrail.reconciliation import service
    from invoicetrail.reconciliation.schemas import ReconciliationRunOut

    try:
        day = date.fromisoformat(as_of) if as_of else None
    except ValueError:
        raise _fail(f"--as-of {as_of!r} is not a date YYYY-MM-DD", code=2) from None
    show_bar = sys.stderr.isatty()
    with account_ctx(account, write=True) as ctx:
        if show_bar:
            with typer.progressbar(
                length=len(_check_names()), label="reconciling", file=sys.stderr
            ) as bar:
                run = service.run(ctx, day, trigger="cli", progress=lambda *_: bar.update(1))
        else:
            run = service.run(ctx, day, trigger="cli")
        out = ReconciliationRunOut.of(run)
    if as_json:
        _echo_json(out)
        return
    typer.echo(f"{out.id} as of {out.as_of}: {out.status}, {out.invoices_checked} invoices")
    for outcome, count in out.counts.items():
        typer.echo(f"  {outcome:<30} {count}")
    typer.echo(
        f"  items: {out.items['created']} created, {out.items['updated']} still open, "
        f"{out.items['resolved']} resolved"
    )


def _check_names() -> list[str]:
    from invoicetrail.reconciliation.checks import CHECKS

    return list(CHECKS)


def golive_check(account: AccountOption = None, as_json: JsonOption = False) -> None:
    """Prints every go-live check; exit 0 only when all pass."""
    from invoicetrail.reconciliation import golive

    with account_ctx(account, write=False) as ctx:
        results = golive.run_checks(ctx)
    ready = all(r.ok for r in results)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "object": "golive_check",
                    "ready": ready,
                    "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail} for r in results],
                },
                indent=2,
            )
        )
    else:
        for r in results:
            typer.echo(f"{'ok  ' if r.ok else 'FAIL'}  {r.name:<32} {r.detail}")
        typer.echo("ready" if ready else "NOT READY")
    if not ready:
        raise typer.Exit(code=1)


@exceptions_app.command("list")
def exceptions_list(
    account: AccountOption = None,
    status: Annotated[str | None, typer.Option(help="open | snoozed | resolved")] = None,
    kind: Annotated[str | None, typer.Option()] = None,
    owner: Annotated[str | None, typer.Option()] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only open items past due")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 100,
    as_json: JsonOption = False,
) -> None:
    """Exception items, oldest first."""
    from invoicetrail.core.http import Page
    from invoicetrail.exceptions import service
    from invoicetrail.exceptions.schemas import ExceptionItemOut

    if status not in (None, "open", "snoozed", "resolved"):
        raise _fail("--status must be open, snoozed or resolved", code=2)
    with account_ctx(account, write=False) as ctx:
        rows, _more = service.list_items(
            ctx,
            Page(limit=limit, starting_after=None),
            status=status,
            kind=kind,
            invoice_id=None,
            owner=owner,
            overdue=True if overdue else None,
        )
        items = [ExceptionItemOut.of(r) for r in rows]
    if as_json:
        typer.echo(json.dumps([i.model_dump() for i in items], indent=2))
        return
    for i in items:
        typer.echo(
            f"{i.id}  {i.status:<8} {i.kind:<28} owner={i.owner:<22} due={i.due_at}  "
            f"invoice={i.refs.get('invoice') or '-'}"
        )


def _item_command(
    account: str | None, action: Callable[[Ctx], BaseModel], as_json: bool, *, write: bool
) -> None:
    from invoicetrail.exceptions.schemas import ExceptionItemOut

    with account_ctx(account, write=write) as ctx:
        out = action(ctx)
    if as_json or not isinstance(out, ExceptionItemOut):
        _echo_json(out)
        return
    typer.echo(f"{out.id}  {out.kind}  {out.status}  owner={out.owner}  due={out.due_at}")
    typer.echo(f"  next action: {out.next_action}")
    typer.echo("  refs: " + ", ".join(f"{k}={v}" for k, v in out.refs.items() if v))
    for entry in out.history:
        extra = " ".join(f"{k}={entry[k]}" for k in ("owner", "until", "note") if entry.get(k))
        typer.echo(
            f"  {entry['at']}  {entry['action']:<9} by {entry['actor']} "
            f"({entry.get('request_id')}) {extra}"
        )


@exceptions_app.command("show")
def exceptions_show(item: str, account: AccountOption = None, as_json: JsonOption = False) -> None:
    """One item with its refs and history."""
    from invoicetrail.exceptions import service
    from invoicetrail.exceptions.schemas import ExceptionItemOut

    _item_command(
        account, lambda ctx: ExceptionItemOut.of(service.get(ctx, item)), as_json, write=False
    )


@exceptions_app.command("assign")
def exceptions_assign(
    item: str,
    owner: Annotated[str, typer.Option(help="The role or person who owns it now")],
    note: Annotated[str | None, typer.Option()] = None,
    account: AccountOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give an item to a new owner."""
    from invoicetrail.exceptions import service
    from invoicetrail.exceptions.schemas import ExceptionItemOut

    _item_command(
        account,
        lambda ctx: ExceptionItemOut.of(service.assign(ctx, item, owner, note)),
        as_json,
        write=True,
    )


@exceptions_app.command("snooze")
def exceptions_snooze(
    item: str,
    until: Annotated[str, typer.Option(help="ISO 8601 instant, e.g. 2026-12-01T09:00:00Z")],
    note: Annotated[str | None, typer.Option()] = None,
    account: AccountOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put an item aside until an instant; it reopens then."""
    from invoicetrail.exceptions import service
    from invoicetrail.exceptions.schemas import ExceptionItemOut, ExceptionSnooze

    try:
        body = ExceptionSnooze.model_validate({"until": until, "note": note})
    except ValidationError:
        raise _fail(f"--until {until!r} is not an ISO 8601 instant with a time zone", 2) from None
    _item_command(
        account,
        lambda ctx: ExceptionItemOut.of(service.snooze(ctx, item, body.until, body.note)),
        as_json,
        write=True,
    )


@exceptions_app.command("resolve")
def exceptions_resolve(
    item: str,
    note: Annotated[str, typer.Option(help="What was done (required)")],
    account: AccountOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close an item, saying what was done."""
    from invoicetrail.exceptions import service
    from invoicetrail.exceptions.schemas import ExceptionItemOut

    _item_command(
        account,
        lambda ctx: ExceptionItemOut.of(service.resolve(ctx, item, note)),
        as_json,
        write=True,
    )


@ownership_app.command("apply")
def ownership_apply(
    file: Annotated[Path, typer.Argument(help="TOML file with an [ownership] table")],
    account: AccountOption = None,
) -> None:
    """Set ownership from a file such as invoicetrail.toml (replaces the whole config)."""
    from invoicetrail.accounts import control
    from invoicetrail.accounts.routes import ownership_out
    from invoicetrail.accounts.schemas import OwnershipIn

    try:
        document: dict[str, Any] = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise _fail(f"cannot read {file}: {exc}", code=2) from None
    try:
        body = OwnershipIn.model_validate(document.get("ownership", {}))
    except ValidationError as exc:
        raise _fail(f"{file} [ownership]: {exc}", code=2) from None
    with account_ctx(account, write=True) as ctx:
        control.put_ownership(ctx, body)
        out = ownership_out(ctx)
    _echo_json(out)


@ownership_app.command("show")
def ownership_show(account: AccountOption = None) -> None:
    """The ownership config and what is still unassigned."""
    from invoicetrail.accounts.routes import ownership_out

    with account_ctx(account, write=False) as ctx:
        out = ownership_out(ctx)
    _echo_json(out)


@gates_app.command("list")
def gates_list(account: AccountOption = None) -> None:
    """Every launch gate the account's markets need, and its status."""
    from invoicetrail.accounts import control
    from invoicetrail.accounts.routes import gate_out

    with account_ctx(account, write=False) as ctx:
        gates = [gate_out(*g) for g in control.list_gates(ctx)]
    for g in gates:
        typer.echo(
            f"{g.name:<26} {g.status:<15} required={'yes' if g.required else 'no '} "
            f"owner={g.owner or '-'} evidence={g.evidence_reference or '-'}"
        )


@gates_app.command("set")
def gates_set(
    name: str,
    status: Annotated[str, typer.Option(help="pending | passed | failed | not_applicable")],
    evidence: Annotated[str | None, typer.Option(help="Evidence reference")] = None,
    owner: Annotated[str | None, typer.Option()] = None,
    note: Annotated[str | None, typer.Option()] = None,
    account: AccountOption = None,
) -> None:
    """Record a launch gate's status and the evidence behind it."""
    from invoicetrail.accounts import control
    from invoicetrail.accounts.routes import gate_out
    from invoicetrail.accounts.schemas import LaunchGateUpdate

    try:
        body = LaunchGateUpdate.model_validate(
            {"status": status, "evidence_reference": evidence, "owner": owner, "note": note}
        )
    except ValidationError as exc:
        raise _fail(str(exc), code=2) from None
    with account_ctx(account, write=True) as ctx:
        gate = control.update_gate(ctx, name, body)
        out = gate_out(name, name in control.required_gates(ctx), gate)
    _echo_json(out)


def register(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile)
    app.command("golive-check")(golive_check)
    app.add_typer(exceptions_app, name="exceptions")
    app.add_typer(ownership_app, name="ownership")
    app.add_typer(gates_app, name="gates")
