"""Accounts, secret keys and legal entities: the only writer of their tables."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from invoicetrail.accounts.models import Account, ApiKey, LegalEntity
from invoicetrail.accounts.schemas import LegalEntityCreate
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import Conflict, NotFound, Unauthorized
from invoicetrail.core.http import Page, Principal
from invoicetrail.core.ids import new_id, random_alnum
from invoicetrail.core.listing import list_page

KEY_LOOKUP_LENGTH = 16
KEY_SECRET_LENGTH = 32
DEFAULT_COUNTRY = "US"
DEFAULT_NUMBER_PREFIX = "INV"
_KEY_SHAPE = re.compile(rf"^sk_[A-Za-z0-9]{{{KEY_LOOKUP_LENGTH + KEY_SECRET_LENGTH}}}$")


def secret_sha256(secret_key: str) -> str:
    return hashlib.sha256(secret_key.encode()).hexdigest()


def secrets_match(presented_sha256: str, stored_sha256: str) -> bool:
    """Constant-time: the comparison never stops at the first differing character."""
    return hmac.compare_digest(presented_sha256.encode(), stored_sha256.encode())


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret_key: str


def _issue_key(
    session: Session, account_id: str, now: datetime, request_id: str | None
) -> IssuedKey:
    lookup = random_alnum(KEY_LOOKUP_LENGTH)
    secret_key = f"sk_{lookup}{random_alnum(KEY_SECRET_LENGTH)}"
    key = ApiKey(
        id=new_id("key"),
        account_id=account_id,
        lookup=lookup,
        secret_sha256=secret_sha256(secret_key),
        created_at=now,
        expires_at=None,
        request_id=request_id,
    )
    session.add(key)
    return IssuedKey(key=key, secret_key=secret_key)


@dataclass(frozen=True)
class CreatedAccount:
    account: Account
    secret_key: str


def create_account(
    session: Session, *, name: str, country: str | None, now: datetime, is_demo: bool = False
) -> CreatedAccount:
    account = Account(
        id=new_id("acct"),
        name=name,
        country=(country or DEFAULT_COUNTRY).upper(),
        is_demo=is_demo,
        created_at=now,
    )
    session.add(account)
    session.flush()
    session.add(
        LegalEntity(
            id=new_id("le"),
            account_id=account.id,
            name=name,
            country=account.country,
            address={"country": account.country},
            tax_ids=[],
            number_prefix=DEFAULT_NUMBER_PREFIX,
            is_default=True,
            created_at=now,
        )
    )
    issued = _issue_key(session, account.id, now, None)
    session.flush()
    return CreatedAccount(account=account, secret_key=issued.secret_key)


def issue_additional_key(session: Session, account_id: str, now: datetime) -> str:
    """CLI/demo: a fresh key beside the existing ones (we never store a key to show it again)."""
    return _issue_key(session, account_id, now, None).secret_key


def find_demo_account(session: Session) -> Account | None:
    return session.execute(
        select(Account).where(Account.is_demo.is_(True)).order_by(Account.seq.desc()).limit(1)
    ).scalar_one_or_none()


def count_accounts(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(Account)).scalar_one())


def get_account(session: Session, account_id: str) -> Account:
    account = session.execute(select(Account).where(Account.id == account_id)).scalar_one_or_none()
    if account is None:
        raise NotFound("account", account_id)
    return account


def authenticate(session: Session, authorization: str | None, now: datetime) -> Principal:
    if not authorization:
        raise Unauthorized(
            "No API key provided; send 'Authorization: Bearer sk_…'", code="api_key_missing"
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _KEY_SHAPE.match(token):
        raise Unauthorized("Invalid API key provided")
    lookup = token[3 : 3 + KEY_LOOKUP_LENGTH]
    key = session.execute(select(ApiKey).where(ApiKey.lookup == lookup)).scalar_one_or_none()
    presented = secret_sha256(token)
    # Compare even when no row matched, so a miss costs the same as a wrong secret.
    stored = key.secret_sha256 if key is not None else "0" * 64
    if not secrets_match(presented, stored) or key is None:
        raise Unauthorized("Invalid API key provided")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("This API key has expired; use the key that replaced it")
    return Principal(account_id=key.account_id, key_id=key.id)


def active_key(session: Session, key_id: str, now: datetime) -> ApiKey | None:
    """The key if it still works (not expired): console sessions end with their key."""
    key = session.execute(select(ApiKey).where(ApiKey.id == key_id)).scalar_one_or_none()
    if key is None or (key.expires_at is not None and key.expires_at <= now):
        return None
    return key


@dataclass(frozen=True)
class RotatedKey:
    issued: IssuedKey
    previous_expires_at: datetime


def rotate_keys(ctx: Ctx, overlap_seconds: int | None) -> RotatedKey:
    """A new key; every current key keeps working until the overlap ends."""
    overlap = timedelta(
        seconds=ctx.settings.api_key_rotation_overlap_seconds
        if overlap_seconds is None
        else overlap_seconds
    )
    expires_at = ctx.now + overlap
    ctx.session.execute(
        update(ApiKey)
        .where(
            ApiKey.account_id == ctx.account_id,
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > expires_at),
        )
        .values(expires_at=expires_at)
    )
    issued = _issue_key(ctx.session, ctx.account_id, ctx.now, ctx.request_id)
    ctx.session.flush()
    return RotatedKey(issued=issued, previous_expires_at=expires_at)


# --- legal entities ----------------------------------------------------------------------------


def create_legal_entity(ctx: Ctx, body: LegalEntityCreate) -> LegalEntity:
    # Prefix → entity: a prefix numbers one entity's invoices, so it is unique per account.
    prefixes = {
        prefix: entity_id
        for prefix, entity_id in ctx.session.execute(
            select(LegalEntity.number_prefix, LegalEntity.id).where(
                LegalEntity.account_id == ctx.account_id
            )
        )
    }
    number_prefix = body.number_prefix
    if number_prefix is not None and number_prefix in prefixes:
        raise Conflict(
            f"number_prefix '{number_prefix}' is already used by legal entity "
            f"{prefixes[number_prefix]}; choose another",
            param="number_prefix",
            object_name="legal_entity",
            code="duplicate_number_prefix",
            extra={"existing_id": prefixes[number_prefix]},
        )
    counter = len(prefixes) + 1
    while number_prefix is None or number_prefix in prefixes:
        number_prefix = f"{DEFAULT_NUMBER_PREFIX}{counter}"
        counter += 1
    address = body.address.model_dump(exclude_none=True) if body.address else {}
    address.setdefault("country", body.country)
    entity = LegalEntity(
        id=new_id("le"),
        account_id=ctx.account_id,
        name=body.name,
        country=body.country,
        address=address,
        tax_ids=[t.model_dump() for t in body.tax_ids],
        peppol_id=body.peppol_id,
        registration_id=body.registration_id,
        bank_account=body.bank_account.model_dump(exclude_none=True) if body.bank_account else None,
        cfdi=body.cfdi.model_dump(exclude_none=True) if body.cfdi else None,
        myinvois=body.myinvois.model_dump(exclude_none=True) if body.myinvois else None,
        contact=body.contact.model_dump(exclude_none=True) if body.contact else None,
        number_prefix=number_prefix,
        is_default=False,
        created_at=ctx.now,
        request_id=ctx.request_id,
    )
    ctx.session.add(entity)
    ctx.session.flush()
    return entity


def get_legal_entity(ctx: Ctx, entity_id: str, *, param: str | None = None) -> LegalEntity:
    entity = ctx.session.execute(
        select(LegalEntity).where(
            LegalEntity.id == entity_id, LegalEntity.account_id == ctx.account_id
        )
    ).scalar_one_or_none()
    if entity is None:
        raise NotFound("legal_entity", entity_id, param=param)
    return entity


def default_legal_entity(ctx: Ctx) -> LegalEntity:
    return ctx.session.execute(
        select(LegalEntity).where(
            LegalEntity.account_id == ctx.account_id, LegalEntity.is_default.is_(True)
        )
    ).scalar_one()


def list_legal_entities(ctx: Ctx, page: Page) -> tuple[list[LegalEntity], bool]:
    return list_page(ctx, LegalEntity, page, object_name="legal_entity")
