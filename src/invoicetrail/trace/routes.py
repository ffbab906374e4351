from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from invoicetrail.core.http import Read, json_response
from invoicetrail.core.openapi import READ_ERRORS
from invoicetrail.trace import service
from invoicetrail.trace.schemas import TraceOut

router = APIRouter(prefix="/v1", tags=["invoices"])


@router.get("/invoices/{invoice_id}/trace", response_model=TraceOut, responses=READ_ERRORS)
def get_invoice_trace(invoice_id: str, ctx: Read) -> Response:
    """The whole chain of one invoice from stored records, each list in time order."""
    return json_response(service.trace(ctx, invoice_id), ctx.request_id)
