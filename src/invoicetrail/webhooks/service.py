"""Subscriber endpoints, their secrets and queued deliveries: the only writer of these tables."""

from __future__ import annotations

import ipaddress
import socket
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update

from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import ApiError, NotFound, ValidationFailed
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.events import service as events
from invoicetrail.payments.endpoints import generate_secret
from invoicetrail.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointSecret,
)
from invoicetrail.webhooks.schemas import WebhookEndpointCreate, WebhookEndpointUpdate


class UrlNotAllowed(ApiError):
    status_code = 400
    code = "url_not_allowed"


def _blocked_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # Anything not globally routable: private, loopback, link-local, shared (100.64/10, where
    # some clouds put metadata services), reserved, multicast, unspecified.
    return not address.is_global or address.is_multicast


def check_url(url: str, *, allow_private: bool) -> str:
    """Syntax and literal targets at creation; the host is resolved again at each delivery."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlNotAllowed(
            "url must be an absolute http(s) URL like https://example.com/hooks",
            param="url",
            object_name="webhook_endpoint",
        )
    try:
        _ = parts.port
    except ValueError:
        raise UrlNotAllowed(
            "url has an invalid port", param="url", object_name="webhook_endpoint"
        ) from None
    if parts.username or parts.password:
        raise UrlNotAllowed(
            "url must not carry credentials; the signature authenticates deliveries",
            param="url",
            object_name="webhook_endpoint",
        )
    if allow_private:
        return url
    host = parts.hostname.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        raise UrlNotAllowed(
            f"url points at {host}; deliveries go to public addresses only",
            param="url",
            object_name="webhook_endpoint",
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    if _blocked_address(address):
        raise UrlNotAllowed(
            f"url points at {address}, a loopback, private or link-local address; "
            "deliveries go to public addresses only",
            param="url",
            object_name="webhook_endpoint",
        )
    return url


def resolved_target_problem(url: str, *, allow_private: bool) -> str | None:
    """At delivery time: every address the host resolves to must be public (SSRF)."""
    if allow_private:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if _blocked_address(address):
            return f"{host} resolves to {address}, a non-public address; not delivered"
    return None


def create_endpoint(ctx: Ctx, body: WebhookEndpointCreate) -> tuple[WebhookEndpoint, str]:
    url = check_url(body.url, allow_private=ctx.settings.allow_private_webhook_targets)
    endpoint = WebhookEndpoint(
        id=new_id("we"),
        account_id=ctx.account_id,
        url=url,
        events=sorted(set(body.events)) if "*" not in body.events else ["*"],
        status="enabled",
        created_at=ctx.now,
        updated_at=ctx.now,
        request_id=ctx.request_id,
    )
    ctx.session.add(endpoint)
    ctx.session.flush()
    secret = generate_secret()
    ctx.session.add(
        WebhookEndpointSecret(
            endpoint_id=endpoint.id, secret=secret, created_at=ctx.now, expires_at=None
        )
    )
    ctx.session.flush()
    return endpoint, secret


def get_endpoint(ctx: Ctx, endpoint_id: str, *, for_update: bool = False) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account_id == ctx.account_id
    )
    if for_update:
        query = query.with_for_update()
    endpoint = ctx.session.execute(query).scalar_one_or_none()
    if endpoint is None:
        raise NotFound("webhook_endpoint", endpoint_id)
    return endpoint


def list_endpoints(ctx: Ctx, page: Page) -> tuple[list[WebhookEndpoint], bool]:
    return list_page(ctx, WebhookEndpoint, page, object_name="webhook_endpoint")


def update_endpoint(ctx: Ctx, endpoint_id: str, body: WebhookEndpointUpdate) -> WebhookEndpoint:
    endpoint = get_endpoint(ctx, endpoint_id, for_update=True)
    if body.url is not None:
        endpoint.url = check_url(body.url, allow_private=ctx.settings.allow_private_webhook_targets)
    if body.events is not None:
        endpoint.events = sorted(set(body.events)) if "*" not in body.events else ["*"]
    endpoint.updated_at = ctx.now
    ctx.session.flush()
    return endpoint


def set_status(ctx: Ctx, endpoint_id: str, status: str) -> WebhookEndpoint:
    """Disabled endpoints keep their queued deliveries; enabling again sends them."""
    endpoint = get_endpoint(ctx, endpoint_id, for_update=True)
    endpoint.status = status
    endpoint.updated_at = ctx.now
    ctx.session.flush()
    return endpoint


def rotate_secret(
    ctx: Ctx, endpoint_id: str, overlap_seconds: int
) -> tuple[WebhookEndpoint, str, datetime]:
    """A new secret; the current ones keep signing until the overlap ends."""
    endpoint = get_endpoint(ctx, endpoint_id, for_update=True)
    expires_at = ctx.now + timedelta(seconds=overlap_seconds)
    ctx.session.execute(
        update(WebhookEndpointSecret)
        .where(
            WebhookEndpointSecret.endpoint_id == endpoint.id,
            or_(
                WebhookEndpointSecret.expires_at.is_(None),
                WebhookEndpointSecret.expires_at > expires_at,
            ),
        )
        .values(expires_at=expires_at)
    )
    secret = generate_secret()
    ctx.session.add(
        WebhookEndpointSecret(
            endpoint_id=endpoint.id, secret=secret, created_at=ctx.now, expires_at=None
        )
    )
    ctx.session.flush()
    return endpoint, secret, expires_at


def redeliver(ctx: Ctx, event_id: str, endpoint_id: str | None) -> list[WebhookDelivery]:
    """Queues one more delivery of the event to the named endpoint, or to each subscriber."""
    event = events.get(ctx, event_id)
    if endpoint_id is not None:
        targets = [get_endpoint(ctx, endpoint_id)]
    else:
        targets = [
            endpoint
            for endpoint in ctx.session.execute(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.account_id == ctx.account_id,
                    WebhookEndpoint.status == "enabled",
                )
            ).scalars()
            if "*" in endpoint.events or event.type in endpoint.events
        ]
        if not targets:
            raise ValidationFailed(
                f"no enabled webhook endpoint subscribes to {event.type}",
                param="webhook_endpoint",
                object_name="event",
            )
    deliveries = []
    for endpoint in targets:
        delivery = WebhookDelivery(
            id=new_id("whd"),
            account_id=ctx.account_id,
            endpoint_id=endpoint.id,
            event_id=event.id,
            event_seq=event.seq,
            status="pending",
            attempt_count=0,
            next_attempt_at=ctx.now,
            trigger="redeliver",
            created_at=ctx.now,
            request_id=ctx.request_id,
        )
        ctx.session.add(delivery)
        deliveries.append(delivery)
    ctx.session.flush()
    return deliveries


def deliveries_of(ctx: Ctx, event_id: str) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    event = events.get(ctx, event_id)
    deliveries = list(
        ctx.session.execute(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.account_id == ctx.account_id,
                WebhookDelivery.event_id == event.id,
            )
            .order_by(WebhookDelivery.seq)
        ).scalars()
    )
    attempts: dict[str, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        for attempt in ctx.session.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.seq)
        ).scalars():
            attempts[attempt.delivery_id].append(attempt)
    return [(d, attempts[d.id]) for d in deliveries]
