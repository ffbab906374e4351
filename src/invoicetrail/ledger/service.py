"""The journal: the only writer of entries, lines and periods. Entries are immutable."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import Conflict, NotFound, ValidationFailed, invariant
from invoicetrail.core.faults import crash_point
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.events import service as events
from invoicetrail.exceptions import service as exceptions
from invoicetrail.ledger import chart
from invoicetrail.ledger.models import JournalEntry, JournalLine, LedgerSettings, Period
from invoicetrail.ledger.rules import Entry, Line, normalized, to_cash_basis
from invoicetrail.ledger.schemas import (
    ArBalanceOut,
    ArBalanceRow,
    JournalEntryOut,
    TrialBalanceOut,
    TrialBalanceRow,
)

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def period_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def next_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:])
    return f"{year + 1:04d}-01" if month == 12 else f"{year:04d}-{month + 1:02d}"


def check_period(period: str, param: str = "period") -> str:
    if not _PERIOD.match(period):
        raise ValidationFailed(f"{param} must be a month YYYY-MM", param=param)
    return period


def _closed_periods_from(ctx: Ctx, period: str) -> set[str]:
    return set(
        ctx.session.execute(
            select(Period.period).where(
                Period.account_id == ctx.account_id,
                Period.status == "closed",
                Period.period >= period,
            )
        ).scalars()
    )


def open_period_for(ctx: Ctx, day: date) -> str:
    """The month of the date, or the first open month after it (late items keep their date)."""
    period = period_of(day)
    closed = _closed_periods_from(ctx, period)
    while period in closed:
        period = next_period(period)
    return period


def find(ctx: Ctx, business_key: str) -> JournalEntry | None:
    return ctx.session.execute(
        select(JournalEntry).where(
            JournalEntry.account_id == ctx.account_id, JournalEntry.business_key == business_key
        )
    ).scalar_one_or_none()


def settings_of(ctx: Ctx) -> LedgerSettings | None:
    return ctx.session.get(LedgerSettings, ctx.account_id)


def update_settings(
    ctx: Ctx, posting_policy: str | None, account_names: dict[str, str] | None
) -> LedgerSettings:
    row = settings_of(ctx)
    if row is None:
        row = LedgerSettings(
            account_id=ctx.account_id,
            posting_policy="accrual",
            account_names={},
            updated_at=ctx.now,
            request_id=ctx.request_id,
        )
        ctx.session.add(row)
    if posting_policy is not None and posting_policy != row.posting_policy:
        posted = ctx.session.execute(
            select(JournalEntry.id).where(JournalEntry.account_id == ctx.account_id).limit(1)
        ).first()
        if posted is not None:
            raise Conflict(
                "the posting policy can only change before the first posting",
                code="invalid_state_transition",
                param="posting_policy",
                object_name="ledger_settings",
            )
        row.posting_policy = posting_policy
    if account_names is not None:
        unknown = sorted(set(account_names) - set(chart.ROLES))
        if unknown:
            raise ValidationFailed(
                f"unknown account role {unknown[0]}; roles are {', '.join(sorted(chart.ROLES))}",
                param=f"accounts.{unknown[0]}",
                object_name="ledger_settings",
            )
        row.account_names = {**row.account_names, **account_names}
    row.updated_at = ctx.now
    row.request_id = ctx.request_id
    ctx.session.flush()
    return row


def post(ctx: Ctx, entry: Entry) -> JournalEntry | None:
    """Posts once per business key: a replay or duplicate event gets the existing entry.

    Under the cash policy an entry that moves no cash-basis account posts nothing (None)."""
    existing = find(ctx, entry.business_key)
    if existing is not None:
        return existing
    settings = settings_of(ctx)
    raw_lines = entry.lines
    if settings is not None and settings.posting_policy == "cash":
        raw_lines = to_cash_basis(raw_lines, entry.revenue_split)
        if not any(line.debit_minor or line.credit_minor for line in raw_lines):
            return None
    if settings is not None and settings.account_names:
        renamed = {chart.ROLES[role]: name for role, name in settings.account_names.items()}
        raw_lines = [
            Line(
                renamed.get(line.ledger_account, line.ledger_account),
                line.debit_minor,
                line.credit_minor,
            )
            for line in raw_lines
        ]
    lines = normalized(raw_lines)
    total_minor = sum(line.debit_minor for line in lines)
    invariant(total_minor == sum(line.credit_minor for line in lines), "entry balances")
    invariant(total_minor > 0, f"entry {entry.business_key} moves money")
    journal_entry = JournalEntry(
        id=new_id("je"),
        account_id=ctx.account_id,
        business_key=entry.business_key,
        entry_date=entry.entry_date,
        period=open_period_for(ctx, entry.entry_date),
        currency=entry.currency,
        debit_total_minor=total_minor,
        credit_total_minor=total_minor,
        description=entry.description,
        invoice_id=entry.invoice_id,
        payment_id=entry.payment_id,
        credit_note_id=entry.credit_note_id,
        customer_id=entry.customer_id,
        reverses=entry.reverses,
        created_at=ctx.now,
        request_id=ctx.request_id,
    )
    journal_entry.lines = [
        JournalLine(
            id=new_id("jl"),
            account_id=ctx.account_id,
            position=position,
            ledger_account=line.ledger_account,
            debit_minor=line.debit_minor,
            credit_minor=line.credit_minor,
            currency=entry.currency,
        )
        for position, line in enumerate(lines)
    ]
    ctx.session.add(journal_entry)
    ctx.session.flush()
    crash_point("posting_written")
    events.record(ctx, "journal_entry.created", JournalEntryOut.of(journal_entry))
    return journal_entry


def get(ctx: Ctx, entry_id: str) -> JournalEntry:
    entry = ctx.session.execute(
        select(JournalEntry)
        .where(JournalEntry.id == entry_id, JournalEntry.account_id == ctx.account_id)
        .options(selectinload(JournalEntry.lines))
    ).scalar_one_or_none()
    if entry is None:
        raise NotFound("journal_entry", entry_id)
    return entry


def list_entries(
    ctx: Ctx, page: Page, *, invoice_id: str | None, period: str | None
) -> tuple[list[JournalEntry], bool]:
    filters = []
    if invoice_id is not None:
        filters.append(JournalEntry.invoice_id == invoice_id)
    if period is not None:
        filters.append(JournalEntry.period == check_period(period))
    return list_page(
        ctx,
        JournalEntry,
        page,
        *filters,
        object_name="journal_entry",
        options=[selectinload(JournalEntry.lines)],
    )


def for_invoice(ctx: Ctx, invoice_id: str) -> list[JournalEntry]:
    return list(
        ctx.session.execute(
            select(JournalEntry)
            .where(JournalEntry.account_id == ctx.account_id, JournalEntry.invoice_id == invoice_id)
            .options(selectinload(JournalEntry.lines))
            .order_by(JournalEntry.seq)
        ).scalars()
    )


def trial_balance(ctx: Ctx, period: str) -> TrialBalanceOut:
    """Balances to the end of the period, per ledger account and currency."""
    check_period(period)
    rows = ctx.session.execute(
        select(
            JournalLine.ledger_account,
            JournalLine.currency,
            func.sum(JournalLine.debit_minor),
            func.sum(JournalLine.credit_minor),
        )
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(JournalEntry.account_id == ctx.account_id, JournalEntry.period <= period)
        .group_by(JournalLine.ledger_account, JournalLine.currency)
        .order_by(JournalLine.currency, JournalLine.ledger_account)
    ).all()
    out = [
        TrialBalanceRow(
            account=account,
            currency=currency,
            debit=int(debit),
            credit=int(credit),
            balance=int(debit) - int(credit),
        )
        for account, currency, debit, credit in rows
    ]
    for currency in {row.currency for row in out}:
        invariant(
            sum(r.debit for r in out if r.currency == currency)
            == sum(r.credit for r in out if r.currency == currency),
            f"trial balance for {currency} balances",
        )
    return TrialBalanceOut(period=period, rows=out)


def ar_balances(ctx: Ctx, period: str) -> ArBalanceOut:
    """Per customer and currency, to the end of the period: what they owe (receivable) and
    what we owe them (credit from overpayments, credit notes and voids)."""
    check_period(period)
    rows = ctx.session.execute(
        select(
            JournalEntry.customer_id,
            JournalLine.currency,
            JournalLine.ledger_account,
            func.sum(JournalLine.debit_minor - JournalLine.credit_minor),
        )
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(
            JournalEntry.account_id == ctx.account_id,
            JournalEntry.period <= period,
            JournalEntry.customer_id.isnot(None),
            JournalLine.ledger_account.in_((chart.RECEIVABLE, chart.CUSTOMER_CREDIT)),
        )
        .group_by(JournalEntry.customer_id, JournalLine.currency, JournalLine.ledger_account)
    ).all()
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for customer_id, currency, ledger_account, net in rows:
        bucket = totals.setdefault((str(customer_id), currency), {"receivable": 0, "credit": 0})
        if ledger_account == chart.RECEIVABLE:
            bucket["receivable"] += int(net)
        else:
            bucket["credit"] += -int(net)
    return ArBalanceOut(
        period=period,
        rows=[
            ArBalanceRow(
                customer=customer_id,
                currency=currency,
                receivable=values["receivable"],
                customer_credit=values["credit"],
                net=values["receivable"] - values["credit"],
            )
            for (customer_id, currency), values in sorted(totals.items())
            if values["receivable"] or values["credit"]
        ],
    )


# --- periods -------------------------------------------------------------------------------


def get_period(ctx: Ctx, period: str) -> Period | None:
    return ctx.session.execute(
        select(Period).where(Period.account_id == ctx.account_id, Period.period == period)
    ).scalar_one_or_none()


def close_period(ctx: Ctx, period: str, *, force: bool, reason: str | None) -> Period:
    check_period(period)
    row = get_period(ctx, period)
    if row is not None and row.status == "closed":
        raise Conflict(f"period {period} is already closed", code="invalid_state_transition")
    open_items = _open_items_in(ctx, period)
    if open_items and not force:
        raise Conflict(
            f"period {period} has {open_items} open exception item(s); resolve them or close "
            "with force and a reason",
            code="period_not_reconciled",
            object_name="period",
        )
    if force and not reason:
        raise ValidationFailed(
            "a forced close needs a reason", param="reason", object_name="period"
        )
    entry: dict[str, Any] = {
        "at": iso_instant(ctx.now),
        "action": "closed",
        "actor": ctx.actor,
        "request_id": ctx.request_id,
        "forced": force,
        "open_items": open_items,
    }
    if reason:
        entry["note"] = reason
    if row is None:
        row = Period(
            account_id=ctx.account_id,
            period=period,
            status="closed",
            history=[entry],
            updated_at=ctx.now,
        )
        ctx.session.add(row)
    else:
        row.status = "closed"
        row.history = [*row.history, entry]
        row.updated_at = ctx.now
    ctx.session.flush()
    return row


def reopen_period(ctx: Ctx, period: str, reason: str) -> Period:
    check_period(period)
    row = get_period(ctx, period)
    if row is None or row.status != "closed":
        raise Conflict(f"period {period} is open", code="invalid_state_transition")
    row.status = "open"
    row.history = [
        *row.history,
        {
            "at": iso_instant(ctx.now),
            "action": "reopened",
            "actor": ctx.actor,
            "request_id": ctx.request_id,
            "note": reason,
        },
    ]
    row.updated_at = ctx.now
    ctx.session.flush()
    return row


def _open_items_in(ctx: Ctx, period: str) -> int:
    """Open exception items raised up to the end of the period: unreconciled work."""
    year, month = int(period[:4]), int(period[5:])
    try:
        end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    except ValueError:  # 0000-01…11 end before the calendar starts, 9999-12 after it ends
        end = (datetime.min if year == 0 else datetime.max).replace(tzinfo=UTC)
    return exceptions.count_open_before(ctx, end)
