"""Console pages: the exception queue — filter, open an item, assign, snooze, resolve.

Every action is the API's write (`/v1/exception_items/{id}/…`: same body model, same
command, the form's idempotency key), so it lands in the item's history with the signed-in
key as actor and the request id, and a resubmitted form is a replay, never a second action.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from invoicetrail.console.web import (
    Page,
    WriteOutcome,
    action,
    api_write,
    page,
    redirect,
)
from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import NotFound, ValidationFailed
from invoicetrail.core.http import Page as ListPage
from invoicetrail.exceptions import service
from invoicetrail.exceptions.models import ExceptionItem
from invoicetrail.exceptions.schemas import (
    REF_NAMES,
    ExceptionAssign,
    ExceptionItemOut,
    ExceptionResolve,
    ExceptionSnooze,
)

# The area routers are included by `console/routes.py`, whose router already carries the
# `/console` prefix: these paths are relative to it.
router = APIRouter(include_in_schema=False)

ITEMS_PER_PAGE = 25
STATUSES = (service.OPEN, service.SNOOZED, service.RESOLVED)
ALL_STATUSES = "all"
SNOOZE_HOURS_DEFAULT = 24
SNOOZE_HOURS_MAX = 24 * 90
ID_LENGTH_MAX = 40
QUEUE = "/console/exceptions"


def _item_url(item_id: str) -> str:
    return f"{QUEUE}/{item_id}"


def _checked_id(item_id: str) -> str:
    """An id no item can have (too long, or with U+0000, which PostgreSQL text cannot hold)
    is simply not found, never a driver error."""
    if len(item_id) > ID_LENGTH_MAX or "\x00" in item_id:
        raise NotFound("exception_item", item_id[:ID_LENGTH_MAX])
    return item_id


def _is_overdue(item: ExceptionItem, now: datetime) -> bool:
    return item.status == service.OPEN and item.due_at < now


# --- the queue ----------------------------------------------------------------------------


def _filters(request: Request) -> dict[str, str]:
    """The queue's filters as given (status defaults to open), for the form and the pager."""
    query = request.query_params
    status = query.get("status") or service.OPEN
    if status not in (*STATUSES, ALL_STATUSES):
        raise ValidationFailed(
            f"status must be one of {', '.join((*STATUSES, ALL_STATUSES))}", param="status"
        )
    return {
        "status": status,
        "kind": (query.get("kind") or "").strip()[:64],
        "owner": (query.get("owner") or "").strip()[:256],
        "overdue": "1" if query.get("overdue") in ("1", "true", "on") else "",
    }


def _queue(current: Page) -> Response:
    ctx = current.ctx
    chosen = _filters(current.request)
    starting_after = current.request.query_params.get("starting_after") or None
    if starting_after is not None:
        starting_after = _checked_id(starting_after)
    items, has_more = service.list_items(
        ctx,
        ListPage(limit=ITEMS_PER_PAGE, starting_after=starting_after),
        status=None if chosen["status"] == ALL_STATUSES else chosen["status"],
        kind=chosen["kind"] or None,
        invoice_id=None,
        owner=chosen["owner"] or None,
        overdue=True if chosen["overdue"] else None,
    )
    kinds, owners = service.kinds_and_owners(ctx)
    if chosen["kind"] and chosen["kind"] not in kinds:
        kinds.append(chosen["kind"])
    query = urlencode({name: value for name, value in chosen.items() if value})
    rows = [
        {
            "id": item.id,
            "kind": item.kind,
            "status": item.status,
            "owner": item.owner,
            "due_at": iso_instant(item.due_at),
            "overdue": _is_overdue(item, ctx.now),
            "invoice": item.invoice_id,
        }
        for item in items
    ]
    return current.render(
        "exceptions.html.j2",
        title="Exceptions",
        rows=rows,
        has_more=has_more,
        filters=chosen,
        statuses=STATUSES,
        kinds=kinds,
        owners=owners,
        base_url=f"{QUEUE}?{query}" if query else QUEUE,
        paged=starting_after is not None,
    )


@router.get("/exceptions")
def queue_page(request: Request) -> Response:
    return page(request, _queue)


# --- one item -----------------------------------------------------------------------------


def _item_page(
    current: Page,
    item_id: str,
    *,
    error: str | None = None,
    status_code: int = 200,
    retry: dict[str, dict[str, str]] | None = None,
) -> Response:
    ctx = current.ctx
    item = service.get(ctx, _checked_id(item_id))
    out = ExceptionItemOut.of(item)
    refs = [(name, out.refs.get(name)) for name in REF_NAMES]
    refs += [(name, value) for name, value in out.refs.items() if name not in REF_NAMES]
    return current.render(
        "exception.html.j2",
        status_code=status_code,
        title=f"Exception {item.id}",
        item=out,
        refs=refs,
        detail=sorted(out.detail.items()),
        history=out.history,
        overdue=_is_overdue(item, ctx.now),
        active=item.status in service.ACTIVE,
        error=error,
        # The snooze form counts its hours from when the page was shown, so a resubmitted
        # form sends the same body and is a replay of the first.
        snooze_from=iso_instant(ctx.now),
        snooze_hours_default=SNOOZE_HOURS_DEFAULT,
        snooze_hours_max=SNOOZE_HOURS_MAX,
        # What was typed into a refused form (by form name), so it is not lost.
        retry=retry or {},
    )


