from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.http import (
    ListOut,
    PageParams,
    Read,
    Write,
    app_state,
    json_response,
    request_id_of,
)
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, ErrorOut, json_body
from invoicetrail.invoices.schemas import InvoiceOut
from invoicetrail.payments import endpoints, inbox, service, simulated
from invoicetrail.payments.schemas import (
    ApplyPayment,
    PayInvoice,
    PaymentOut,
    ProviderEndpointCreate,
    ProviderEndpointOut,
    ProviderEndpointRotate,
    ProviderEventOut,
    SimulatedPaymentCreate,
    SimulatedPaymentOut,
)

router = APIRouter(prefix="/v1", tags=["payments"])
# Answers that may carry a generated secret are replayable only for the minimum retention.
SECRET_RETENTION = timedelta(days=1)

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


@router.post(
    "/payments/{payment_id}/apply",
    response_model=PaymentOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ApplyPayment),
)
def apply_payment(payment_id: str, write: Write) -> Response:
    return write.run(
        ApplyPayment,
        lambda ctx, body: PaymentOut.of(service.apply_parked(ctx, payment_id, body)),
        object_name="payment",
        action="apply a payment",
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
    unapplied: bool | None = None,
) -> Response:
    rows, has_more = service.list_payments(
        ctx, page, invoice_id=invoice, status=status, unapplied=unapplied
    )
    return json_response(
        ListOut[PaymentOut](data=[PaymentOut.of(p) for p in rows], has_more=has_more),
        ctx.request_id,
    )


# --- provider endpoints ------------------------------------------------------------------------


@router.post(
    "/provider_endpoints",
    response_model=ProviderEndpointOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ProviderEndpointCreate),
)
def create_provider_endpoint(write: Write) -> Response:
    def command(ctx: Ctx, body: ProviderEndpointCreate) -> ProviderEndpointOut:
        endpoint, generated = endpoints.create(
            ctx, body.provider, body.secret, livemode=body.livemode
        )
        return ProviderEndpointOut.of(endpoint, secret=generated)

    return write.run(
        ProviderEndpointCreate,
        command,
        object_name="provider_endpoint",
        action="create a provider endpoint",
        retention=SECRET_RETENTION,
    )


@router.post(
    "/provider_endpoints/{endpoint_id}/rotate_secret",
    response_model=ProviderEndpointOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ProviderEndpointRotate, required=False),
)
def rotate_provider_secret(endpoint_id: str, write: Write) -> Response:
    def command(ctx: Ctx, body: ProviderEndpointRotate) -> ProviderEndpointOut:
        endpoint, generated, expires_at = endpoints.rotate_secret(
            ctx,
            endpoint_id,
            body.secret,
            body.expire_previous_after_seconds,
        )
        return ProviderEndpointOut.of(
            endpoint, secret=generated, previous_secret_expires_at=iso_instant(expires_at)
        )

    return write.run(
        ProviderEndpointRotate,
        command,
        object_name="provider_endpoint",
        action="rotate a provider endpoint secret",
        retention=SECRET_RETENTION,
    )


@router.get(
    "/provider_endpoints/{endpoint_id}", response_model=ProviderEndpointOut, responses=READ_ERRORS
)
def get_provider_endpoint(endpoint_id: str, ctx: Read) -> Response:
    return json_response(ProviderEndpointOut.of(endpoints.get(ctx, endpoint_id)), ctx.request_id)


@router.get(
    "/provider_endpoints", response_model=ListOut[ProviderEndpointOut], responses=READ_ERRORS
)
def list_provider_endpoints(ctx: Read, page: PageParams) -> Response:
    rows, has_more = endpoints.list_endpoints(ctx, page)
    return json_response(
        ListOut[ProviderEndpointOut](
            data=[ProviderEndpointOut.of(e) for e in rows], has_more=has_more
        ),
        ctx.request_id,
    )


# --- inbound provider events ---------------------------------------------------------------


@router.post(
    "/providers/{provider}/webhooks/{endpoint_id}",
    responses={
        200: {"description": "Verified and committed (new, repeat, stale or unmatched alike)"},
        400: {"model": ErrorOut, "description": "Bad signature, stale timestamp, unknown endpoint"},
        413: {"model": ErrorOut, "description": "Body too large (kept, truncated)"},
        500: {"model": ErrorOut, "description": "A bug: never expected; the provider retries"},
        503: {"model": ErrorOut, "description": "Storage unavailable; the provider retries"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def provider_webhook(provider: str, endpoint_id: str, request: Request) -> Response:
    """No API key and no Idempotency-Key: the signature is the authentication, the provider
    event id the dedupe key. Content-Type is ignored; the raw bytes are what is verified."""
    state = app_state(request)
    limit = state.settings.body_bytes_max
    declared = request.headers.get("content-length")
    chunks: list[bytes] = []
    size = 0
    truncated = declared is not None and declared.isdigit() and int(declared) > limit
    if not truncated:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                truncated = True
                break
            chunks.append(chunk)
    body = b"".join(chunks)[:limit]
    received = await run_in_threadpool(
        inbox.receive,
        state.sessions,
        state.clock,
        state.settings,
        provider=provider,
        endpoint_id=endpoint_id,
        headers=dict(request.headers),
        body=body,
        request_id=request_id_of(request),
        body_bytes=int(declared) if truncated and declared and declared.isdigit() else size,
        truncated=truncated,
    )
    payload = received.body
    if "error" in payload:
        payload["error"]["request_id"] = request_id_of(request)
        payload["error"]["message"] = str(payload["error"]["message"])
    return Response(
        content=json.dumps(payload).encode(),
        status_code=received.status_code,
        media_type="application/json",
    )


@router.get("/provider_events/{event_id}", response_model=ProviderEventOut, responses=READ_ERRORS)
def get_provider_event(event_id: str, ctx: Read) -> Response:
    return json_response(ProviderEventOut.of(inbox.get_event(ctx, event_id)), ctx.request_id)


@router.get("/provider_events", response_model=ListOut[ProviderEventOut], responses=READ_ERRORS)
def list_provider_events(
    ctx: Read,
    page: PageParams,
    invoice: Annotated[str | None, Query(max_length=64)] = None,
    payment: Annotated[str | None, Query(max_length=64)] = None,
    verification: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    rows, has_more = inbox.list_events(
        ctx, page, invoice_id=invoice, payment_id=payment, verification=verification
    )
    return json_response(
        ListOut[ProviderEventOut](data=[ProviderEventOut.of(e) for e in rows], has_more=has_more),
        ctx.request_id,
    )


# --- simulated provider -------------------------------------------------------------------


@router.post(
    "/simulated/payments",
    response_model=SimulatedPaymentOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(SimulatedPaymentCreate),
)
def create_simulated_payment(write: Write) -> Response:
    return write.run(
        SimulatedPaymentCreate,
        simulated.schedule,
        object_name="simulated_payment",
        action="simulate a payment",
    )
