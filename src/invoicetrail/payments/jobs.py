"""Worker entry points of the payments domain."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from invoicetrail.core.clock import Clock
from invoicetrail.core.config import Settings
from invoicetrail.core.db import write_transaction
from invoicetrail.core.ids import new_id
from invoicetrail.payments import endpoints, inbox, simulated
from invoicetrail.payments.providers import standard_webhooks


def send_due_simulated_events(
    sessions: sessionmaker[Session], clock: Clock, settings: Settings
) -> int:
    """Signs each due simulated event like a real sender and feeds it to the inbox."""
    sent = 0
    while True:
        with write_transaction(sessions) as session:
            now = clock.now()
            due = [
                (event.id, event.endpoint_id, event.body, event.seq)
                for event in simulated.claim_due(session, now)
            ]
            secrets = {
                endpoint_id: endpoints.current_secrets(session, endpoint_id, now)
                for endpoint_id in {endpoint_id for _, endpoint_id, _, _ in due}
            }
            session.commit()
        if not due:
            return sent
        for event_id, endpoint_id, body, _seq in due:
            if not secrets[endpoint_id]:
                continue
            headers = standard_webhooks.sign(
                body, secrets[endpoint_id][0], f"msg_{event_id}", clock.now()
            )
            received = inbox.receive(
                sessions,
                clock,
                settings,
                provider="simulated",
                endpoint_id=endpoint_id,
                headers=headers,
                body=body,
                request_id=new_id("req"),
            )
            with write_transaction(sessions) as session:
                simulated.mark_delivered(
                    session, event_id, received.body.get("provider_event"), clock.now()
                )
                session.commit()
            sent += 1
