"""Fault injection for the reliability suite: named crash points. Never set in production.

`crash_point("before_commit")` sits on real code paths. It does nothing unless the
environment variable `INVOICETRAIL_CRASH_AT` names that point when this module is imported:
`name` (crash at the first hit) or `name:N` (crash at the N-th hit in this process). On that
hit the process sends itself SIGKILL: no `finally`, no rollback, no log flush, no graceful
shutdown, exactly like a power cut or the OOM killer. The database sees a connection drop.

The variable is read once, at import: the check on hot paths is a set lookup and one
comparison. An unknown point name always raises, so a typo at a call site fails every test
that runs through it instead of silently never crashing.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Final

ENV_VARIABLE: Final = "INVOICETRAIL_CRASH_AT"

CRASH_POINTS: Final = (
    # API write (core/http.py): the Idempotency-Key is claimed (PostgreSQL advisory lock
    # held) and nothing is written yet. Recovery: the lock dies with the connection and
    # the retry runs the request for the first time.
    "idempotency_locked",
    # Invoice create (invoices/service.py): the invoice row and its lines are flushed, not
    # committed. Recovery: the retry creates exactly one invoice.
    "invoice_row_written",
    # API write (core/http.py): the command ran and its answer is stored on the key row,
    # the commit is next. Recovery: all of it rolled back; the retry runs it once.
    "before_commit",
    # API write (core/http.py): committed, the client has not had the answer. Recovery: the
    # retry with the same key is a replay of the stored answer.
    "after_commit_before_response",
    # Provider webhook (payments/inbox.py): the raw bytes and headers are committed, not yet
    # verified or applied. Recovery: the provider's retry of the event applies it once.
    "webhook_raw_stored",
    # Ledger (ledger/service.py `post`): a journal entry and its lines are flushed inside
    # the caller's transaction. Recovery: no half posting; the retry posts it once.
    "posting_written",
    # ERP export (exports/service.py): the batch row and its membership are inserted, its
    # summary not. Recovery: no batch; the retry builds one holding every line.
    "export_mid_batch",
    # Webhook delivery (webhooks/delivery.py): the subscriber answered, the attempt is not
    # recorded. Recovery: the next worker sends it again (at least once), recorded once.
    "delivery_sent_before_record",
)

_KNOWN: Final = frozenset(CRASH_POINTS)


def _parse(value: str | None) -> tuple[str | None, int]:
    """`name` or `name:N` → (name, N); (None, 0) when unset."""
    if not value:
        return None, 0
    name, _, count = value.strip().partition(":")
    if name not in _KNOWN:
        raise ValueError(
            f"{ENV_VARIABLE}={value!r} names no crash point; known: {', '.join(CRASH_POINTS)}"
        )
    hit = int(count) if count else 1
    if hit < 1:
        raise ValueError(f"{ENV_VARIABLE}={value!r}: the hit number counts from 1")
    return name, hit


_TARGET, _TARGET_HIT = _parse(os.environ.get(ENV_VARIABLE))
_hits = 0
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILLs this process when `name` is the configured point and its hit has come."""
    if name not in _KNOWN:
        raise ValueError(f"unknown crash point {name!r}; known: {', '.join(CRASH_POINTS)}")
    if name != _TARGET:
        return
    global _hits
    with _lock:
        _hits += 1
        due = _hits == _TARGET_HIT
    if due:
        os.kill(os.getpid(), signal.SIGKILL)
