"""The e-invoicing branch: documents issued after finalize, their validation and submission.

The invoice core calls `issue` in the transaction that finalizes an invoice (or creates a
credit note / records a payment); the document is generated there, so it can be served at
once, and validated and submitted by the worker. Each market has its own queue and transport:
a transport that fails holds back only its own market.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from invoicetrail.accounts import service as accounts
from invoicetrail.accounts.models import LegalEntity
from invoicetrail.core.clock import Clock, as_utc, iso_instant
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import write_transaction
from invoicetrail.core.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.customers import service as customers
from invoicetrail.customers.models import Customer
from invoicetrail.einvoicing import validation
from invoicetrail.einvoicing.facts import Address, DocumentFacts, Party
from invoicetrail.einvoicing.models import EInvoice, EInvoiceCertificate
from invoicetrail.einvoicing.schemas import EInvoiceOut
from invoicetrail.einvoicing.transports import (
    CancelRefused,
    SubmitResult,
    Transport,
    TransportUnavailable,
)
from invoicetrail.events import service as events
from invoicetrail.exceptions import service as exceptions

log = logging.getLogger("invoicetrail.einvoicing")

AWAITING_APPROVAL, PENDING, SUBMITTED = "awaiting_approval", "pending", "submitted"
ACCEPTED, REJECTED, CANCELLED = "accepted", "rejected", "cancelled"
# The only moves a submission makes; anything else is a bug or a refused request.
TRANSITIONS: dict[str, frozenset[str]] = {
    AWAITING_APPROVAL: frozenset({PENDING, CANCELLED}),
    PENDING: frozenset({SUBMITTED, ACCEPTED, REJECTED, CANCELLED}),
    SUBMITTED: frozenset({ACCEPTED, REJECTED}),
    ACCEPTED: frozenset({CANCELLED}),
    REJECTED: frozenset(),
    CANCELLED: frozenset(),
}
MEDIA_TYPES = {
    "peppol": "application/xml",
    "cfdi": "application/xml",
    "myinvois": "application/json",
}
NEEDS_CORRECTION, RETRYABLE = "needs_correction", "retryable"
NEEDS_CORRECTION_KIND = "einvoice_needs_correction"
SUBMISSION_DELAYED_KIND = "einvoice_submission_delayed"
CORRECTION_DUE = timedelta(hours=24)
# Transport failures: back off, then keep trying at the last step; an item is raised once
# the market has been unreachable for this document this many times.
RETRY_DELAYS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=4),
    timedelta(hours=12),
)
DELAYED_ITEM_AFTER_ATTEMPTS = 5
POLL_DELAYS = (timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10))
CLAIM_LEASE = timedelta(minutes=5)
# Outcomes are recorded per batch: small, so a crash loses (and resends) little.
CLAIM_BATCH_SIZE = 20
FINDINGS_IN_ITEM_MAX = 20


def _transition(row: EInvoice, to: str) -> None:
    if to not in TRANSITIONS[row.status]:
        raise AssertionError(f"einvoice {row.id}: {row.status} → {to} is not allowed")
    row.status = to


def _history(ctx: Ctx, row: EInvoice, action: str, **extra: Any) -> None:
    entry = {
        "at": iso_instant(ctx.now),
        "action": action,
        "actor": ctx.actor,
        "request_id": ctx.request_id,
    }
    entry.update({k: v for k, v in extra.items() if v is not None})
    row.history = [*row.history, entry]
    row.updated_at = ctx.now


# --- parties ---------------------------------------------------------------------------


def _address(raw: dict[str, Any] | None, country: str | None = None) -> Address:
    raw = raw or {}
    return Address(
        line1=raw.get("line1"),
        line2=raw.get("line2"),
        city=raw.get("city"),
        postal_code=raw.get("postal_code"),
        state=raw.get("state"),
        country=(raw.get("country") or country or "").upper() or None,
    )


def seller_party(entity: LegalEntity) -> Party:
    return Party(
        name=entity.name,
        address=_address(entity.address, entity.country),
        tax_ids=tuple((t["type"], t["value"]) for t in entity.tax_ids),
        peppol_id=entity.peppol_id,
        registration_id=entity.registration_id,
        email=(entity.contact or {}).get("email"),
        phone=(entity.contact or {}).get("phone"),
        contact_name=(entity.contact or {}).get("name"),
        cfdi=dict(entity.cfdi or {}),
        myinvois=dict(entity.myinvois or {}),
    )


def buyer_party(customer: Customer) -> Party:
    return Party(
        name=customer.name or "",
        address=_address(customer.address),
        tax_ids=tuple((t["type"], t["value"]) for t in customer.tax_ids),
        peppol_id=customer.peppol_id,
        registration_id=None,
        email=customer.email,
        cfdi=dict(customer.cfdi or {}),
        myinvois=dict(customer.myinvois or {}),
    )


# --- documents -------------------------------------------------------------------------


def _certificate(ctx: Ctx, facts: DocumentFacts, legal_entity_id: str) -> Any:
    """The entity's CSD; a generated test one until the issuer configures its own."""
    from invoicetrail.einvoicing import cfdi

    row = ctx.session.get(EInvoiceCertificate, (legal_entity_id, "cfdi"))
    if row is None:
        rfc = facts.seller.tax_id("mx_rfc") or ""
        csd = cfdi.generate_test_csd(rfc, facts.seller.name)
        row = EInvoiceCertificate(
            legal_entity_id=legal_entity_id,
            regime="cfdi",
            certificate_der=csd.certificate_der,
            private_key_pem=csd.private_key_pem,
            number=csd.number,
            test=csd.test,
            created_at=ctx.now,
        )
        ctx.session.add(row)
        ctx.session.flush()
    return cfdi.Csd(
        certificate_der=row.certificate_der,
        private_key_pem=row.private_key_pem,
        number=row.number,
        test=row.test,
    )


