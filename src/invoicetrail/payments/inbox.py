"""Inbound provider events: the one two-step write (DESIGN). First the raw bytes and headers are
committed; then, in a second transaction, the signature is verified over exactly those bytes,
the event is deduped among verified events and its effects are applied."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from invoicetrail.core.clock import Clock
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import write_transaction
from invoicetrail.core.errors import ApiError, NotFound
from invoicetrail.core.faults import crash_point
from invoicetrail.core.http import Page
from invoicetrail.core.idempotency import log_request
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.exceptions import service as exceptions
from invoicetrail.payments import endpoints
from invoicetrail.payments import service as payments
from invoicetrail.payments.models import ProviderEvent, ProviderEventKey
from invoicetrail.payments.providers import (
    Evidence,
    UnprocessablePayload,
    VerificationFailed,
    standard_webhooks,
    stripe,
)

log = logging.getLogger("invoicetrail.inbox")

TOLERANCE_SECONDS = 300
# Never kept: they would only put a secret of someone else's into our table.
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True)
class Received:
    status_code: int
    body: dict[str, Any]


def _error(event_id: str, code: str, message: str, status_code: int = 400) -> Received:
    return Received(
        status_code,
        {
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": None,
                "retryable": False,
                "object": "provider_event",
                "provider_event": event_id,
            }
        },
    )


def store_raw(
    sessions: sessionmaker[Session],
    *,
    provider: str,
    endpoint_id: str,
    headers: dict[str, str],
    body: bytes,
    body_bytes: int,
    truncated: bool,
    request_id: str,
    clock: Clock,
) -> ProviderEvent:
    with write_transaction(sessions) as session:
        event = ProviderEvent(
            id=new_id("pev"),
            account_id=None,
            # The path is anyone's to choose; PostgreSQL text cannot hold U+0000 (%00).
            endpoint_id=endpoint_id[:300].replace("\x00", "\ufffd"),
            provider=provider[:64].replace("\x00", "\ufffd"),
            request_id=request_id,
            received_at=clock.now(),
            headers={k.lower(): v for k, v in headers.items() if k.lower() not in _DROPPED_HEADERS},
            body=body,
            body_bytes=body_bytes,
            body_truncated=truncated,
            verification="payload_too_large" if truncated else "pending",
            provider_event_id=None,
            event_type=None,
            outcome="refused" if truncated else "pending",
            outcome_detail=None,
        )
        session.add(event)
        session.commit()
    return event


def receive(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    *,
    provider: str,
    endpoint_id: str,
    headers: dict[str, str],
    body: bytes,
    request_id: str,
    body_bytes: int | None = None,
    truncated: bool = False,
) -> Received:
    """Store raw → verify → dedupe → apply. The HTTP route and the simulated provider share it."""
    raw = store_raw(
        sessions,
        provider=provider,
        endpoint_id=endpoint_id,
        headers=headers,
        body=body,
        body_bytes=len(body) if body_bytes is None else body_bytes,
        truncated=truncated,
        request_id=request_id,
        clock=clock,
    )
    crash_point("webhook_raw_stored")
    if truncated:
        return _error(
            raw.id,
            "payload_too_large",
            f"The body is larger than {settings.body_bytes_max} bytes",
            413,
        )
    try:
        return _verify_and_apply(sessions, clock, settings, raw.seq, headers, body, request_id)
    except Exception:
        log.exception("provider event %s failed to apply; the provider will retry", raw.id)
        with write_transaction(sessions) as session:
            stored = session.get(ProviderEvent, raw.seq)
            if stored is not None:
                stored.outcome = "failed"
                stored.outcome_detail = "internal error while applying; retry will reapply"
                session.commit()
        raise


def _verify_and_apply(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    seq: int,
    headers: dict[str, str],
    body: bytes,
    request_id: str,
) -> Received:
    with write_transaction(sessions) as session:
        event = session.execute(select(ProviderEvent).where(ProviderEvent.seq == seq)).scalar_one()
        now = clock.now()
        endpoint = endpoints.find_any(session, event.endpoint_id)
        if endpoint is None or endpoint.provider != event.provider:
            event.verification = "unknown_endpoint"
            event.outcome = "refused"
            session.commit()
            return _error(event.id, "unknown_endpoint", "No such provider endpoint")
        event.account_id = endpoint.account_id
        secrets = endpoints.current_secrets(session, endpoint.id, now)
        try:
            if endpoint.provider == "stripe":
                stripe.verify(body, headers, secrets, now, TOLERANCE_SECONDS)
                signed_event_id = None
            else:
                signed_event_id = standard_webhooks.verify(
                    body, headers, secrets, now, TOLERANCE_SECONDS
                )
        except VerificationFailed as failure:
            event.verification = failure.code
            event.outcome = "refused"
            event.outcome_detail = failure.message
            session.commit()
            return _error(event.id, failure.code, failure.message)
        event.verification = "verified"
        ctx = Ctx(
            session=session,
            account_id=endpoint.account_id,
            request_id=request_id,
            now=now,
            settings=settings,
            actor=f"provider:{endpoint.provider}",
        )
        try:
            evidence = (
                stripe.parse(body)
                if endpoint.provider == "stripe"
                else standard_webhooks.parse(body, signed_event_id or "")
            )
        except UnprocessablePayload as problem:
            event.outcome = "unprocessable"
            event.outcome_detail = str(problem)
            event.processed_at = now
            exceptions.raise_item(
                ctx,
                "unprocessable_event",
                refs={"provider_event": event.id},
                next_action=f"A signed {endpoint.provider} event could not be read ({problem}); "
                "ask the provider what it meant",
            )
            _log_receipt(session, event, endpoint.account_id)
            session.commit()
            return Received(200, _accepted(event))
        event.provider_event_id = evidence.provider_event_id[:255]
        event.event_type = evidence.event_type[:128]
        first = _claim_event_id(session, endpoint.id, evidence, event.id, now)
        if first is not None:
            event.outcome = "duplicate"
            event.outcome_detail = f"already received as {first}"
            event.processed_at = now
            session.commit()
            return Received(200, _accepted(event))
        try:
            outcome = payments.apply_evidence(
                ctx, evidence, provider=endpoint.provider, provider_event=event.id
            )
        except ApiError as refused:
            # A verified event is never bounced back to the provider: it is kept and flagged.
            session.rollback()
            return _record_refusal(sessions, clock, settings, seq, evidence, request_id, refused)
        event.outcome = outcome.outcome
        event.outcome_detail = outcome.detail
        event.invoice_id = outcome.invoice_id
        event.payment_id = outcome.payment.id if outcome.payment else None
        event.processed_at = now
        if outcome.outcome != "ignored":
            _log_receipt(session, event, endpoint.account_id)
        session.commit()
        return Received(200, _accepted(event))


def _claim_event_id(
    session: Session, endpoint_id: str, evidence: Evidence, event_id: str, now: Any
) -> str | None:
    """None when this is the first verified event with its id; else the first one's id.

    On PostgreSQL a concurrent copy waits here until the first commits, then sees it."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    inserted = session.execute(
        insert(ProviderEventKey)
        .values(
            endpoint_id=endpoint_id,
            provider_event_id=evidence.provider_event_id[:255],
            provider_event=event_id,
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(ProviderEventKey.provider_event)
    ).scalar_one_or_none()
    if inserted is not None:
        return None
    first: str = session.execute(
        select(ProviderEventKey.provider_event).where(
            ProviderEventKey.endpoint_id == endpoint_id,
            ProviderEventKey.provider_event_id == evidence.provider_event_id[:255],
        )
    ).scalar_one()
    return first


