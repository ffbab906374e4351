"""Dunning: per-account reminder schedule for open `send_invoice` invoices, and the optional
automatic write-off (`mark_uncollectible`) some days after the due date.

Days are UTC calendar days of the injected clock. On each pass, an invoice gets the reminder
of the latest offset whose day has come (`due_date + offset <= today`) if no reminder of that
or a later offset exists yet: a missed day is skipped, never sent late in a burst.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, Field, StrictBool, StrictInt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from invoicetrail.core.clock import Clock, iso_instant
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import read_session, write_transaction
from invoicetrail.core.fields import Body
from invoicetrail.core.ids import new_id
from invoicetrail.invoices import email as invoice_email
from invoicetrail.invoices import service as invoices
from invoicetrail.invoices.models import DunningSettings, Invoice, InvoiceEmail

log = logging.getLogger("invoicetrail.dunning")

DEFAULT_ENABLED: Final = True
DEFAULT_OFFSETS_DAYS: Final = (-3, 0, 7, 14)
OFFSET_DAYS_MIN: Final = -60
OFFSET_DAYS_MAX: Final = 365
OFFSETS_MAX: Final = 10
UNCOLLECTIBLE_AFTER_DAYS_MAX: Final = 3650
SCAN_BATCH_SIZE: Final = 500


# --- settings API --------------------------------------------------------------------------


def _unique(values: list[int]) -> list[int]:
    if len(set(values)) != len(values):
        raise ValueError("offsets must be unique")
    return sorted(values)


OffsetDays = Annotated[StrictInt, Field(ge=OFFSET_DAYS_MIN, le=OFFSET_DAYS_MAX)]


class DunningSettingsIn(Body):
    enabled: StrictBool
    reminder_offsets_days: Annotated[
        list[OffsetDays], Field(max_length=OFFSETS_MAX), AfterValidator(_unique)
    ]
    mark_uncollectible_after_days: (
        Annotated[StrictInt, Field(ge=1, le=UNCOLLECTIBLE_AFTER_DAYS_MAX)] | None
    ) = None


class DunningSettingsOut(BaseModel):
    object: str = "dunning_settings"
    enabled: bool
    reminder_offsets_days: list[int]
    mark_uncollectible_after_days: int | None
    updated: str | None


@dataclass(frozen=True)
class Schedule:
    enabled: bool
    offsets_days: tuple[int, ...]
    mark_uncollectible_after_days: int | None


DEFAULT_SCHEDULE: Final = Schedule(DEFAULT_ENABLED, DEFAULT_OFFSETS_DAYS, None)


def _schedule(row: DunningSettings | None) -> Schedule:
    if row is None:
        return DEFAULT_SCHEDULE
    return Schedule(
        row.enabled, tuple(sorted(row.reminder_offsets_days)), row.mark_uncollectible_after_days
    )


def settings_out(ctx: Ctx) -> DunningSettingsOut:
    row = ctx.session.get(DunningSettings, ctx.account_id)
    schedule = _schedule(row)
    return DunningSettingsOut(
        enabled=schedule.enabled,
        reminder_offsets_days=list(schedule.offsets_days),
        mark_uncollectible_after_days=schedule.mark_uncollectible_after_days,
        updated=iso_instant(row.updated_at) if row is not None else None,
    )


def put_settings(ctx: Ctx, body: DunningSettingsIn) -> DunningSettingsOut:
    row = ctx.session.get(DunningSettings, ctx.account_id, with_for_update=True)
    if row is None:
        row = DunningSettings(account_id=ctx.account_id)
        ctx.session.add(row)
    row.enabled = body.enabled
    row.reminder_offsets_days = list(body.reminder_offsets_days)
    row.mark_uncollectible_after_days = body.mark_uncollectible_after_days
    row.updated_at = ctx.now
    row.request_id = ctx.request_id
    ctx.session.flush()
    return settings_out(ctx)


# --- the worker job ------------------------------------------------------------------------


def reminder_offset_due(
    offsets_days: tuple[int, ...], due_date: date, today: date, queued_offsets: set[int]
) -> int | None:
    """The latest offset whose day has come, unless it (or a later one) was already queued."""
    # Days since due, not due + offset: a due date in year 1 must not overflow the calendar.
    overdue_days = (today - due_date).days
    come = [offset for offset in offsets_days if offset <= overdue_days]
    if not come:
        return None
    latest = max(come)
    if queued_offsets and max(queued_offsets) >= latest:
        return None
    return latest


@dataclass(frozen=True)
class _Action:
    account_id: str
    invoice_id: str
    offset_days: int | None  # a reminder to queue, or None: mark uncollectible


def _queued_offsets(session: Session, invoice_ids: list[str]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    rows = session.execute(
        select(InvoiceEmail.invoice_id, InvoiceEmail.purpose).where(
            InvoiceEmail.invoice_id.in_(invoice_ids),
            InvoiceEmail.purpose.like(invoice_email.REMINDER_PREFIX + "%"),
        )
    )
    for invoice_id, purpose in rows:
        offset = purpose.removeprefix(invoice_email.REMINDER_PREFIX)
        found.setdefault(invoice_id, set()).add(int(offset))
    return found


def _plan(session: Session, today: date, with_reminders: bool) -> list[_Action]:
    """Read-only: what is due today across accounts, in invoice order."""
    actions: list[_Action] = []
    schedules: dict[str, Schedule] = {}
    after_seq = 0
    while True:
        batch = list(
            session.execute(
                select(
                    Invoice.seq,
                    Invoice.id,
                    Invoice.account_id,
                    Invoice.due_date,
                    Invoice.delivered_at,
                )
                .where(
                    Invoice.status == "open",
                    Invoice.collection_method == "send_invoice",
                    Invoice.due_date.is_not(None),
                    Invoice.due_date <= today - timedelta(days=OFFSET_DAYS_MIN),
                    Invoice.seq > after_seq,
                )
                .order_by(Invoice.seq)
                .limit(SCAN_BATCH_SIZE)
            )
        )
        if not batch:
            return actions
        after_seq = batch[-1][0]
        for account_id in {row[2] for row in batch} - schedules.keys():
            schedules[account_id] = _schedule(session.get(DunningSettings, account_id))
        queued = _queued_offsets(session, [row[1] for row in batch]) if with_reminders else {}
        for _seq, invoice_id, account_id, due_date, delivered_at in batch:
            schedule = schedules[account_id]
            if not schedule.enabled or due_date is None:
                continue
            after = schedule.mark_uncollectible_after_days
            if after is not None and after <= (today - due_date).days:
                actions.append(_Action(account_id, invoice_id, None))
                continue
            # Never remind of an invoice the customer has not received.
            if with_reminders and delivered_at is not None:
                offset = reminder_offset_due(
                    schedule.offsets_days, due_date, today, queued.get(invoice_id, set())
                )
                if offset is not None:
                    actions.append(_Action(account_id, invoice_id, offset))


def _apply(ctx: Ctx, action: _Action, today: date) -> bool:
    """Re-checks under the invoice's row lock; False when there was nothing to do after all."""
    invoice = invoices.find_for_update(ctx, action.invoice_id)
    if invoice is None or invoice.status != "open" or invoice.due_date is None:
        return False
    if action.offset_days is None:
        invoices.mark_uncollectible(ctx, invoice.id)
        return True
    if invoice.delivered_at is None:
        return False
    # The plan was read outside this transaction: decide again from what is locked now.
    existing = _queued_offsets(ctx.session, [invoice.id]).get(invoice.id, set())
    schedule = _schedule(ctx.session.get(DunningSettings, ctx.account_id))
    offset = reminder_offset_due(schedule.offsets_days, invoice.due_date, today, existing)
    address = invoice_email.customer_email(ctx, invoice)
    if offset is None or not schedule.enabled or address is None:
        return False
    queued = invoice_email.queue(ctx, invoice, invoice_email.reminder_purpose(offset), address)
    return queued is not None


def queue_due_reminders(sessions: sessionmaker[Session], clock: Clock, settings: Settings) -> int:
    """Worker: queues today's reminders (SMTP configured only) and marks invoices uncollectible
    past the account's limit; returns reminders queued + invoices marked."""
    today = clock.now().date()
    with_reminders = True  # by SMTP, or into the mail directory when none is configured
    with read_session(sessions) as session:
        actions = _plan(session, today, with_reminders)
    done = 0
    for action in actions:
        try:
            with write_transaction(sessions) as session:
                ctx = Ctx(
                    session, action.account_id, new_id("req"), clock.now(), settings, "worker"
                )
                if _apply(ctx, action, today):
                    session.commit()
                    done += 1
        except IntegrityError:
            # Another worker queued the same reminder first: it goes out once either way.
            log.info("reminder for %s already queued by another worker", action.invoice_id)
    return done
