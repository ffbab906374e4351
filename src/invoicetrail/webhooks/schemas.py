from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictInt

from invoicetrail.core.clock import iso_instant
from invoicetrail.core.fields import Body
from invoicetrail.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

EventPattern = Annotated[str, Field(pattern=r"^(\*|[a-z][a-z_]*\.[a-z][a-z_]*)$", max_length=64)]


class WebhookEndpointCreate(Body):
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    events: Annotated[list[EventPattern], Field(min_length=1, max_length=100)] = ["*"]


class WebhookEndpointUpdate(Body):
    url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    events: Annotated[list[EventPattern], Field(min_length=1, max_length=100)] | None = None


class WebhookSecretRotate(Body):
    expire_previous_after_seconds: Annotated[StrictInt, Field(ge=0, le=7 * 86_400)] = 86_400


class Redeliver(Body):
    webhook_endpoint: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class WebhookEndpointOut(BaseModel):
    id: str
    object: str = "webhook_endpoint"
    url: str
    events: list[str]
    status: str
    created: str | None
    secret: str | None = None
    previous_secret_expires_at: str | None = None

    @classmethod
    def of(cls, endpoint: WebhookEndpoint, **extra: str | None) -> WebhookEndpointOut:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            events=endpoint.events,
            status=endpoint.status,
            created=iso_instant(endpoint.created_at),
            **extra,
        )


class WebhookAttemptOut(BaseModel):
    attempt: int
    at: str | None
    status_code: int | None
    latency_ms: int
    response_snippet: str | None
    error: str | None

    @classmethod
    def of(cls, attempt: WebhookAttempt) -> WebhookAttemptOut:
        return cls(
            attempt=attempt.attempt,
            at=iso_instant(attempt.attempted_at),
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            response_snippet=attempt.response_snippet,
            error=attempt.error,
        )


class WebhookDeliveryOut(BaseModel):
    id: str
    object: str = "webhook_delivery"
    event: str
    webhook_endpoint: str
    status: str
    attempt_count: int
    next_attempt_at: str | None
    trigger: str
    created: str | None
    attempts: list[WebhookAttemptOut]

    @classmethod
    def of(cls, delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> WebhookDeliveryOut:
        return cls(
            id=delivery.id,
            event=delivery.event_id,
            webhook_endpoint=delivery.endpoint_id,
            status=delivery.status,
            attempt_count=delivery.attempt_count,
            next_attempt_at=iso_instant(delivery.next_attempt_at),
            trigger=delivery.trigger,
            created=iso_instant(delivery.created_at),
            attempts=[WebhookAttemptOut.of(a) for a in attempts],
        )
