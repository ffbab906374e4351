"""The exception queue: raised in the transaction that records the cause; never dropped."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.orm import Session

from invoicetrail.accounts import control
from invoicetrail.core.clock import iso_instant
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import InvalidTransition, NotFound, ParameterMissing, ValidationFailed
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.events import service as events
from invoicetrail.exceptions.models import ExceptionItem
from invoicetrail.exceptions.schemas import REF_NAMES, ExceptionItemOut

OPEN, SNOOZED, RESOLVED = "open", "snoozed", "resolved"
ACTIVE = (OPEN, SNOOZED)

# The area of the chain each kind belongs to: its owner comes from the ownership config.
KIND_AREAS: dict[str, str] = {
    "unmatched_transfer": "payment_evidence",
    "amount_mismatch": "payment_evidence",
    "stale_event": "payment_evidence",
    "contradictory_event": "payment_evidence",
    "duplicate_payment_reference": "payment_evidence",
    "payment_without_invoice": "payment_evidence",
    "payment_for_closed_invoice": "payment_evidence",
    "unprocessable_event": "payment_evidence",
    "ach_processing_overdue": "payment_evidence",
    "missing_receipt_entry": "journal_posting",
    "receipt_without_payment": "journal_posting",
    "export_failed": "erp_export",
    "export_not_synced": "erp_export",
    "void_not_in_erp": "erp_export",
    "not_delivered": "invoice_state",
    "dispute_opened": "disputes",
    "webhook_delivery_failed": "exception_queue",
    # E-invoicing kinds route by the document's market (area compliance_markets.<country>).
    "einvoice_needs_correction": "compliance_markets",
    "einvoice_submission_delayed": "compliance_markets",
}
# The role that answers while no owner is configured for the area.
DEFAULT_OWNERS: dict[str, str] = {
    "invoice_state": "billing_operations",
    "payment_evidence": "accounts_receivable",
    "journal_posting": "accounting",
    "erp_export": "accounting",
    "exception_queue": "finance_operations",
    "disputes": "payment_operations",
    "compliance_markets": "compliance",
}
DEFAULT_DUE = timedelta(hours=24)
IN_CHUNK = 500


def _dedupe_key(kind: str, refs: dict[str, Any]) -> str:
    return kind + ":" + json.dumps({k: refs[k] for k in sorted(refs) if refs[k]}, sort_keys=True)


def owner_for_kind(ctx: Ctx, kind: str, area: str | None = None) -> str:
    """The configured owner of the kind's area, else the queue's owner, else a default role."""
    area = area or KIND_AREAS.get(kind, "exception_queue")
    return (
        control.owner_for(ctx, area)
        or control.owner_for(ctx, "exception_queue")
        or DEFAULT_OWNERS.get(area.split(".", 1)[0], "finance_operations")
    )


def _entry(ctx: Ctx, action: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "at": iso_instant(ctx.now),
        "action": action,
        "actor": ctx.actor,
        "request_id": ctx.request_id,
    }
    entry.update({k: v for k, v in extra.items() if v is not None})
    return entry


def _append(ctx: Ctx, item: ExceptionItem, entry: dict[str, Any]) -> None:
    item.history = [*item.history, entry]
    item.updated_at = ctx.now


@dataclass(frozen=True)
class Finding:
    """A cause found by a check: becomes (or keeps open) exactly one item."""

    kind: str
    refs: dict[str, str | None]
    next_action: str
    detail: dict[str, Any] = field(default_factory=dict)
    area: str | None = None

    def full_refs(self) -> dict[str, Any]:
        return {name: None for name in REF_NAMES} | self.refs

    def dedupe_key(self) -> str:
        return _dedupe_key(self.kind, self.full_refs())


def _new_item(
    ctx: Ctx,
    finding: Finding,
    *,
    due_in: timedelta,
    check_name: str | None,
    owners: dict[tuple[str, str | None], str] | None = None,
) -> ExceptionItem:
    refs = finding.full_refs()
    owners = {} if owners is None else owners
    owner_key = (finding.kind, finding.area)
    if owner_key not in owners:
        owners[owner_key] = owner_for_kind(ctx, finding.kind, finding.area)
    owner = owners[owner_key]
    item = ExceptionItem(
        id=new_id("exc"),
        account_id=ctx.account_id,
        kind=finding.kind,
        status=OPEN,
        owner=owner,
        next_action=finding.next_action,
        due_at=ctx.now + due_in,
        snoozed_until=None,
        refs=refs,
        invoice_id=refs.get("invoice"),
        dedupe_key=finding.dedupe_key(),
        detail=finding.detail,
        history=[_entry(ctx, "created", owner=owner, note=finding.next_action)],
        check_name=check_name,
        created_at=ctx.now,
        updated_at=ctx.now,
        request_id=ctx.request_id,
    )
    ctx.session.add(item)
    return item


def raise_item(
    ctx: Ctx,
    kind: str,
    *,
    refs: dict[str, str | None],
    next_action: str,
    detail: dict[str, Any] | None = None,
    due_in: timedelta = DEFAULT_DUE,
    area: str | None = None,
) -> ExceptionItem:
    """At most one open item per (kind, refs): raising again adds history to the open one."""
    finding = Finding(kind, refs, next_action, detail or {}, area)
    # `first()`, not "one": should two open items for one cause ever exist, the cause still
    # gets its history line instead of the event that raised it failing.
    existing = (
        ctx.session.execute(
            select(ExceptionItem)
            .where(
                ExceptionItem.account_id == ctx.account_id,
                ExceptionItem.dedupe_key == finding.dedupe_key(),
                ExceptionItem.status.in_(ACTIVE),
            )
            .order_by(ExceptionItem.seq)
        )
        .scalars()
        .first()
    )
    if existing is not None:
        _append(ctx, existing, _entry(ctx, "updated", note=next_action))
        existing.detail = {**existing.detail, **(detail or {})}
        ctx.session.flush()
        return existing
    item = _new_item(ctx, finding, due_in=due_in, check_name=None)
    ctx.session.flush()
    events.record(ctx, "exception_item.created", ExceptionItemOut.of(item))
    return item


def _matching(ctx: Ctx, refs: dict[str, str], kind: str | None) -> list[ExceptionItem]:
    filters = [ExceptionItem.account_id == ctx.account_id, ExceptionItem.status.in_(ACTIVE)]
    if kind is not None:
        filters.append(ExceptionItem.kind == kind)
    # The indexed column narrows the scan; the refs document decides.
    if "invoice" in refs:
        filters.append(ExceptionItem.invoice_id == refs["invoice"])
    return [
        item
        for item in ctx.session.execute(select(ExceptionItem).where(*filters)).scalars()
        if all(item.refs.get(name) == value for name, value in refs.items())
    ]


def resolve_matching(ctx: Ctx, *, refs: dict[str, str], note: str, kind: str | None = None) -> int:
    """Resolves every open item (of `kind`, if given) whose refs include these: fixed."""
    items = _matching(ctx, refs, kind)
    for item in items:
        _resolve(ctx, item, note)
    ctx.session.flush()
    return len(items)


def annotate_matching(
    ctx: Ctx, *, refs: dict[str, str], action: str, note: str, kind: str | None = None
) -> int:
    """Adds a history line to every open item whose refs include these (work in progress)."""
    items = _matching(ctx, refs, kind)
    for item in items:
        _append(ctx, item, _entry(ctx, action, note=note))
    ctx.session.flush()
    return len(items)


def _resolve(ctx: Ctx, item: ExceptionItem, note: str) -> None:
    item.status = RESOLVED
    item.snoozed_until = None
    _append(ctx, item, _entry(ctx, "resolved", note=note))
    events.record(ctx, "exception_item.resolved", ExceptionItemOut.of(item))


@dataclass
class SyncResult:
    items: dict[str, ExceptionItem]  # dedupe key → the item that carries the finding
    created: int = 0
    updated: int = 0
    reopened: int = 0
    resolved: int = 0


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


def sync_findings(
    ctx: Ctx,
    check_names: Sequence[str],
    findings: Mapping[str, Sequence[Finding]],
    *,
    note: str,
    resolve_missing: bool = True,
) -> SyncResult:
    """One item per finding; items the named checks own and no longer find are resolved.

    `findings` maps each check's name to what it found now. A finding with an open item adds a
    history line to it; one whose last item was resolved reopens it; the rest are created.
    """
    result = SyncResult(items={})
    wanted: dict[str, tuple[str, Finding]] = {}
    for check_name, found in findings.items():
        for finding in found:
            wanted.setdefault(finding.dedupe_key(), (check_name, finding))
    keys = list(wanted)
    active: dict[str, ExceptionItem] = {}
    for chunk in _chunks(keys):
        for item in ctx.session.execute(
            select(ExceptionItem).where(
                ExceptionItem.account_id == ctx.account_id,
                ExceptionItem.dedupe_key.in_(chunk),
                ExceptionItem.status.in_(ACTIVE),
            )
        ).scalars():
            active[item.dedupe_key] = item
    missing = [key for key in keys if key not in active]
    last_resolved: dict[str, ExceptionItem] = {}
    for chunk in _chunks(missing):
        for item in ctx.session.execute(
            select(ExceptionItem)
            .where(
                ExceptionItem.account_id == ctx.account_id,
                ExceptionItem.dedupe_key.in_(chunk),
                ExceptionItem.status == RESOLVED,
            )
            .order_by(ExceptionItem.seq)
        ).scalars():
            last_resolved[item.dedupe_key] = item
    created: list[ExceptionItem] = []
    owners: dict[tuple[str, str | None], str] = {}
    for key, (check_name, finding) in wanted.items():
        if key in active:
            item = active[key]
            _append(ctx, item, _entry(ctx, "updated", note=note))
            item.check_name = item.check_name or check_name
            result.updated += 1
        elif key in last_resolved:
            item = last_resolved[key]
            item.status = OPEN
            item.check_name = check_name
            item.next_action = finding.next_action
            item.due_at = max(item.due_at, ctx.now + DEFAULT_DUE)
            _append(ctx, item, _entry(ctx, "reopened", note=f"{note}: {finding.next_action}"))
            result.reopened += 1
        else:
            item = _new_item(ctx, finding, due_in=DEFAULT_DUE, check_name=check_name, owners=owners)
            created.append(item)
            result.created += 1
        result.items[key] = item
    stale = ctx.session.execute(
        select(ExceptionItem).where(
            ExceptionItem.account_id == ctx.account_id,
            ExceptionItem.check_name.in_(list(check_names)),
            ExceptionItem.status.in_(ACTIVE),
        )
    ).scalars()
    for item in stale if resolve_missing else ():
        if item.dedupe_key not in wanted:
            _resolve(ctx, item, f"{note}: the cause is no longer found")
            result.resolved += 1
    ctx.session.flush()
    for item in created:
        events.record(ctx, "exception_item.created", ExceptionItemOut.of(item))
    return result


def _active(ctx: Ctx, item_id: str, action: str) -> ExceptionItem:
    item = get(ctx, item_id, for_update=True)
    if item.status not in ACTIVE:
        raise InvalidTransition("exception_item", item.id, item.status, action, "open or snoozed")
    return item


def assign(ctx: Ctx, item_id: str, owner: str, note: str | None = None) -> ExceptionItem:
    item = _active(ctx, item_id, "assign")
    item.owner = owner
    _append(ctx, item, _entry(ctx, "assigned", owner=owner, note=note))
    ctx.session.flush()
    events.record(ctx, "exception_item.updated", ExceptionItemOut.of(item))
    return item


def snooze(ctx: Ctx, item_id: str, until: datetime, note: str | None) -> ExceptionItem:
    if until <= ctx.now:
        raise ValidationFailed(
            "until must be an instant in the future", param="until", object_name="exception_item"
        )
    item = _active(ctx, item_id, "snooze")
    item.status = SNOOZED
    item.snoozed_until = until
    # Snoozing defers the work, so the deadline moves with it.
    item.due_at = max(item.due_at, until)
    _append(ctx, item, _entry(ctx, "snoozed", note=note, until=iso_instant(until)))
    ctx.session.flush()
    events.record(ctx, "exception_item.updated", ExceptionItemOut.of(item))
    return item


def resolve(ctx: Ctx, item_id: str, note: str | None) -> ExceptionItem:
    if note is None or not note.strip():
        raise ParameterMissing(
            "resolving an exception item needs a note saying what was done",
            param="note",
            object_name="exception_item",
        )
    item = _active(ctx, item_id, "resolve")
    _resolve(ctx, item, note.strip())
    ctx.session.flush()
    return item


def wake_snoozed(session: Session, now: datetime, settings: Settings) -> int:
    """Snoozed items whose time has come are open again (worker)."""
    woken = 0
    for item in session.execute(
        select(ExceptionItem)
        .where(ExceptionItem.status == SNOOZED, ExceptionItem.snoozed_until <= now)
        .order_by(ExceptionItem.seq)
        .limit(1000)
        .with_for_update(skip_locked=True)
    ).scalars():
        ctx = Ctx(session, item.account_id, new_id("req"), now, settings, actor="worker")
        item.status = OPEN
        item.snoozed_until = None
        _append(ctx, item, _entry(ctx, "reopened", note="snooze ended"))
        events.record(ctx, "exception_item.updated", ExceptionItemOut.of(item))
        woken += 1
    session.flush()
    return woken


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


def count_overdue(ctx: Ctx) -> int:
    return int(
        ctx.session.execute(
            select(func.count())
            .select_from(ExceptionItem)
            .where(
                ExceptionItem.account_id == ctx.account_id,
                ExceptionItem.status == OPEN,
                ExceptionItem.due_at < ctx.now,
            )
        ).scalar_one()
    )


def get(ctx: Ctx, item_id: str, *, for_update: bool = False) -> ExceptionItem:
    query = select(ExceptionItem).where(
        ExceptionItem.id == item_id, ExceptionItem.account_id == ctx.account_id
    )
    if for_update:
        query = query.with_for_update()
    item = ctx.session.execute(query).scalar_one_or_none()
    if item is None:
        raise NotFound("exception_item", item_id)
    return item


def list_items(
    ctx: Ctx,
    page: Page,
    *,
    status: str | None,
    kind: str | None,
    invoice_id: str | None,
    owner: str | None = None,
    overdue: bool | None = None,
) -> tuple[list[ExceptionItem], bool]:
    filters: list[ColumnElement[bool]] = []
    if status is not None:
        filters.append(ExceptionItem.status == status)
    if kind is not None:
        filters.append(ExceptionItem.kind == kind)
    if invoice_id is not None:
        filters.append(ExceptionItem.invoice_id == invoice_id)
    if owner is not None:
        filters.append(ExceptionItem.owner == owner)
    if overdue is True:
        filters += [ExceptionItem.status == OPEN, ExceptionItem.due_at < ctx.now]
    elif overdue is False:
        filters.append(or_(ExceptionItem.status != OPEN, ExceptionItem.due_at >= ctx.now))
    return list_page(ctx, ExceptionItem, page, *filters, object_name="exception_item")


def open_by_owner(ctx: Ctx) -> list[tuple[str, int, int]]:
    """(owner, open items, of which past due) — the overview's one GROUP BY."""
    overdue = case((ExceptionItem.due_at < ctx.now, 1), else_=0)
    rows = ctx.session.execute(
        select(ExceptionItem.owner, func.count(), func.coalesce(func.sum(overdue), 0))
        .where(ExceptionItem.account_id == ctx.account_id, ExceptionItem.status == OPEN)
        .group_by(ExceptionItem.owner)
        .order_by(ExceptionItem.owner)
    ).all()
    return [(owner, int(count), int(late)) for owner, count, late in rows]


def kinds_and_owners(ctx: Ctx) -> tuple[list[str], list[str]]:
    """The distinct kinds and owners of the account's items (the queue's filter choices)."""
    account = ExceptionItem.account_id == ctx.account_id
    kinds = ctx.session.execute(
        select(ExceptionItem.kind).where(account).distinct().order_by(ExceptionItem.kind)
    ).scalars()
    owners = ctx.session.execute(
        select(ExceptionItem.owner).where(account).distinct().order_by(ExceptionItem.owner)
    ).scalars()
    return list(kinds), list(owners)