def build_document(ctx: Ctx, facts: DocumentFacts, legal_entity_id: str) -> tuple[bytes, bool]:
    """(document bytes, signed with a test certificate)."""
    if facts.regime == "peppol":
        from invoicetrail.einvoicing import peppol

        return peppol.build_ubl(facts), False
    if facts.regime == "cfdi":
        from invoicetrail.einvoicing import cfdi

        csd = _certificate(ctx, facts, legal_entity_id)
        return cfdi.build_cfdi(replace(facts, test=csd.test), csd), bool(csd.test)
    if facts.regime == "myinvois":
        from invoicetrail.einvoicing import myinvois

        return myinvois.build_myinvois(facts), False
    raise ValueError(f"unknown regime {facts.regime!r}")


def issue(
    ctx: Ctx,
    facts: DocumentFacts,
    *,
    legal_entity_id: str,
    market: str,
    invoice_id: str,
    credit_note_id: str | None = None,
    payment_id: str | None = None,
) -> EInvoice:
    """Generates the document in the caller's transaction and queues it for the worker."""
    try:
        document, test = build_document(ctx, facts, legal_entity_id)
    except ValueError as exc:
        # The pre-checks let through something the generator cannot express: refuse the
        # whole write (the caller's transaction rolls back) instead of failing later.
        raise ValidationFailed(
            f"this {facts.document_type.replace('_', ' ')} cannot be expressed as a "
            f"{facts.regime} document: {exc}",
            object_name=facts.document_type,
            code="einvoice_unsupported",
            extra={"regime": facts.regime},
        ) from None
    row = EInvoice(
        id=new_id("ein"),
        account_id=ctx.account_id,
        legal_entity_id=legal_entity_id,
        regime=facts.regime,
        market=market,
        document_type=facts.document_type,
        invoice_id=invoice_id,
        credit_note_id=credit_note_id,
        payment_id=payment_id,
        status=PENDING,
        test=test,
        facts=replace(facts, test=test).to_json(),
        document=document,
        media_type=MEDIA_TYPES[facts.regime],
        document_sha256=hashlib.sha256(document).hexdigest(),
        findings=None,
        attempt_count=0,
        next_attempt_at=ctx.now,
        history=[],
        created_at=ctx.now,
        updated_at=ctx.now,
        request_id=ctx.request_id,
    )
    _history(ctx, row, "generated", document_sha256=row.document_sha256)
    ctx.session.add(row)
    ctx.session.flush()
    events.record(ctx, "einvoice.created", EInvoiceOut.of(row))
    return row


