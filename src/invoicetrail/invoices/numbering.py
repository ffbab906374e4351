"""Gapless document numbers per legal entity: `<prefix>-<YYYY>-<counter>`."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from stdnum.iso7064 import mod_37_36

from invoicetrail.core.context import Ctx
from invoicetrail.invoices.models import Invoice, NumberSequence

COUNTER_DIGITS = 6
# Crockford's alphabet: no I, L, O, U, so a reference read aloud or retyped survives.
_REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_BODY_LENGTH = 8


def next_counter(ctx: Ctx, legal_entity_id: str, kind: str) -> int:
    """Concurrent finalizes of one entity queue on this row lock until the first commits."""
    stmt = (
        select(NumberSequence)
        .where(NumberSequence.legal_entity_id == legal_entity_id, NumberSequence.kind == kind)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    sequence = ctx.session.execute(stmt).scalar_one_or_none()
    if sequence is None:
        dialect = ctx.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        ctx.session.execute(
            insert(NumberSequence)
            .values(legal_entity_id=legal_entity_id, kind=kind, last_value=0)
            .on_conflict_do_nothing()
        )
        sequence = ctx.session.execute(stmt).scalar_one()
    sequence.last_value += 1
    return sequence.last_value


def format_number(prefix: str, year: int, counter: int) -> str:
    return f"{prefix}-{year:04d}-{counter:0{COUNTER_DIGITS}d}"


def compact_reference(value: str) -> str:
    return "".join(ch for ch in value.upper() if ch not in " -\t")


def display_reference(compact: str) -> str:
    return f"{compact[:4]}-{compact[4:8]}-{compact[8:]}"


def is_valid_reference(value: str) -> bool:
    compact = compact_reference(value)
    return len(compact) == REFERENCE_BODY_LENGTH + 1 and bool(mod_37_36.is_valid(compact))


def new_bank_transfer_reference(ctx: Ctx) -> str:
    """8 characters + an ISO 7064 MOD 37-36 check character, unique within the account."""
    while True:
        body = "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(REFERENCE_BODY_LENGTH))
        reference = display_reference(body + mod_37_36.calc_check_digit(body))
        taken = ctx.session.execute(
            select(Invoice.id).where(
                Invoice.account_id == ctx.account_id,
                Invoice.bank_transfer_reference == reference,
            )
        ).first()
        if taken is None:
            return reference
