from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import Body
from invoicetrail.exports.formats import FORMATS
from invoicetrail.exports.models import ExportBatch, ExportRow
from invoicetrail.ledger.models import JournalLine
from invoicetrail.ledger.schemas import PERIOD_PATTERN

FormatName = Literal["csv", "jsonl", "netsuite", "quickbooks", "xero", "hledger", "beancount"]
ACK_ROWS_MAX = 10_000
ERP_RECORD_ID_LENGTH_MAX = 255
ERROR_LENGTH_MAX = 5000


class ExportCreate(Body):
    format: FormatName
    period: Annotated[str, Field(pattern=PERIOD_PATTERN, description="A month YYYY-MM")]


class RowAcknowledgement(Body):
    """One ERP answer: the record it created, or why it refused the row."""

    id: str
    erp_record_id: (
        Annotated[str, Field(min_length=1, max_length=ERP_RECORD_ID_LENGTH_MAX)] | None
    ) = None
    error: Annotated[str, Field(min_length=1, max_length=ERROR_LENGTH_MAX)] | None = None

    @model_validator(mode="after")
    def _one_answer(self) -> RowAcknowledgement:
        if (self.erp_record_id is None) == (self.error is None):
            raise ValueError("give exactly one of erp_record_id (synced) or error (failed)")
        return self


class ExportAcknowledge(Body):
    rows: Annotated[list[RowAcknowledgement], Field(min_length=1, max_length=ACK_ROWS_MAX)]


class ExportTotal(BaseModel):
    currency: str
    debit: int
    credit: int


class ExportRowStatuses(BaseModel):
    exported: int
    synced: int
    failed: int


def batch_status(batch: ExportBatch) -> str:
    """`exported` while any row awaits the ERP's answer, else `failed` while any row
    failed, else `synced` (an empty batch has nothing to wait for)."""
    if batch.exported_count:
        return "exported"
    if batch.failed_count:
        return "failed"
    return "synced"


class ExportOut(BaseModel):
    id: str
    object: str = "export"
    format: str
    period: str
    status: str
    row_count: int
    row_statuses: ExportRowStatuses
    totals: list[ExportTotal]
    file: str
    filename: str
    media_type: str
    created: str | None
    request_id: str | None

    @classmethod
    def of(cls, batch: ExportBatch) -> ExportOut:
        spec = FORMATS[batch.format]
        return cls(
            id=batch.id,
            format=batch.format,
            period=batch.period,
            status=batch_status(batch),
            row_count=batch.row_count,
            row_statuses=ExportRowStatuses(
                exported=batch.exported_count,
                synced=batch.synced_count,
                failed=batch.failed_count,
            ),
            totals=[ExportTotal.model_validate(total) for total in batch.totals],
            file=f"/v1/exports/{batch.id}/file",
            filename=filename(batch),
            media_type=spec.media_type,
            created=iso_instant(batch.created_at),
            request_id=batch.request_id,
        )


def filename(batch: ExportBatch) -> str:
    return f"{batch.id}-{batch.period}-{batch.format}.{FORMATS[batch.format].extension}"


class ExportRowOut(BaseModel):
    id: str
    object: str = "export_row"
    format: str
    period: str
    status: str
    journal_entry: str
    journal_line: str
    position: int
    account: str
    debit: int
    credit: int
    currency: str
    invoice: str | None
    erp_record_id: str | None
    error: str | None
    acknowledged_at: str | None

    @classmethod
    def of(
        cls,
        *,
        row_id: str,
        format_name: str,
        period: str,
        line: JournalLine,
        invoice_id: str | None,
        answer: ExportRow | None,
    ) -> ExportRowOut:
        return cls(
            id=row_id,
            format=format_name,
            period=period,
            status=answer.status if answer is not None else "exported",
            journal_entry=line.entry_id,
            journal_line=line.id,
            position=line.position,
            account=line.ledger_account,
            debit=line.debit_minor,
            credit=line.credit_minor,
            currency=line.currency,
            invoice=invoice_id,
            erp_record_id=answer.erp_record_id if answer is not None else None,
            error=answer.error if answer is not None else None,
            acknowledged_at=iso_instant(answer.acknowledged_at) if answer is not None else None,
        )
