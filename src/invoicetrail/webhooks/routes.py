from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import Response

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.fields import Body
from invoicetrail.core.http import ListOut, PageParams, Read, Write, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body
from invoicetrail.webhooks import service
from invoicetrail.webhooks.schemas import (
    Redeliver,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    WebhookSecretRotate,
)

router = APIRouter(prefix="/v1", tags=["webhooks"])
# Answers carrying a new secret are replayable only for the minimum retention.
SECRET_RETENTION = timedelta(days=1)


@router.post(
    "/webhook_endpoints",
    response_model=WebhookEndpointOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(WebhookEndpointCreate),
)
def create_webhook_endpoint(write: Write) -> Response:
    def command(ctx: Ctx, body: WebhookEndpointCreate) -> WebhookEndpointOut:
        endpoint, secret = service.create_endpoint(ctx, body)
        return WebhookEndpointOut.of(endpoint, secret=secret)

    return write.run(
        WebhookEndpointCreate,
        command,
        object_name="webhook_endpoint",
        action="create a webhook endpoint",
        retention=SECRET_RETENTION,
    )


@router.get("/webhook_endpoints", response_model=ListOut[WebhookEndpointOut], responses=READ_ERRORS)
def list_webhook_endpoints(ctx: Read, page: PageParams) -> Response:
    rows, has_more = service.list_endpoints(ctx, page)
    return json_response(
        ListOut[WebhookEndpointOut](
            data=[WebhookEndpointOut.of(r) for r in rows], has_more=has_more
        ),
        ctx.request_id,
    )


@router.get(
    "/webhook_endpoints/{endpoint_id}", response_model=WebhookEndpointOut, responses=READ_ERRORS
)
def get_webhook_endpoint(endpoint_id: str, ctx: Read) -> Response:
    return json_response(
        WebhookEndpointOut.of(service.get_endpoint(ctx, endpoint_id)), ctx.request_id
    )


@router.patch(
    "/webhook_endpoints/{endpoint_id}",
    response_model=WebhookEndpointOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(WebhookEndpointUpdate),
)
def update_webhook_endpoint(endpoint_id: str, write: Write) -> Response:
    return write.run(
        WebhookEndpointUpdate,
        lambda ctx, body: WebhookEndpointOut.of(service.update_endpoint(ctx, endpoint_id, body)),
        object_name="webhook_endpoint",
        action="update a webhook endpoint",
    )


class _NoBody(Body):
    pass


def _status_route(status: str, verb: str) -> None:
    @router.post(
        f"/webhook_endpoints/{{endpoint_id}}/{verb}",
        response_model=WebhookEndpointOut,
        responses=WRITE_ERRORS,
        openapi_extra=json_body(_NoBody, required=False),
        name=f"{verb}_webhook_endpoint",
    )
    def change(endpoint_id: str, write: Write) -> Response:
        return write.run(
            _NoBody,
            lambda ctx, _body: WebhookEndpointOut.of(service.set_status(ctx, endpoint_id, status)),
            object_name="webhook_endpoint",
            action=f"{verb} a webhook endpoint",
        )


_status_route("disabled", "disable")
_status_route("enabled", "enable")


@router.post(
    "/webhook_endpoints/{endpoint_id}/rotate_secret",
    response_model=WebhookEndpointOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(WebhookSecretRotate, required=False),
)
def rotate_webhook_secret(endpoint_id: str, write: Write) -> Response:
    def command(ctx: Ctx, body: WebhookSecretRotate) -> WebhookEndpointOut:
        endpoint, secret, expires_at = service.rotate_secret(
            ctx, endpoint_id, body.expire_previous_after_seconds
        )
        return WebhookEndpointOut.of(
            endpoint, secret=secret, previous_secret_expires_at=iso_instant(expires_at)
        )

    return write.run(
        WebhookSecretRotate,
        command,
        object_name="webhook_endpoint",
        action="rotate a webhook secret",
        retention=SECRET_RETENTION,
    )


@router.post(
    "/events/{event_id}/redeliver",
    response_model=ListOut[WebhookDeliveryOut],
    responses=WRITE_ERRORS,
    openapi_extra=json_body(Redeliver, required=False),
)
def redeliver_event(event_id: str, write: Write) -> Response:
    def command(ctx: Ctx, body: Redeliver) -> ListOut[WebhookDeliveryOut]:
        queued = service.redeliver(ctx, event_id, body.webhook_endpoint)
        return ListOut[WebhookDeliveryOut](
            data=[WebhookDeliveryOut.of(d, []) for d in queued], has_more=False
        )

    return write.run(Redeliver, command, object_name="event", action="redeliver an event")


@router.get(
    "/events/{event_id}/deliveries",
    response_model=ListOut[WebhookDeliveryOut],
    responses=READ_ERRORS,
)
def list_event_deliveries(event_id: str, ctx: Read) -> Response:
    return json_response(
        ListOut[WebhookDeliveryOut](
            data=[WebhookDeliveryOut.of(d, a) for d, a in service.deliveries_of(ctx, event_id)],
            has_more=False,
        ),
        ctx.request_id,
    )