def _record_refusal(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    seq: int,
    evidence: Evidence,
    request_id: str,
    refused: ApiError,
) -> Received:
    with write_transaction(sessions) as session:
        event = session.execute(select(ProviderEvent).where(ProviderEvent.seq == seq)).scalar_one()
        assert event.account_id is not None
        ctx = Ctx(
            session=session,
            account_id=event.account_id,
            request_id=request_id,
            now=clock.now(),
            settings=settings,
            actor=f"provider:{event.provider}",
        )
        event.provider_event_id = evidence.provider_event_id[:255]
        event.event_type = evidence.event_type[:128]
        event.outcome = "unprocessable"
        event.outcome_detail = refused.message
        event.processed_at = ctx.now
        exceptions.raise_item(
            ctx,
            "unprocessable_event",
            refs={"provider_event": event.id, "invoice": evidence.invoice_id},
            next_action=f"A signed event could not be applied: {refused.message}",
        )
        _log_receipt(session, event, event.account_id)
        session.commit()
        return Received(200, _accepted(event))


def _log_receipt(session: Session, event: ProviderEvent, account_id: str) -> None:
    """The request log row of a verified provider request, committed with its effects: no
    API key means no `Write` logs it, and a trace starts from request ids. A refused request
    (bad signature, unknown endpoint), a repeat or an ignored type changes nothing, so it is
    kept as its provider event only."""
    log_request(
        session,
        request_id=event.request_id,
        account_id=account_id,
        idempotency_key=None,
        method="POST",
        path=f"/v1/providers/{event.provider}/webhooks/{event.endpoint_id}",
        status_code=200,
        object_id=event.id,
        actor=f"provider:{event.provider}",
        now=event.received_at,
    )


def _accepted(event: ProviderEvent) -> dict[str, Any]:
    return {
        "received": True,
        "provider_event": event.id,
        "outcome": event.outcome,
        "detail": event.outcome_detail,
    }


def get_event(ctx: Ctx, event_id: str) -> ProviderEvent:
    event = ctx.session.execute(
        select(ProviderEvent).where(
            ProviderEvent.id == event_id, ProviderEvent.account_id == ctx.account_id
        )
    ).scalar_one_or_none()
    if event is None:
        raise NotFound("provider_event", event_id)
    return event


def list_events(
    ctx: Ctx,
    page: Page,
    *,
    invoice_id: str | None,
    payment_id: str | None,
    verification: str | None,
) -> tuple[list[ProviderEvent], bool]:
    filters = []
    if invoice_id is not None:
        filters.append(ProviderEvent.invoice_id == invoice_id)
    if payment_id is not None:
        filters.append(ProviderEvent.payment_id == payment_id)
    if verification is not None:
        filters.append(ProviderEvent.verification == verification)
    return list_page(ctx, ProviderEvent, page, *filters, object_name="provider_event")


def for_invoice(ctx: Ctx, invoice_id: str, payment_ids: list[str]) -> list[ProviderEvent]:
    """Every stored event linked to the invoice or one of its payments, oldest first."""
    condition = ProviderEvent.invoice_id == invoice_id
    if payment_ids:
        condition = condition | ProviderEvent.payment_id.in_(payment_ids)
    return list(
        ctx.session.execute(
            select(ProviderEvent)
            .where(ProviderEvent.account_id == ctx.account_id, condition)
            .order_by(ProviderEvent.seq)
        ).scalars()
    )
