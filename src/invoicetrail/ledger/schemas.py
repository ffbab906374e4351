from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import Body
from invoicetrail.ledger.chart import ACCOUNT_NAME_PATTERN, ROLES
from invoicetrail.ledger.models import JournalEntry, LedgerSettings, Period

PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


class JournalLineOut(BaseModel):
    account: str
    debit: int
    credit: int
    currency: str


class JournalEntryOut(BaseModel):
    id: str
    object: str = "journal_entry"
    business_key: str
    date: str
    period: str
    currency: str
    description: str
    invoice: str | None
    payment: str | None
    credit_note: str | None
    customer: str | None
    reverses: str | None
    lines: list[JournalLineOut]
    created: str | None
    request_id: str | None

    @classmethod
    def of(cls, entry: JournalEntry) -> JournalEntryOut:
        return cls(
            id=entry.id,
            business_key=entry.business_key,
            date=entry.entry_date.isoformat(),
            period=entry.period,
            currency=entry.currency,
            description=entry.description,
            invoice=entry.invoice_id,
            payment=entry.payment_id,
            credit_note=entry.credit_note_id,
            customer=entry.customer_id,
            reverses=entry.reverses,
            lines=[
                JournalLineOut(
                    account=line.ledger_account,
                    debit=line.debit_minor,
                    credit=line.credit_minor,
                    currency=line.currency,
                )
                for line in entry.lines
            ],
            created=iso_instant(entry.created_at),
            request_id=entry.request_id,
        )


class TrialBalanceRow(BaseModel):
    account: str
    currency: str
    debit: int
    credit: int
    balance: int


class TrialBalanceOut(BaseModel):
    object: str = "trial_balance"
    period: str
    rows: list[TrialBalanceRow]


class ArBalanceRow(BaseModel):
    customer: str
    currency: str
    receivable: int
    customer_credit: int
    net: int


class ArBalanceOut(BaseModel):
    object: str = "ar_balance"
    period: str
    rows: list[ArBalanceRow]


class LedgerSettingsUpdate(Body):
    posting_policy: Literal["accrual", "cash"] | None = None
    accounts: (
        dict[str, Annotated[str, Field(pattern=ACCOUNT_NAME_PATTERN, max_length=128)]] | None
    ) = None


class LedgerSettingsOut(BaseModel):
    object: str = "ledger_settings"
    id: str
    posting_policy: str
    accounts: dict[str, str]

    @classmethod
    def of(cls, account_id: str, row: LedgerSettings | None) -> LedgerSettingsOut:
        names = row.account_names if row else {}
        return cls(
            id=account_id,
            posting_policy=row.posting_policy if row else "accrual",
            accounts={role: names.get(role, default) for role, default in ROLES.items()},
        )


class PeriodClose(Body):
    force: StrictBool = False
    reason: Annotated[str, Field(min_length=1, max_length=1000)] | None = None


class PeriodReopen(Body):
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class PeriodOut(BaseModel):
    id: str
    object: str = "period"
    period: str
    status: str
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, period: str, row: Period | None) -> PeriodOut:
        return cls(
            id=period,
            period=period,
            status=row.status if row else "open",
            history=row.history if row else [],
        )
