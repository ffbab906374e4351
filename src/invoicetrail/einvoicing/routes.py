from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from invoicetrail.core.context import Ctx
from invoicetrail.core.http import ListOut, PageParams, Read, Write, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body
from invoicetrail.einvoicing import service
from invoicetrail.einvoicing.schemas import (
    EInvoiceApprove,
    EInvoiceCancel,
    EInvoiceCorrect,
    EInvoiceOut,
)

router = APIRouter(prefix="/v1", tags=["einvoicing"])


@router.get("/einvoices", response_model=ListOut[EInvoiceOut], responses=READ_ERRORS)
def list_einvoices(
    ctx: Read,
    page: PageParams,
    invoice: Annotated[str | None, Query(max_length=64)] = None,
    credit_note: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    rows, has_more = service.list_einvoices(
        ctx, page, invoice_id=invoice, credit_note_id=credit_note
    )
    return json_response(
        ListOut[EInvoiceOut](data=[EInvoiceOut.of(r) for r in rows], has_more=has_more),
        ctx.request_id,
    )


@router.get("/einvoices/{einvoice_id}", response_model=EInvoiceOut, responses=READ_ERRORS)
def get_einvoice(einvoice_id: str, ctx: Read) -> Response:
    return json_response(EInvoiceOut.of(service.get(ctx, einvoice_id)), ctx.request_id)


_DOCUMENT_RESPONSES: dict[int | str, dict[str, object]] = {
    **READ_ERRORS,
    200: {
        "description": "The generated document, byte for byte as submitted",
        "content": {
            "application/xml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    },
}


@router.get(
    "/einvoices/{einvoice_id}/document", response_class=Response, responses=_DOCUMENT_RESPONSES
)
def get_einvoice_document(einvoice_id: str, ctx: Read) -> Response:
    row = service.get(ctx, einvoice_id)
    extension = "json" if row.media_type == "application/json" else "xml"
    return Response(
        content=row.document,
        media_type=row.media_type,
        headers={
            "Request-Id": ctx.request_id,
            "Content-Disposition": f'inline; filename="{row.id}.{extension}"',
            "Digest": f"sha-256={row.document_sha256}",
        },
    )


@router.post(
    "/einvoices/{einvoice_id}/correct",
    response_model=EInvoiceOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(EInvoiceCorrect),
)
def correct_einvoice(einvoice_id: str, write: Write) -> Response:
    def command(ctx: Ctx, body: EInvoiceCorrect) -> EInvoiceOut:
        return EInvoiceOut.of(service.correct(ctx, einvoice_id, body.note))

    return write.run(
        EInvoiceCorrect,
        command,
        object_name="einvoice",
        action="correct an e-invoice",
        status_code=200,
    )


@router.post(
    "/einvoices/{einvoice_id}/approve",
    response_model=EInvoiceOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(EInvoiceApprove),
)
def approve_einvoice(einvoice_id: str, write: Write) -> Response:
    def command(ctx: Ctx, body: EInvoiceApprove) -> EInvoiceOut:
        return EInvoiceOut.of(service.approve(ctx, einvoice_id, body.note))

    return write.run(
        EInvoiceApprove,
        command,
        object_name="einvoice",
        action="approve a corrected e-invoice",
        status_code=200,
    )


@router.post(
    "/einvoices/{einvoice_id}/cancel",
    response_model=EInvoiceOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(EInvoiceCancel),
)
def cancel_einvoice(einvoice_id: str, write: Write) -> Response:
    def command(ctx: Ctx, body: EInvoiceCancel) -> EInvoiceOut:
        return EInvoiceOut.of(service.cancel(ctx, einvoice_id, body.reason))

    return write.run(
        EInvoiceCancel,
        command,
        object_name="einvoice",
        action="cancel an e-invoice",
        status_code=200,
    )
