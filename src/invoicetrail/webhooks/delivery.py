"""The delivery worker: fan events out to subscribers, then send them signed, in order.

Fan-out claims events not yet fanned out (`FOR UPDATE SKIP LOCKED` on PostgreSQL, one fan-out
at a time under an advisory lock so that order survives several workers), so a crash
between a commit and its dispatch loses nothing: the event is still there for the next pass.
Sending takes a lease on an endpoint, so one worker at a time sends its first attempts in
event order; a failed delivery waits for its retry without holding back later events.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from invoicetrail.core.clock import Clock
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import read_session, write_transaction
from invoicetrail.core.faults import crash_point
from invoicetrail.core.ids import new_id
from invoicetrail.events.models import Event
from invoicetrail.events.schemas import EventOut
from invoicetrail.exceptions import service as exceptions
from invoicetrail.payments.providers import standard_webhooks
from invoicetrail.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointSecret,
)
from invoicetrail.webhooks.service import resolved_target_problem

log = logging.getLogger("invoicetrail.webhooks")

# After each failed attempt (SPEC): then every 24 h until 3 days after the first attempt.
RETRY_DELAYS = [
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
    timedelta(hours=8),
    timedelta(hours=16),
]
LATER_DELAY = timedelta(hours=24)
GIVE_UP_AFTER = timedelta(days=3)
JITTER = 0.10
SNIPPET_CHARS = 500
FAN_OUT_BATCH = 500
DELIVERY_BATCH = 100
CLAIMS_PER_PASS = 50
FAN_OUT_LOCK_KEY = 0x0E7E_F0_0D  # pg_try_advisory_xact_lock key of the fan-out


def next_attempt_after(
    failed_at: datetime, attempt_count: int, first_attempt_at: datetime, rng: random.Random
) -> datetime | None:
    """When to try again after `attempt_count` failed attempts; None once 3 days are over."""
    base = RETRY_DELAYS[attempt_count - 1] if attempt_count <= len(RETRY_DELAYS) else LATER_DELAY
    delay = base * (1 + rng.uniform(-JITTER, JITTER))
    deadline = first_attempt_at + GIVE_UP_AFTER
    if failed_at >= deadline:
        return None
    # The last try lands on the deadline rather than past it.
    return min(failed_at + delay, deadline)


def fan_out(sessions: sessionmaker[Session], clock: Clock) -> int:
    """Queues each new event for every endpoint that subscribes to it.

    Disabled endpoints are queued too (they are not claimed until enabled): whether an event
    reaches an endpoint must not depend on when the worker happened to fan it out.
    """
    now = clock.now()
    with write_transaction(sessions) as session:
        # One fan-out at a time (SQLite: the write lock). With two at once, one would skip
        # the events the other has locked, queue later ones and have them sent before the
        # earlier ones are committed: per-endpoint order would be lost.
        if (
            session.get_bind().dialect.name == "postgresql"
            and not session.execute(
                select(func.pg_try_advisory_xact_lock(FAN_OUT_LOCK_KEY))
            ).scalar_one()
        ):
            return 0  # another worker is fanning out; what it commits is sent in order
        rows = session.execute(
            select(Event.seq, Event.id, Event.account_id, Event.type, Event.created_at)
            .where(Event.fanned_out_at.is_(None))
            .order_by(Event.seq)
            .limit(FAN_OUT_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0
        endpoints: dict[str, list[WebhookEndpoint]] = defaultdict(list)
        for endpoint in session.execute(
            select(WebhookEndpoint).where(
                WebhookEndpoint.account_id.in_({r.account_id for r in rows}),
            )
        ).scalars():
            endpoints[endpoint.account_id].append(endpoint)
        queued: list[dict[str, Any]] = []
        for row in rows:
            for endpoint in endpoints.get(row.account_id, ()):
                subscribed = "*" in endpoint.events or row.type in endpoint.events
                if subscribed and row.created_at >= endpoint.created_at:
                    queued.append(
                        {
                            "id": new_id("whd"),
                            "account_id": row.account_id,
                            "endpoint_id": endpoint.id,
                            "event_id": row.id,
                            "event_seq": row.seq,
                            "status": "pending",
                            "attempt_count": 0,
                            "next_attempt_at": now,
                            "trigger": "event",
                            "created_at": now,
                            "request_id": None,
                        }
                    )
        if queued:
            session.execute(insert(WebhookDelivery), queued)
        session.execute(
            update(Event)
            .where(Event.seq.in_([r.seq for r in rows]))
            .values(fanned_out_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return len(rows)


def claim_endpoints(
    sessions: sessionmaker[Session],
    clock: Clock,
    worker_id: str,
    lease: timedelta,
    limit: int = 8,
) -> list[str]:
    """Leases endpoints with due deliveries: each is sent by one worker at a time."""
    now = clock.now()
    due = exists().where(
        WebhookDelivery.endpoint_id == WebhookEndpoint.id,
        WebhookDelivery.status == "pending",
        WebhookDelivery.next_attempt_at <= now,
    )
    with write_transaction(sessions) as session:
        ids = list(
            session.execute(
                select(WebhookEndpoint.id)
                .where(
                    WebhookEndpoint.status == "enabled",
                    or_(WebhookEndpoint.lease_until.is_(None), WebhookEndpoint.lease_until <= now),
                    due,
                )
                .order_by(WebhookEndpoint.lease_until.asc().nulls_first(), WebhookEndpoint.seq)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if ids:
            session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id.in_(ids))
                .values(lease_owner=worker_id, lease_until=now + lease)
            )
        session.commit()
    return ids


@dataclass
class _Due:
    delivery_id: str
    event_id: str
    account_id: str
    attempt_count: int
    first_attempt_at: datetime | None
    body: bytes
    invoice_id: str | None


def _load(
    sessions: sessionmaker[Session], endpoint_id: str, now: datetime
) -> tuple[str, list[str], list[_Due]]:
    with read_session(sessions) as session:
        endpoint = session.execute(
            select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        ).scalar_one()
        secrets = list(
            session.execute(
                select(WebhookEndpointSecret.secret)
                .where(
                    WebhookEndpointSecret.endpoint_id == endpoint_id,
                    or_(
                        WebhookEndpointSecret.expires_at.is_(None),
                        WebhookEndpointSecret.expires_at > now,
                    ),
                )
                .order_by(WebhookEndpointSecret.seq.desc())
            ).scalars()
        )
        rows = session.execute(
            select(WebhookDelivery, Event)
            .join(Event, Event.id == WebhookDelivery.event_id)
            .where(
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.event_seq, WebhookDelivery.seq)
            .limit(DELIVERY_BATCH)
        ).all()
        due = []
        for delivery, event in rows:
            out = EventOut.of(event)
            obj = out.data.get("object") or {}
            invoice_id = obj.get("invoice") if isinstance(obj.get("invoice"), str) else None
            if str(obj.get("id", "")).startswith("in_"):
                invoice_id = obj["id"]
            due.append(
                _Due(
                    delivery.id,
                    event.id,
                    delivery.account_id,
                    delivery.attempt_count,
                    delivery.first_attempt_at,
                    out.model_dump_json().encode(),
                    invoice_id,
                )
            )
        return endpoint.url, secrets, due


def _signature_headers(secrets: list[str], event_id: str, body: bytes) -> dict[str, str]:
    # The timestamp is the wall clock of this attempt: receivers check it against theirs.
    signed_at = datetime.now(UTC)
    signatures = [
        standard_webhooks.sign(body, secret, event_id, signed_at)["webhook-signature"]
        for secret in secrets
    ]
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(signed_at.timestamp())),
        # Every unexpired secret signs, so a receiver verifies before and after a rotation.
        "webhook-signature": " ".join(signatures),
        "user-agent": "invoicetrail-webhooks/1",
    }


@dataclass
class _Outcome:
    status_code: int | None
    latency_ms: int
    snippet: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _post(
    client: httpx.Client, url: str, body: bytes, headers: dict[str, str], allow_private: bool
) -> _Outcome:
    problem = resolved_target_problem(url, allow_private=allow_private)
    if problem is not None:
        return _Outcome(None, 0, None, problem)
    started = time.perf_counter()
    try:
        response = client.post(url, content=body, headers=headers)
        snippet = response.text[:SNIPPET_CHARS] if response.content else None
        elapsed = int((time.perf_counter() - started) * 1000)
        return _Outcome(response.status_code, elapsed, snippet, None)
    except httpx.HTTPError as exc:
        elapsed = int((time.perf_counter() - started) * 1000)
        return _Outcome(None, elapsed, None, f"{type(exc).__name__}: {exc}"[:SNIPPET_CHARS])


def _record(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    worker_id: str,
    endpoint_id: str,
    item: _Due,
    outcome: _Outcome,
    rng: random.Random,
) -> bool:
    """Stores the attempt; False if the lease was lost (another worker owns the endpoint)."""
    now = clock.now()
    with write_transaction(sessions) as session:
        endpoint = session.execute(
            select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).with_for_update()
        ).scalar_one()
        delivery = session.execute(
            select(WebhookDelivery).where(WebhookDelivery.id == item.delivery_id).with_for_update()
        ).scalar_one()
        if delivery.status != "pending" or delivery.attempt_count != item.attempt_count:
            # Another worker took the endpoint over and already recorded this delivery.
            session.commit()
            return False
        attempt = delivery.attempt_count + 1
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                attempt=attempt,
                attempted_at=now,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                response_snippet=outcome.snippet,
                error=outcome.error,
                worker=worker_id,
            )
        )
        delivery.attempt_count = attempt
        delivery.first_attempt_at = delivery.first_attempt_at or now
        delivery.last_attempt_at = now
        if outcome.ok:
            delivery.status = "succeeded"
            delivery.next_attempt_at = None
        else:
            retry_at = next_attempt_after(now, attempt, delivery.first_attempt_at, rng)
            delivery.next_attempt_at = retry_at
            if retry_at is None:
                delivery.status = "failed"
                ctx = Ctx(session, item.account_id, new_id("req"), now, settings, actor="worker")
                what = f"HTTP {outcome.status_code}" if outcome.status_code else outcome.error
                exceptions.raise_item(
                    ctx,
                    "webhook_delivery_failed",
                    refs={
                        "invoice": item.invoice_id,
                        "event": item.event_id,
                        "webhook_endpoint": endpoint_id,
                    },
                    next_action=(
                        f"Event {item.event_id} could not be delivered to {endpoint.url} in 3 days "
                        f"({attempt} attempts, last: {what}); fix the receiver, then "
                        f"POST /v1/events/{item.event_id}/redeliver"
                    ),
                )
        still_ours = endpoint.lease_owner == worker_id
        if still_ours:
            endpoint.lease_until = now + timedelta(seconds=settings.webhook_lease_seconds)
        session.commit()
        return still_ours


def _release(
    sessions: sessionmaker[Session], endpoint_id: str, worker_id: str, now: datetime
) -> None:
    # `lease_until = now`: free at once, and last in line behind endpoints not served lately.
    with write_transaction(sessions) as session:
        session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.lease_owner == worker_id)
            .values(lease_owner=None, lease_until=now)
        )
        session.commit()


def deliver_due(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    worker_id: str,
    client: httpx.Client | None = None,
    rng: random.Random | None = None,
) -> int:
    """One pass: fan out, then send what is due for each endpoint this worker can lease."""
    rng = rng or random.Random()
    while fan_out(sessions, clock) == FAN_OUT_BATCH:
        pass
    own_client = client is None
    client = client or httpx.Client(
        timeout=settings.webhook_timeout_seconds, follow_redirects=False
    )
    lease = timedelta(seconds=settings.webhook_lease_seconds)
    sent = 0
    try:
        # One endpoint at a time, least recently served first: several workers share the
        # endpoints instead of one taking them all, and each stays in order.
        for _ in range(CLAIMS_PER_PASS):
            claimed = claim_endpoints(sessions, clock, worker_id, lease, limit=1)
            if not claimed:
                break
            endpoint_id = claimed[0]
            try:
                url, secrets, due = _load(sessions, endpoint_id, clock.now())
                for item in due:
                    headers = _signature_headers(secrets, item.event_id, item.body)
                    outcome = _post(
                        client, url, item.body, headers, settings.allow_private_webhook_targets
                    )
                    sent += 1
                    crash_point("delivery_sent_before_record")
                    if not _record(
                        sessions, clock, settings, worker_id, endpoint_id, item, outcome, rng
                    ):
                        log.warning("lost the lease on %s; another worker continues", endpoint_id)
                        break
            finally:
                _release(sessions, endpoint_id, worker_id, clock.now())
    finally:
        if own_client:
            client.close()
    return sent


def prune_expired(session: Session, now: datetime, retention_days: int) -> int:
    """Deliveries and attempts go with their events (the same retention)."""
    cutoff = now - timedelta(days=retention_days)
    old = select(WebhookDelivery.id).where(WebhookDelivery.created_at < cutoff)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(old)))
    result = session.execute(delete(WebhookDelivery).where(WebhookDelivery.created_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
