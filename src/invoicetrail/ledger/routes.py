from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from invoicetrail.core.http import ListOut, PageParams, Read, Write, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body
from invoicetrail.ledger import service
from invoicetrail.ledger.schemas import (
    ArBalanceOut,
    JournalEntryOut,
    LedgerSettingsOut,
    LedgerSettingsUpdate,
    PeriodClose,
    PeriodOut,
    PeriodReopen,
    TrialBalanceOut,
)

router = APIRouter(prefix="/v1", tags=["ledger"])


@router.get("/journal_entries", response_model=ListOut[JournalEntryOut], responses=READ_ERRORS)
def list_journal_entries(
    ctx: Read,
    page: PageParams,
    invoice: Annotated[str | None, Query(max_length=64)] = None,
    period: Annotated[str | None, Query(max_length=7)] = None,
) -> Response:
    rows, has_more = service.list_entries(ctx, page, invoice_id=invoice, period=period)
    return json_response(
        ListOut[JournalEntryOut](data=[JournalEntryOut.of(e) for e in rows], has_more=has_more),
        ctx.request_id,
    )


@router.get("/journal_entries/{entry_id}", response_model=JournalEntryOut, responses=READ_ERRORS)
def get_journal_entry(entry_id: str, ctx: Read) -> Response:
    return json_response(JournalEntryOut.of(service.get(ctx, entry_id)), ctx.request_id)


@router.get("/trial_balance", response_model=TrialBalanceOut, responses=READ_ERRORS)
def trial_balance(ctx: Read, period: Annotated[str, Query(max_length=7)]) -> Response:
    return json_response(service.trial_balance(ctx, period), ctx.request_id)


@router.get("/ar_balances", response_model=ArBalanceOut, responses=READ_ERRORS)
def ar_balances(ctx: Read, period: Annotated[str, Query(max_length=7)]) -> Response:
    return json_response(service.ar_balances(ctx, period), ctx.request_id)


@router.get("/periods/{period}", response_model=PeriodOut, responses=READ_ERRORS)
def get_period(period: str, ctx: Read) -> Response:
    service.check_period(period)
    return json_response(PeriodOut.of(period, service.get_period(ctx, period)), ctx.request_id)


@router.post(
    "/periods/{period}/close",
    response_model=PeriodOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(PeriodClose, required=False),
)
def close_period(period: str, write: Write) -> Response:
    return write.run(
        PeriodClose,
        lambda ctx, body: PeriodOut.of(
            period, service.close_period(ctx, period, force=body.force, reason=body.reason)
        ),
        object_name="period",
        action="close a period",
    )


@router.post(
    "/periods/{period}/reopen",
    response_model=PeriodOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(PeriodReopen),
)
def reopen_period(period: str, write: Write) -> Response:
    return write.run(
        PeriodReopen,
        lambda ctx, body: PeriodOut.of(period, service.reopen_period(ctx, period, body.reason)),
        object_name="period",
        action="reopen a period",
    )


@router.get("/ledger_settings", response_model=LedgerSettingsOut, responses=READ_ERRORS)
def get_ledger_settings(ctx: Read) -> Response:
    return json_response(
        LedgerSettingsOut.of(ctx.account_id, service.settings_of(ctx)), ctx.request_id
    )


@router.post(
    "/ledger_settings",
    response_model=LedgerSettingsOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(LedgerSettingsUpdate),
)
def update_ledger_settings(write: Write) -> Response:
    return write.run(
        LedgerSettingsUpdate,
        lambda ctx, body: LedgerSettingsOut.of(
            ctx.account_id, service.update_settings(ctx, body.posting_policy, body.accounts)
        ),
        object_name="ledger_settings",
        action="change ledger settings",
    )
