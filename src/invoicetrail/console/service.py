"""Console sign-in: a session per secret key, kept as a hash, with its own CSRF token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from invoicetrail.accounts import service as accounts
from invoicetrail.console.models import ConsoleSession
from invoicetrail.core.http import Principal

SESSION_LIFETIME = timedelta(hours=12)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(presented: str | None, expected: str) -> bool:
    """Constant-time: a CSRF token is a secret the page holds."""
    if not presented or not expected:
        return False  # an absent token never matches an absent cookie
    return hmac.compare_digest(presented.encode(), expected.encode())


def sign_in(session: Session, principal: Principal, now: datetime) -> str:
    """Returns the cookie value; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_sha256=_sha256(token),
            account_id=principal.account_id,
            api_key_id=principal.key_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    # Expired sessions of anyone go as others sign in: the table stays small.
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    session.flush()
    return token


def find(session: Session, token: str | None, now: datetime) -> ConsoleSession | None:
    if not token or len(token) > 100:
        return None
    row = session.execute(
        select(ConsoleSession).where(ConsoleSession.token_sha256 == _sha256(token))
    ).scalar_one_or_none()
    if row is None or row.expires_at <= now:
        return None
    if accounts.active_key(session, row.api_key_id, now) is None:
        return None
    return row


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_sha256 == _sha256(token)))
