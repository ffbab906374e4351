"""Provider endpoints and their secrets: the only writer of these two tables."""

from __future__ import annotations

import base64
import secrets as random_secrets
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from invoicetrail.accounts import control
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import NotFound, ValidationFailed
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.payments.models import ProviderEndpoint, ProviderEndpointSecret
from invoicetrail.payments.providers import standard_webhooks

PROVIDERS = ("stripe", "standard_webhooks", "simulated")
SECRET_LENGTH_MAX = 512


def generate_secret() -> str:
    """`whsec_` + base64 of 32 random bytes: valid for both schemes."""
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


def _check_secret(provider: str, secret: str, param: str) -> None:
    if provider in ("standard_webhooks", "simulated") and not standard_webhooks.is_valid_secret(
        secret
    ):
        raise ValidationFailed(
            f"{param} must be 'whsec_' followed by base64 of at least 16 bytes",
            param=param,
            object_name="provider_endpoint",
        )
    if not secret.strip() or len(secret) > SECRET_LENGTH_MAX:
        raise ValidationFailed(
            f"{param} must be 1–{SECRET_LENGTH_MAX} characters",
            param=param,
            object_name="provider_endpoint",
        )


def create(
    ctx: Ctx, provider: str, secret: str | None, *, livemode: bool = False
) -> tuple[ProviderEndpoint, str | None]:
    """Returns the endpoint and, when we generated the secret, that secret (shown once)."""
    if livemode:
        if provider == "simulated":
            raise ValidationFailed(
                "the simulated provider moves no money; it has no live mode",
                param="livemode",
                object_name="provider_endpoint",
            )
        control.require_gate(
            ctx, control.KYB, action="live payment collection", object_name="provider_endpoint"
        )
    generated = None
    if secret is None:
        secret = generated = generate_secret()
    _check_secret(provider, secret, "secret")
    endpoint = ProviderEndpoint(
        id=new_id("pe"),
        account_id=ctx.account_id,
        provider=provider,
        livemode=livemode,
        created_at=ctx.now,
        request_id=ctx.request_id,
    )
    ctx.session.add(endpoint)
    ctx.session.flush()
    ctx.session.add(
        ProviderEndpointSecret(
            endpoint_id=endpoint.id, secret=secret, created_at=ctx.now, expires_at=None
        )
    )
    ctx.session.flush()
    return endpoint, generated


def rotate_secret(
    ctx: Ctx, endpoint_id: str, secret: str | None, overlap_seconds: int
) -> tuple[ProviderEndpoint, str | None, datetime]:
    endpoint = get(ctx, endpoint_id)
    generated = None
    if secret is None:
        secret = generated = generate_secret()
    _check_secret(endpoint.provider, secret, "secret")
    expires_at = ctx.now + timedelta(seconds=overlap_seconds)
    ctx.session.execute(
        update(ProviderEndpointSecret)
        .where(
            ProviderEndpointSecret.endpoint_id == endpoint.id,
            or_(
                ProviderEndpointSecret.expires_at.is_(None),
                ProviderEndpointSecret.expires_at > expires_at,
            ),
        )
        .values(expires_at=expires_at)
    )
    ctx.session.add(
        ProviderEndpointSecret(
            endpoint_id=endpoint.id, secret=secret, created_at=ctx.now, expires_at=None
        )
    )
    ctx.session.flush()
    return endpoint, generated, expires_at


def get(ctx: Ctx, endpoint_id: str) -> ProviderEndpoint:
    endpoint = ctx.session.execute(
        select(ProviderEndpoint).where(
            ProviderEndpoint.id == endpoint_id, ProviderEndpoint.account_id == ctx.account_id
        )
    ).scalar_one_or_none()
    if endpoint is None:
        raise NotFound("provider_endpoint", endpoint_id)
    return endpoint


def find_simulated(ctx: Ctx) -> ProviderEndpoint | None:
    return ctx.session.execute(
        select(ProviderEndpoint)
        .where(
            ProviderEndpoint.account_id == ctx.account_id,
            ProviderEndpoint.provider == "simulated",
        )
        .order_by(ProviderEndpoint.seq)
        .limit(1)
    ).scalar_one_or_none()


def list_endpoints(ctx: Ctx, page: Page) -> tuple[list[ProviderEndpoint], bool]:
    return list_page(ctx, ProviderEndpoint, page, object_name="provider_endpoint")


def current_secrets(session: Session, endpoint_id: str, now: datetime) -> list[str]:
    return list(
        session.execute(
            select(ProviderEndpointSecret.secret)
            .where(
                ProviderEndpointSecret.endpoint_id == endpoint_id,
                or_(
                    ProviderEndpointSecret.expires_at.is_(None),
                    ProviderEndpointSecret.expires_at > now,
                ),
            )
            .order_by(ProviderEndpointSecret.seq.desc())
        ).scalars()
    )


def find_any(session: Session, endpoint_id: str) -> ProviderEndpoint | None:
    """Inbound route: the endpoint by id alone (the URL carries no key)."""
    return session.execute(
        select(ProviderEndpoint).where(ProviderEndpoint.id == endpoint_id)
    ).scalar_one_or_none()