@router.get("/exceptions/{item_id}")
def item_page(request: Request, item_id: str) -> Response:
    return page(request, lambda current: _item_page(current, item_id))


def _refused(
    current: Page,
    item_id: str,
    form_name: str,
    form: dict[str, str],
    message: str | None,
    status_code: int,
) -> Response:
    """The item again, saying why with the API's status and keeping what was typed (an item
    the account cannot see stays a 404)."""
    return page(
        current.request,
        lambda again: _item_page(
            again,
            item_id,
            error=message or "The action was refused.",
            status_code=status_code,
            retry={form_name: form},
        ),
    )


def _after_write(
    current: Page,
    item_id: str,
    form_name: str,
    form: dict[str, str],
    outcome: WriteOutcome,
    done: str,
) -> Response:
    """Success → back to the item (303) with a notice; refusal → the item showing why."""
    if outcome.ok:
        return redirect(_item_url(item_id), done)
    return _refused(current, item_id, form_name, form, outcome.message, outcome.status_code)


def _optional(form: dict[str, str], name: str) -> str | None:
    value = form.get(name, "").strip()
    return value or None


@router.post("/exceptions/{item_id}/assign")
async def assign(request: Request, item_id: str) -> Response:
    def command(ctx: Ctx, body: ExceptionAssign) -> ExceptionItemOut:
        return ExceptionItemOut.of(service.assign(ctx, item_id, body.owner, body.note))

    def do(current: Page, form: dict[str, str]) -> Response:
        owner = form.get("owner", "").strip()
        payload: dict[str, Any] = {"owner": owner}
        if note := _optional(form, "note"):
            payload["note"] = note
        outcome = api_write(
            current,
            form,
            path=f"/v1/exception_items/{item_id}/assign",
            payload=payload,
            body_model=ExceptionAssign,
            command=command,
            object_name="exception_item",
            action="assign an exception item",
        )
        return _after_write(current, item_id, "assign", form, outcome, f"Assigned to {owner}.")

    return await action(request, do)


def _snooze_until(form: dict[str, str]) -> tuple[str | None, str | None]:
    """(until, error): the page's instant plus the hours asked for."""
    try:
        hours = int(form.get("hours", "").strip())
    except ValueError:
        return None, "Snooze for a whole number of hours."
    if not 1 <= hours <= SNOOZE_HOURS_MAX:
        return None, f"Snooze for 1 to {SNOOZE_HOURS_MAX} hours."
    try:
        start = datetime.fromisoformat(form.get("snooze_from", ""))
    except ValueError:
        return None, "The snooze form is incomplete; reload the page and try again."
    if start.tzinfo is None:
        return None, "The snooze form is incomplete; reload the page and try again."
    return iso_instant(start + timedelta(hours=hours)), None


@router.post("/exceptions/{item_id}/snooze")
async def snooze(request: Request, item_id: str) -> Response:
    def command(ctx: Ctx, body: ExceptionSnooze) -> ExceptionItemOut:
        return ExceptionItemOut.of(service.snooze(ctx, item_id, body.until, body.note))

    def do(current: Page, form: dict[str, str]) -> Response:
        until, problem = _snooze_until(form)
        if until is None:
            return _refused(current, item_id, "snooze", form, problem, 400)
        payload: dict[str, Any] = {"until": until}
        if note := _optional(form, "note"):
            payload["note"] = note
        outcome = api_write(
            current,
            form,
            path=f"/v1/exception_items/{item_id}/snooze",
            payload=payload,
            body_model=ExceptionSnooze,
            command=command,
            object_name="exception_item",
            action="snooze an exception item",
        )
        return _after_write(current, item_id, "snooze", form, outcome, f"Snoozed until {until}.")

    return await action(request, do)


@router.post("/exceptions/{item_id}/resolve")
async def resolve(request: Request, item_id: str) -> Response:
    def command(ctx: Ctx, body: ExceptionResolve) -> ExceptionItemOut:
        return ExceptionItemOut.of(service.resolve(ctx, item_id, body.note))

    def do(current: Page, form: dict[str, str]) -> Response:
        # A blank note goes as none: the service refuses it (400, param note) like the API.
        note = _optional(form, "note")
        outcome = api_write(
            current,
            form,
            path=f"/v1/exception_items/{item_id}/resolve",
            payload={} if note is None else {"note": note},
            body_model=ExceptionResolve,
            command=command,
            object_name="exception_item",
            action="resolve an exception item",
        )
        return _after_write(current, item_id, "resolve", form, outcome, "Resolved.")

    return await action(request, do)
