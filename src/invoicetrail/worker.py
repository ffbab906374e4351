"""The background loop: claims due work from the database; every job is idempotent by key."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.orm import Session, sessionmaker

from invoicetrail.core import idempotency
from invoicetrail.core.clock import Clock, SystemClock
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import make_engine, make_sessionmaker, read_session, write_transaction
from invoicetrail.core.ids import new_id
from invoicetrail.einvoicing import service as einvoicing
from invoicetrail.einvoicing.transports import Transport
from invoicetrail.events import service as events
from invoicetrail.exceptions import service as exceptions
from invoicetrail.invoices import dunning
from invoicetrail.invoices import email as invoice_email
from invoicetrail.payments import jobs as payments_jobs
from invoicetrail.reconciliation import service as reconciliation
from invoicetrail.webhooks import delivery as webhook_delivery

log = logging.getLogger("invoicetrail.worker")
DUNNING_SCAN_INTERVAL = timedelta(hours=1)
RECONCILE_ACCOUNTS_PER_PASS = 5


@dataclass
class PassReport:
    idempotency_keys_pruned: int = 0
    events_pruned: int = 0
    simulated_events_sent: int = 0
    snoozed_items_woken: int = 0
    reconciliation_runs: int = 0
    webhook_attempts: int = 0
    reminders_queued: int = 0
    emails_sent: int = 0
    einvoices_progressed: int = 0

    @property
    def busy(self) -> bool:
        return bool(
            self.webhook_attempts
            or self.emails_sent
            or self.simulated_events_sent
            or self.einvoices_progressed
        )


class Worker:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        einvoice_transports: Mapping[str, Transport] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine = make_engine(settings)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
        self._stop = threading.Event()
        # One keep-alive client for the worker's life: connections to subscribers are reused.
        self.http = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)
        self._dunning_due_at: datetime | None = None
        # One transport per market for the worker's life (each keeps its connections/tokens).
        self.einvoice_transports = (
            einvoice_transports
            if einvoice_transports is not None
            else einvoicing.default_transports(settings)
        )
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('wk')[-6:]}"

    def run_once(self) -> PassReport:
        """Everything due now, each item as far as it can go; never waits for future work."""
        report = PassReport()
        report.simulated_events_sent = payments_jobs.send_due_simulated_events(
            self.sessions, self.clock, self.settings
        )
        report.webhook_attempts = webhook_delivery.deliver_due(
            self.sessions, self.clock, self.settings, self.worker_id, client=self.http
        )
        # Reminders go by calendar day, so a scan an hour is enough; queued first, so a
        # reminder due now also goes out in this pass.
        if self._dunning_due_at is None or self.clock.now() >= self._dunning_due_at:
            report.reminders_queued = dunning.queue_due_reminders(
                self.sessions, self.clock, self.settings
            )
            self._dunning_due_at = self.clock.now() + DUNNING_SCAN_INTERVAL
        report.emails_sent = invoice_email.send_due_emails(self.sessions, self.clock, self.settings)
        report.einvoices_progressed = einvoicing.process_due(
            self.sessions, self.clock, self.settings, self.einvoice_transports
        )
        now = self.clock.now()
        with write_transaction(self.sessions) as session:
            report.snoozed_items_woken = exceptions.wake_snoozed(session, now, self.settings)
            session.commit()
        if self.settings.reconcile_daily:
            report.reconciliation_runs = self._reconcile_daily()
        with write_transaction(self.sessions) as session:
            report.idempotency_keys_pruned = idempotency.prune_expired(session, now)
            webhook_delivery.prune_expired(session, now, self.settings.event_retention_days)
            report.events_pruned = events.prune_expired(
                session, now, self.settings.event_retention_days
            )
            session.commit()
        return report

    def _reconcile_daily(self) -> int:
        """One run per account per day; each in its own transaction, so one failure is local."""
        now = self.clock.now()
        with read_session(self.sessions) as session:
            due = reconciliation.accounts_due(session, now.date())
        ran = 0
        # A few accounts a pass, so deliveries and e-mail never wait behind a long day of runs.
        for account_id in due[:RECONCILE_ACCOUNTS_PER_PASS]:
            try:
                with write_transaction(self.sessions) as session:
                    if not reconciliation.claim_daily(session, account_id, now.date()):
                        continue
                    ctx = Ctx(
                        session, account_id, new_id("req"), now, self.settings, actor="worker"
                    )
                    reconciliation.run(ctx, now.date(), trigger="schedule")
                    session.commit()
                    ran += 1
            except Exception:  # one account's failure must not hold back the others
                log.exception("daily reconciliation of %s failed; retried next pass", account_id)
        return ran

    def run_forever(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        log.info("worker started (poll every %ss)", self.settings.worker_poll_interval_seconds)
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.run_once().busy
            except Exception:  # a failed pass is logged and retried on the next tick
                log.exception("worker pass failed")
            # Work begets work (more deliveries due, the next batch of e-mails): sleep only
            # when a pass found nothing to do.
            if not busy:
                self._stop.wait(self.settings.worker_poll_interval_seconds)
        self.close()

    def close(self) -> None:
        self.http.close()
        self.engine.dispose()
