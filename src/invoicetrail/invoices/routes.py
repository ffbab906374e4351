from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from invoicetrail.core.http import Empty, ListOut, PageParams, Read, Write, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body
from invoicetrail.invoices import credit_notes, dunning, pdf, service
from invoicetrail.invoices import email as invoice_email
from invoicetrail.invoices.credit_notes import CreditNoteCreate, CreditNoteOut
from invoicetrail.invoices.dunning import DunningSettingsIn, DunningSettingsOut
from invoicetrail.invoices.email import InvoiceEmailOut
from invoicetrail.invoices.schemas import InvoiceCreate, InvoiceOut, InvoiceUpdate

router = APIRouter(prefix="/v1", tags=["invoices"])

InvoiceStatusFilter = Literal["draft", "open", "paid", "void", "uncollectible"]


@router.post(
    "/invoices",
    response_model=InvoiceOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(InvoiceCreate),
)
def create_invoice(write: Write) -> Response:
    return write.run(
        InvoiceCreate,
        lambda ctx, body: InvoiceOut.of(service.create(ctx, body)),
        object_name="invoice",
        action="create an invoice",
    )


@router.patch(
    "/invoices/{invoice_id}",
    response_model=InvoiceOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(InvoiceUpdate),
)
def update_invoice(invoice_id: str, write: Write) -> Response:
    return write.run(
        InvoiceUpdate,
        lambda ctx, body: InvoiceOut.of(service.update(ctx, invoice_id, body)),
        object_name="invoice",
        action="update an invoice",
    )


def _action_route(name: str, command: str, action_text: str) -> None:
    fn = getattr(service, command)

    def route(invoice_id: str, write: Write) -> Response:
        return write.run(
            Empty,
            lambda ctx, _body: InvoiceOut.of(fn(ctx, invoice_id)),
            object_name="invoice",
            action=action_text,
        )

    route.__name__ = f"{command}_invoice"
    router.post(
        f"/invoices/{{invoice_id}}/{name}",
        response_model=InvoiceOut,
        responses=WRITE_ERRORS,
        openapi_extra=json_body(Empty, required=False),
        name=f"{command}_invoice",
    )(route)


_action_route("finalize", "finalize", "finalize an invoice")
_action_route("send", "send", "send an invoice")
_action_route("void", "void", "void an invoice")
_action_route("mark_uncollectible", "mark_uncollectible", "mark an invoice uncollectible")


@router.get("/invoices/{invoice_id}", response_model=InvoiceOut, responses=READ_ERRORS)
def get_invoice(invoice_id: str, ctx: Read) -> Response:
    return json_response(InvoiceOut.of(service.get(ctx, invoice_id)), ctx.request_id)


_PDF_RESPONSES: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    200: {
        "description": "The finalized invoice as a PDF; the same bytes for the same invoice",
        "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
    },
    409: {**WRITE_ERRORS[409], "description": "A draft has no PDF: finalize it first"},
}


@router.get("/invoices/{invoice_id}/pdf", response_class=Response, responses=_PDF_RESPONSES)
def get_invoice_pdf(invoice_id: str, ctx: Read) -> Response:
    filename, content = pdf.render_invoice_pdf(ctx, invoice_id)
    return Response(
        content=content,
        media_type="application/pdf",
        headers={
            "Request-Id": ctx.request_id,
            "Content-Disposition": f'inline; filename="{filename}"',
        },
    )


@router.get("/invoices", response_model=ListOut[InvoiceOut], responses=READ_ERRORS)
def list_invoices(
    ctx: Read,
    page: PageParams,
    status: InvoiceStatusFilter | None = None,
    customer: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    rows, has_more = service.list_invoices(ctx, page, status=status, customer_id=customer)
    return json_response(
        ListOut[InvoiceOut](data=[InvoiceOut.of(i) for i in rows], has_more=has_more),
        ctx.request_id,
    )


@router.post(
    "/credit_notes",
    response_model=CreditNoteOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(CreditNoteCreate),
)
def create_credit_note(write: Write) -> Response:
    return write.run(
        CreditNoteCreate,
        lambda ctx, body: CreditNoteOut.of(credit_notes.create(ctx, body)),
        object_name="credit_note",
        action="create a credit note",
    )


@router.get("/credit_notes/{note_id}", response_model=CreditNoteOut, responses=READ_ERRORS)
def get_credit_note(note_id: str, ctx: Read) -> Response:
    return json_response(CreditNoteOut.of(credit_notes.get(ctx, note_id)), ctx.request_id)


@router.get("/credit_notes", response_model=ListOut[CreditNoteOut], responses=READ_ERRORS)
def list_credit_notes(
    ctx: Read, page: PageParams, invoice: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    rows, has_more = credit_notes.list_notes(ctx, page, invoice_id=invoice)
    return json_response(
        ListOut[CreditNoteOut](data=[CreditNoteOut.of(n) for n in rows], has_more=has_more),
        ctx.request_id,
    )


@router.get(
    "/invoices/{invoice_id}/emails",
    response_model=ListOut[InvoiceEmailOut],
    responses=READ_ERRORS,
)
def list_invoice_emails(invoice_id: str, ctx: Read, page: PageParams) -> Response:
    rows, has_more = invoice_email.list_for_invoice(ctx, invoice_id, page)
    return json_response(
        ListOut[InvoiceEmailOut](data=[InvoiceEmailOut.of(r) for r in rows], has_more=has_more),
        ctx.request_id,
    )


@router.get("/dunning_settings", response_model=DunningSettingsOut, responses=READ_ERRORS)
def get_dunning_settings(ctx: Read) -> Response:
    return json_response(dunning.settings_out(ctx), ctx.request_id)


@router.put(
    "/dunning_settings",
    response_model=DunningSettingsOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(DunningSettingsIn),
)
def put_dunning_settings(write: Write) -> Response:
    return write.run(
        DunningSettingsIn,
        dunning.put_settings,
        object_name="dunning_settings",
        action="set dunning settings",
    )