# --- reading ---------------------------------------------------------------------------


def get(ctx: Ctx, einvoice_id: str, *, for_update: bool = False) -> EInvoice:
    stmt = select(EInvoice).where(EInvoice.account_id == ctx.account_id, EInvoice.id == einvoice_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = ctx.session.execute(stmt).scalar_one_or_none()
    if row is None:
        raise NotFound("einvoice", einvoice_id)
    return row


def list_einvoices(
    ctx: Ctx, page: Page, *, invoice_id: str | None = None, credit_note_id: str | None = None
) -> tuple[list[EInvoice], bool]:
    filters = []
    if invoice_id is not None:
        # An invoice's submissions include those of its credit notes (SPEC).
        filters.append(EInvoice.invoice_id == invoice_id)
    if credit_note_id is not None:
        filters.append(EInvoice.credit_note_id == credit_note_id)
    return list_page(ctx, EInvoice, page, *filters, object_name="einvoice")


def for_invoice(ctx: Ctx, invoice_id: str) -> list[EInvoice]:
    return list(
        ctx.session.execute(
            select(EInvoice)
            .where(EInvoice.account_id == ctx.account_id, EInvoice.invoice_id == invoice_id)
            .order_by(EInvoice.seq)
        ).scalars()
    )


def current_for_invoice(
    ctx: Ctx, invoice_id: str, document_type: str = "invoice"
) -> EInvoice | None:
    """The invoice's live document of that type: the last one not superseded."""
    rows = [
        row
        for row in for_invoice(ctx, invoice_id)
        if row.document_type == document_type and row.superseded_by_id is None
    ]
    return rows[-1] if rows else None


# --- corrections, approval, cancellation -----------------------------------------------


def correct(ctx: Ctx, einvoice_id: str, note: str | None) -> EInvoice:
    """A new document from the seller's and buyer's current data; submitted only after a
    second actor's approval. The invoice (number, lines, amounts, journal) does not change."""
    old = get(ctx, einvoice_id, for_update=True)
    failure = old.failure or {}
    if old.status != REJECTED or failure.get("class") != NEEDS_CORRECTION:
        raise InvalidTransition(
            "einvoice", old.id, old.status, "correct", "a document rejected as needs_correction"
        )
    if old.superseded_by_id is not None:
        raise Conflict(
            f"einvoice {old.id} was already corrected by {old.superseded_by_id}",
            object_name="einvoice",
            code="einvoice_already_corrected",
            extra={"superseded_by": old.superseded_by_id},
        )
    facts = DocumentFacts.from_json(old.facts)
    seller = seller_party(accounts.get_legal_entity(ctx, old.legal_entity_id))
    buyer = facts.buyer
    if facts.customer_id is not None:
        buyer = buyer_party(customers.get(ctx, facts.customer_id))
    facts = replace(facts, seller=seller, buyer=buyer)
    document, test = build_document(ctx, facts, old.legal_entity_id)
    report = validation.validate(document, old.regime)
    if not report.valid:
        rules = sorted({f.rule for f in report.fatal})
        raise ValidationFailed(
            f"the corrected {old.regime} document still fails: {', '.join(rules)}; fix the "
            "customer or legal entity data and try again",
            object_name="einvoice",
            code="einvoice_invalid",
            extra={"regime": old.regime, "findings": [f.out() for f in report.fatal][:20]},
        )
    new = EInvoice(
        id=new_id("ein"),
        account_id=ctx.account_id,
        legal_entity_id=old.legal_entity_id,
        regime=old.regime,
        market=old.market,
        document_type=old.document_type,
        invoice_id=old.invoice_id,
        credit_note_id=old.credit_note_id,
        payment_id=old.payment_id,
        status=AWAITING_APPROVAL,
        test=test,
        facts=replace(facts, test=test).to_json(),
        document=document,
        media_type=old.media_type,
        document_sha256=hashlib.sha256(document).hexdigest(),
        findings=report.stored(),
        validated_at=ctx.now,
        attempt_count=0,
        next_attempt_at=None,
        supersedes_id=old.id,
        correction_requested_by=ctx.actor,
        history=[],
        created_at=ctx.now,
        updated_at=ctx.now,
        request_id=ctx.request_id,
    )
    _history(ctx, new, "correction_prepared", supersedes=old.id, note=note)
    ctx.session.add(new)
    old.superseded_by_id = new.id
    _history(ctx, old, "superseded", superseded_by=new.id)
    ctx.session.flush()
    exceptions.annotate_matching(
        ctx,
        refs={"invoice": old.invoice_id, "einvoice": old.id},
        kind=NEEDS_CORRECTION_KIND,
        action="correction_prepared",
        note=f"corrected document {new.id} awaits a second person's approval"
        + (f": {note}" if note else ""),
    )
    events.record(ctx, "einvoice.created", EInvoiceOut.of(new))
    return new


def approve(ctx: Ctx, einvoice_id: str, note: str | None) -> EInvoice:
    row = get(ctx, einvoice_id, for_update=True)
    if row.status != AWAITING_APPROVAL:
        raise InvalidTransition("einvoice", row.id, row.status, "approve", "awaiting_approval")
    if row.correction_requested_by == ctx.actor:
        raise Conflict(
            f"einvoice {row.id} was prepared by {ctx.actor}; a different person must approve it",
            object_name="einvoice",
            code="second_approval_required",
            extra={"prepared_by": row.correction_requested_by},
        )
    _transition(row, PENDING)
    row.approved_by = ctx.actor
    row.next_attempt_at = ctx.now
    _history(ctx, row, "approved", note=note)
    if row.supersedes_id is not None:
        exceptions.resolve_matching(
            ctx,
            refs={"invoice": row.invoice_id, "einvoice": row.supersedes_id},
            kind=NEEDS_CORRECTION_KIND,
            note=f"corrected as {row.id} (prepared by {row.correction_requested_by}, approved by "
            f"{ctx.actor})" + (f": {note}" if note else ""),
        )
    ctx.session.flush()
    events.record(ctx, "einvoice.updated", EInvoiceOut.of(row))
    return row


def _myinvois_window_closed(ctx: Ctx, row: EInvoice) -> Conflict | None:
    if row.regime != "myinvois" or row.cancellation_deadline_at is None:
        return None
    deadline = as_utc(row.cancellation_deadline_at)
    if ctx.now <= deadline:
        return None
    return Conflict(
        f"einvoice {row.id}: the MyInvois 72-hour cancellation window closed at "
        f"{iso_instant(deadline)}; issue a credit note (or a debit or refund note) instead",
        object_name="einvoice",
        code="cancellation_window_closed",
        extra={"cancellation_deadline": iso_instant(deadline), "requires": "credit_note"},
    )


def cancel(ctx: Ctx, einvoice_id: str, reason: str) -> EInvoice:
    row = get(ctx, einvoice_id, for_update=True)
    _request_cancel(ctx, row, reason)
    ctx.session.flush()
    events.record(ctx, "einvoice.updated", EInvoiceOut.of(row))
    return row


def _request_cancel(ctx: Ctx, row: EInvoice, reason: str) -> None:
    if row.status in (PENDING, AWAITING_APPROVAL):
        # Never handed over: nothing to cancel at the authority.
        _transition(row, CANCELLED)
        row.cancelled_at = ctx.now
        row.cancel_reason = reason
        row.next_attempt_at = None
        _history(ctx, row, "cancelled", note=reason)
        return
    if row.status != ACCEPTED or row.cancel_requested_at is not None:
        raise InvalidTransition(
            "einvoice", row.id, row.status, "cancel", "an accepted document not being cancelled"
        )
    closed = _myinvois_window_closed(ctx, row)
    if closed is not None:
        raise closed
    row.cancel_requested_at = ctx.now
    row.cancel_reason = reason
    row.next_attempt_at = ctx.now
    _history(ctx, row, "cancellation_requested", note=reason)


def before_invoice_void(ctx: Ctx, invoice_id: str) -> None:
    """Voiding an invoice cancels its document; past MyInvois' window it needs a credit note."""
    for row in for_invoice(ctx, invoice_id):
        if row.document_type != "invoice" or row.superseded_by_id is not None:
            continue
        if row.status in (REJECTED, CANCELLED) or row.cancel_requested_at is not None:
            continue
        if row.status == SUBMITTED:
            raise Conflict(
                f"einvoice {row.id} is still with the {row.regime} authority; void once it is "
                "accepted or rejected",
                object_name="invoice",
                code="einvoice_in_flight",
                retryable=True,
                extra={"einvoice": row.id},
            )
        closed = _myinvois_window_closed(ctx, row)
        if closed is not None:
            closed.object_name = "invoice"
            raise closed
        _request_cancel(ctx, row, "invoice voided")
        events.record(ctx, "einvoice.updated", EInvoiceOut.of(row))


# --- the worker: validation and submission, per market ---------------------------------


@dataclass(frozen=True)
class Claimed:
    einvoice_id: str
    account_id: str
    regime: str
    status: str
    document_type: str
    document: bytes
    validated: bool
    external_id: str | None
    external_detail: dict[str, Any]
    cancel_reason: str | None
    attempt: int


@dataclass(frozen=True)
class Outcome:
    kind: str  # validated_invalid | result | unavailable | cancelled | cancel_refused | skipped
    report: validation.Report | None = None
    result: SubmitResult | None = None
    message: str | None = None
    # The built-in sandbox answers at once: its times are the queue's clock, not the wall's.
    sandbox: bool = False


TransportFactory = Callable[[Settings], Mapping[str, Transport]]


def default_transports(settings: Settings) -> dict[str, Transport]:
    from invoicetrail.einvoicing.access_point import access_point_transport
    from invoicetrail.einvoicing.myinvois_api import myinvois_transport
    from invoicetrail.einvoicing.pac import pac_transport

    return {
        "peppol": access_point_transport(settings),
        "cfdi": pac_transport(settings),
        "myinvois": myinvois_transport(settings),
    }


def _claim(sessions: sessionmaker[Session], clock: Clock, regime: str) -> list[Claimed]:
    with write_transaction(sessions) as session:
        now = clock.now()
        stmt = (
            select(EInvoice)
            .where(
                EInvoice.regime == regime,
                EInvoice.status.in_((PENDING, SUBMITTED, ACCEPTED)),
                EInvoice.next_attempt_at <= now,
                or_(EInvoice.status != ACCEPTED, EInvoice.cancel_requested_at.is_not(None)),
            )
            .order_by(EInvoice.next_attempt_at, EInvoice.seq)
            .limit(CLAIM_BATCH_SIZE)
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = list(session.execute(stmt).scalars())
        claimed = []
        for row in rows:
            row.attempt_count += 1
            row.next_attempt_at = now + CLAIM_LEASE
            claimed.append(
                Claimed(
                    einvoice_id=row.id,
                    account_id=row.account_id,
                    regime=row.regime,
                    status=row.status,
                    document_type=row.document_type,
                    document=row.document,
                    validated=row.validated_at is not None,
                    external_id=row.external_id,
                    external_detail=dict(row.external_detail or {}),
                    cancel_reason=row.cancel_reason,
                    attempt=row.attempt_count,
                )
            )
        session.commit()
    return claimed


def _attempt(claimed: Claimed, transport: Transport) -> Outcome:
    try:
        if claimed.status == ACCEPTED:
            transport.cancel(
                claimed.external_id or "", claimed.external_detail, claimed.cancel_reason or ""
            )
            return Outcome("cancelled")
        if claimed.status == SUBMITTED:
            return Outcome(
                "result", result=transport.poll(claimed.external_id or "", claimed.external_detail)
            )
        report = None
        if not claimed.validated:
            report = validation.validate(claimed.document, claimed.regime)
            if not report.valid:
                return Outcome("validated_invalid", report=report)
        result = transport.submit(
            claimed.document, einvoice_id=claimed.einvoice_id, document_type=claimed.document_type
        )
        return Outcome("result", report=report, result=result)
    except TransportUnavailable as exc:
        return Outcome("unavailable", message=str(exc) or type(exc).__name__)
    except CancelRefused as exc:
        return Outcome("cancel_refused", message=str(exc))


def process_due(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    transports: Mapping[str, Transport] | None = None,
) -> int:
    """Worker: every due document, market by market; returns how many moved forward.

    A market whose transport is unreachable stops for this pass after its first failure (its
    other documents are rescheduled untouched); the other markets go on.
    """
    transports = transports if transports is not None else default_transports(settings)
    progressed = 0
    for regime, transport in transports.items():
        while True:
            batch = _claim(sessions, clock, regime)
            if not batch:
                break
            down: str | None = None
            results: list[tuple[Claimed, Outcome]] = []
            for claimed in batch:
                if down is not None:
                    outcome = Outcome("unavailable", message=down)
                else:
                    try:
                        outcome = _attempt(claimed, transport)
                    except Exception as exc:  # an adapter bug: recorded, retried, market goes on
                        log.exception(
                            "einvoice %s: the %s transport failed", claimed.einvoice_id, regime
                        )
                        outcome = Outcome("unavailable", message=f"internal error: {exc!r}")
                    if outcome.kind == "unavailable":
                        down = outcome.message
                outcome = replace(outcome, sandbox=transport.sandbox)
                results.append((claimed, outcome))
            progressed += _record(sessions, clock, settings, results)
            if down is not None:
                break
    return progressed


def _worker_ctx(session: Session, account_id: str, now: datetime, settings: Settings) -> Ctx:
    return Ctx(session, account_id, new_id("req"), now, settings, actor="worker")


def _retry_delay(attempt: int) -> timedelta:
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1]


def _record(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    results: list[tuple[Claimed, Outcome]],
) -> int:
    """The outcomes of a batch in one transaction, each in a savepoint of its own: a
    recording bug loses one document's answer (retried after its lease), not the batch's."""
    if not results:
        return 0
    moved = 0
    with write_transaction(sessions) as session:
        now = clock.now()
        ids = [claimed.einvoice_id for claimed, _ in results]
        rows = {
            row.id: row
            for row in session.execute(
                select(EInvoice).where(EInvoice.id.in_(ids)).with_for_update()
            ).scalars()
        }
        for claimed, outcome in results:
            row = rows[claimed.einvoice_id]
            if row.attempt_count != claimed.attempt or row.status != claimed.status:
                continue  # another worker took it over after our lease ran out
            ctx = _worker_ctx(session, claimed.account_id, now, settings)
            try:
                with session.begin_nested():
                    moved += _apply(ctx, row, claimed, outcome)
            except Exception:
                log.exception("einvoice %s: recording its outcome failed", claimed.einvoice_id)
        session.commit()
    return moved


def _apply(ctx: Ctx, row: EInvoice, claimed: Claimed, outcome: Outcome) -> bool:
    if outcome.report is not None:
        row.findings = outcome.report.stored()
        row.validated_at = ctx.now
    if outcome.kind == "validated_invalid":
        assert outcome.report is not None
        fatal = outcome.report.fatal
        _needs_correction(
            ctx,
            row,
            stage="validation",
            rules=[{"rule": f.rule, "message": f.message, "location": f.location} for f in fatal],
        )
        return True
    if outcome.kind == "unavailable":
        row.failure = {
            "class": RETRYABLE,
            "stage": "cancellation" if row.status == ACCEPTED else "transport",
            "message": (outcome.message or "")[:1000],
            "attempts": row.attempt_count,
        }
        row.next_attempt_at = ctx.now + _retry_delay(row.attempt_count)
        _history(ctx, row, "retry_scheduled", note=row.failure["message"][:200])
        if row.attempt_count == DELAYED_ITEM_AFTER_ATTEMPTS:
            exceptions.raise_item(
                ctx,
                SUBMISSION_DELAYED_KIND,
                refs={"invoice": row.invoice_id, "einvoice": row.id},
                next_action=f"The {row.regime} service has failed {row.attempt_count} times for "
                f"{row.id}; check the market's credentials and status. Retries continue.",
                detail={"regime": row.regime, "message": row.failure["message"][:500]},
                area=f"compliance_markets.{row.market}",
            )
        return False
    if outcome.kind == "cancelled":
        _transition(row, CANCELLED)
        row.cancelled_at = ctx.now
        row.next_attempt_at = None
        row.failure = None
        _history(ctx, row, "cancelled", note=row.cancel_reason)
        events.record(ctx, "einvoice.updated", EInvoiceOut.of(row))
        return True
    if outcome.kind == "cancel_refused":
        row.failure = {
            "class": NEEDS_CORRECTION,
            "stage": "cancellation",
            "message": outcome.message,
        }
        row.cancel_requested_at = None
        row.next_attempt_at = None
        _history(ctx, row, "cancellation_refused", note=outcome.message)
        exceptions.raise_item(
            ctx,
            NEEDS_CORRECTION_KIND,
            refs={"invoice": row.invoice_id, "einvoice": row.id},
            next_action=f"The {row.regime} authority refused to cancel {row.id}: "
            f"{outcome.message}. Issue a credit note instead.",
            detail={"regime": row.regime, "stage": "cancellation"},
            due_in=CORRECTION_DUE,
            area=f"compliance_markets.{row.market}",
        )
        events.record(ctx, "einvoice.updated", EInvoiceOut.of(row))
        return True
    result = outcome.result
    assert result is not None
    row.failure = None
    if result.external_id:
        row.external_id = result.external_id
    if result.detail:
        row.external_detail = {**(row.external_detail or {}), **result.detail}
    if result.status == "submitted":
        moved = row.status == PENDING
        if moved:
            _transition(row, SUBMITTED)
            row.submitted_at = ctx.now
            row.attempt_count = 0  # from here on, attempts count polls
            _history(ctx, row, "submitted", external_id=row.external_id)
            events.record(ctx, "einvoice.updated", EInvoiceOut.of(row))
        row.next_attempt_at = ctx.now + POLL_DELAYS[min(row.attempt_count, len(POLL_DELAYS) - 1)]
        return moved
    if result.status == "accepted":
        if row.submitted_at is None:
            row.submitted_at = ctx.now
        _transition(row, ACCEPTED)
        row.accepted_at = ctx.now if outcome.sandbox else (result.accepted_at or ctx.now)
        row.next_attempt_at = None
        if row.regime == "myinvois":
            from invoicetrail.einvoicing.myinvois import cancellation_deadline

            row.cancellation_deadline_at = cancellation_deadline(row.accepted_at)
        _history(ctx, row, "accepted", external_id=row.external_id)
        events.record(ctx, "einvoice.updated", EInvoiceOut.of(row))
        return True
    _needs_correction(ctx, row, stage="authority", rules=list(result.findings))
    return True


def _needs_correction(ctx: Ctx, row: EInvoice, *, stage: str, rules: list[dict[str, Any]]) -> None:
    _transition(row, REJECTED)
    row.next_attempt_at = None
    rule_ids = sorted({str(r.get("rule")) for r in rules})
    row.failure = {
        "class": NEEDS_CORRECTION,
        "stage": stage,
        "rules": rules[:FINDINGS_IN_ITEM_MAX],
        "message": f"{row.regime} {stage} failed: {', '.join(rule_ids)}",
    }
    _history(ctx, row, "rejected", note=row.failure["message"][:300])
    exceptions.raise_item(
        ctx,
        NEEDS_CORRECTION_KIND,
        refs={"invoice": row.invoice_id, "einvoice": row.id},
        next_action=f"Fix the data behind {', '.join(rule_ids)}, then POST /v1/einvoices/"
        f"{row.id}/correct; a second person approves the corrected document before it goes.",
        detail={
            "regime": row.regime,
            "stage": stage,
            "rules": rule_ids,
            "findings": rules[:FINDINGS_IN_ITEM_MAX],
        },
        due_in=CORRECTION_DUE,
        area=f"compliance_markets.{row.market}",
    )
    events.record(ctx, "einvoice.updated", EInvoiceOut.of(row))
