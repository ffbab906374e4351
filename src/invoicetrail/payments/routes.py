from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from invoicetrail.core.http import ListOut, PageParams, Read, Write, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body
from invoicetrail.invoices.schemas import InvoiceOut
from invoicetrail.payments import service
from invoicetrail.payments.schemas import PayInvoice, PaymentOut

router = APIRouter(prefix="/v1", tags=["payments"])

PaymentStatusFilter = Literal[
    "pending", "processing", "succeeded", "failed", "refunded", "disputed"
]


@router.post(
    "/invoices/{invoice_id}/pay",
    response_model=InvoiceOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(PayInvoice),
)
def pay_invoice(invoice_id: str, write: Write) -> Response:
    return write.run(
        PayInvoice,
        lambda ctx, body: InvoiceOut.of(service.pay_invoice(ctx, invoice_id, body)),
        object_name="invoice",
        action="pay an invoice",
    )


@router.get("/payments/{payment_id}", response_model=PaymentOut, responses=READ_ERRORS)
def get_payment(payment_id: str, ctx: Read) -> Response:
    return json_response(PaymentOut.of(service.get(ctx, payment_id)), ctx.request_id)


@router.get("/payments", response_model=ListOut[PaymentOut], responses=READ_ERRORS)
def list_payments(
    ctx: Read,
    page: PageParams,
    invoice: Annotated[str | None, Query(max_length=64)] = None,
    status: PaymentStatusFilter | None = None,
) -> Response:
    rows, has_more = service.list_payments(ctx, page, invoice_id=invoice, status=status)
    return json_response(
        ListOut[PaymentOut](data=[PaymentOut.of(p) for p in rows], has_more=has_more),
        ctx.request_id,
    )
