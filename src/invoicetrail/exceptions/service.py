"""The exception queue: raised in the transaction that records the cause; never dropped."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import NotFound
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.events import service as events
from invoicetrail.exceptions.models import ExceptionItem
from invoicetrail.exceptions.schemas import REF_NAMES, ExceptionItemOut

OPEN, SNOOZED, RESOLVED = "open", "snoozed", "resolved"

# Default owner (a role) and how long the owner has, per kind; ownership config overrides later.
DEFAULT_OWNERS: dict[str, str] = {
    "unmatched_transfer": "accounts_receivable",
    "amount_mismatch": "accounts_receivable",
    "stale_event": "payment_operations",
    "contradictory_event": "payment_operations",
    "duplicate_payment_reference": "payment_operations",
    "payment_without_invoice": "accounts_receivable",
    "payment_for_closed_invoice": "accounts_receivable",
}
DEFAULT_DUE = timedelta(hours=24)


def _dedupe_key(kind: str, refs: dict[str, Any]) -> str:
    return kind + ":" + json.dumps({k: refs[k] for k in sorted(refs) if refs[k]}, sort_keys=True)


def raise_item(
    ctx: Ctx,
    kind: str,
    *,
    refs: dict[str, str | None],
    next_action: str,
    detail: dict[str, Any] | None = None,
    due_in: timedelta = DEFAULT_DUE,
) -> ExceptionItem:
    """At most one open item per (kind, refs): raising again adds history to the open one."""
    full_refs: dict[str, Any] = {name: None for name in REF_NAMES} | refs
    key = _dedupe_key(kind, full_refs)
    existing = ctx.session.execute(
        select(ExceptionItem).where(
            ExceptionItem.account_id == ctx.account_id,
            ExceptionItem.dedupe_key == key,
            ExceptionItem.status.in_((OPEN, SNOOZED)),
        )
    ).scalar_one_or_none()
    entry: dict[str, Any] = {
        "at": iso_instant(ctx.now),
        "actor": ctx.actor,
        "request_id": ctx.request_id,
    }
    if existing is not None:
        existing.history = [*existing.history, {**entry, "action": "updated", "note": next_action}]
        existing.detail = {**existing.detail, **(detail or {})}
        existing.updated_at = ctx.now
        ctx.session.flush()
        return existing
    owner = DEFAULT_OWNERS.get(kind, "finance_operations")
    item = ExceptionItem(
        id=new_id("exc"),
        account_id=ctx.account_id,
        kind=kind,
        status=OPEN,
        owner=owner,
        next_action=next_action,
        due_at=ctx.now + due_in,
        snoozed_until=None,
        refs=full_refs,
        invoice_id=full_refs.get("invoice"),
        dedupe_key=key,
        detail=detail or {},
        history=[{**entry, "action": "created", "owner": owner, "note": next_action}],
        created_at=ctx.now,
        updated_at=ctx.now,
        request_id=ctx.request_id,
    )
    ctx.session.add(item)
    ctx.session.flush()
    events.record(ctx, "exception_item.created", ExceptionItemOut.of(item))
    return item


def resolve_matching(ctx: Ctx, *, refs: dict[str, str], note: str) -> int:
    """Resolves every open item whose refs include these: the cause was fixed."""
    resolved = 0
    for item in ctx.session.execute(
        select(ExceptionItem).where(
            ExceptionItem.account_id == ctx.account_id,
            ExceptionItem.status.in_((OPEN, SNOOZED)),
        )
    ).scalars():
        if all(item.refs.get(name) == value for name, value in refs.items()):
            item.status = RESOLVED
            item.history = [
                *item.history,
                {
                    "at": iso_instant(ctx.now),
                    "action": "resolved",
                    "actor": ctx.actor,
                    "request_id": ctx.request_id,
                    "note": note,
                },
            ]
            item.updated_at = ctx.now
            resolved += 1
    ctx.session.flush()
    return resolved


def count_open_before(ctx: Ctx, before: datetime) -> int:
    return int(
        ctx.session.execute(
            select(func.count())
            .select_from(ExceptionItem)
            .where(
                ExceptionItem.account_id == ctx.account_id,
                ExceptionItem.status.in_((OPEN, SNOOZED)),
                ExceptionItem.created_at < before,
            )
        ).scalar_one()
    )


def get(ctx: Ctx, item_id: str) -> ExceptionItem:
    item = ctx.session.execute(
        select(ExceptionItem).where(
            ExceptionItem.id == item_id, ExceptionItem.account_id == ctx.account_id
        )
    ).scalar_one_or_none()
    if item is None:
        raise NotFound("exception_item", item_id)
    return item


def list_items(
    ctx: Ctx, page: Page, *, status: str | None, kind: str | None, invoice_id: str | None
) -> tuple[list[ExceptionItem], bool]:
    filters = []
    if status is not None:
        filters.append(ExceptionItem.status == status)
    if kind is not None:
        filters.append(ExceptionItem.kind == kind)
    if invoice_id is not None:
        filters.append(ExceptionItem.invoice_id == invoice_id)
    return list_page(ctx, ExceptionItem, page, *filters, object_name="exception_item")
