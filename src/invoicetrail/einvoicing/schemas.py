from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import Body
from invoicetrail.einvoicing.models import EInvoice

Note = Annotated[str, Field(min_length=1, max_length=1000)]


class EInvoiceCorrect(Body):
    note: Note | None = None


class EInvoiceApprove(Body):
    note: Note | None = None


class EInvoiceCancel(Body):
    reason: Note


class EInvoiceOut(BaseModel):
    id: str
    object: str = "einvoice"
    regime: str
    market: str
    document_type: str
    invoice: str
    credit_note: str | None
    payment: str | None
    status: str
    test: bool
    document: dict[str, Any]
    findings: list[dict[str, Any]] | None
    failure: dict[str, Any] | None
    attempts: int
    external_id: str | None
    submitted_at: str | None
    accepted_at: str | None
    cancellation_deadline: str | None
    cancelled_at: str | None
    supersedes: str | None
    superseded_by: str | None
    correction_requested_by: str | None
    approved_by: str | None
    history: list[dict[str, Any]]
    created: str | None

    @classmethod
    def of(cls, row: EInvoice) -> EInvoiceOut:
        return cls(
            id=row.id,
            regime=row.regime,
            market=row.market,
            document_type=row.document_type,
            invoice=row.invoice_id,
            credit_note=row.credit_note_id,
            payment=row.payment_id,
            status=row.status,
            test=row.test,
            document={
                "media_type": row.media_type,
                "sha256": row.document_sha256,
                "bytes": len(row.document),
                "url": f"/v1/einvoices/{row.id}/document",
            },
            findings=None
            if row.findings is None
            else [
                {k: f.get(k) for k in ("rule", "flag", "message", "location", "source")}
                for f in row.findings
            ],
            failure=row.failure,
            attempts=row.attempt_count,
            external_id=row.external_id,
            submitted_at=iso_instant(row.submitted_at),
            accepted_at=iso_instant(row.accepted_at),
            cancellation_deadline=iso_instant(row.cancellation_deadline_at),
            cancelled_at=iso_instant(row.cancelled_at),
            supersedes=row.supersedes_id,
            superseded_by=row.superseded_by_id,
            correction_requested_by=row.correction_requested_by,
            approved_by=row.approved_by,
            history=row.history,
            created=iso_instant(row.created_at),
        )
