"""Invoice e-mail: `send` and dunning queue an `InvoiceEmail`; the worker sends it over SMTP.

Nothing leaves the process inside a request. The worker claims due rows in a short
transaction (a lease: `next_attempt_at` moves past the SMTP timeout), talks to the mail
server outside any transaction, then records the outcome in another short one. A crash
between the server's acceptance and that record resends after the lease with the same
`Message-ID` (derived from the row id), so the copy is recognisable.

With `INVOICETRAIL_SMTP_URL` unset, `send` keeps marking the invoice delivered at once (the
platform delivers it) and nothing is queued; see docs/delivery.md.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from invoicetrail.core.clock import Clock, iso_instant
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import read_session, write_transaction
from invoicetrail.core.errors import NotFound, ValidationFailed
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.core.money import format_display
from invoicetrail.customers import service as customers
from invoicetrail.events import service as events
from invoicetrail.exceptions import service as exceptions
from invoicetrail.invoices.models import Invoice, InvoiceEmail
from invoicetrail.invoices.schemas import InvoiceOut

log = logging.getLogger("invoicetrail.email")

PENDING, SENT, FAILED, CANCELLED = "pending", "sent", "failed", "cancelled"
PURPOSE_INVOICE = "invoice"
REMINDER_PREFIX = "reminder:"
SMTP_TIMEOUT_SECONDS: Final = 10.0
# A claimed e-mail is another worker's again after this long (a crash mid-send).
CLAIM_LEASE: Final = timedelta(minutes=5)
CLAIM_BATCH_SIZE: Final = 20
# Waits after the 1st, 2nd, … failed attempt; past the last one the e-mail is `failed`.
RETRY_DELAYS: Final = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)
ATTEMPTS_MAX: Final = len(RETRY_DELAYS) + 1
ERROR_LENGTH_MAX: Final = 1000
DELIVERY_FAILED_KIND = "invoice_delivery_failed"


def reminder_purpose(offset_days: int) -> str:
    return f"{REMINDER_PREFIX}{offset_days}"


# --- API shape ---------------------------------------------------------------------------


class InvoiceEmailOut(BaseModel):
    id: str
    object: str = "invoice_email"
    invoice: str
    purpose: str
    to_address: str | None
    status: str
    attempt_count: int
    next_attempt_at: str | None
    message_id: str | None
    error: str | None
    sent_at: str | None
    created: str | None

    @classmethod
    def of(cls, row: InvoiceEmail) -> InvoiceEmailOut:
        return cls(
            id=row.id,
            invoice=row.invoice_id,
            purpose=row.purpose,
            to_address=row.to_address,
            status=row.status,
            attempt_count=row.attempt_count,
            next_attempt_at=iso_instant(row.next_attempt_at),
            message_id=row.message_id,
            error=row.error,
            sent_at=iso_instant(row.sent_at),
            created=iso_instant(row.created_at),
        )


def list_for_invoice(ctx: Ctx, invoice_id: str, page: Page) -> tuple[list[InvoiceEmail], bool]:
    exists = ctx.session.execute(
        select(Invoice.id).where(Invoice.id == invoice_id, Invoice.account_id == ctx.account_id)
    ).scalar_one_or_none()
    if exists is None:
        raise NotFound("invoice", invoice_id)
    return list_page(
        ctx, InvoiceEmail, page, InvoiceEmail.invoice_id == invoice_id, object_name="invoice_email"
    )


# --- queueing (inside the caller's transaction) -------------------------------------------


def customer_email(ctx: Ctx, invoice: Invoice) -> str | None:
    return customers.get(ctx, invoice.customer_id).email or None


def find(ctx: Ctx, invoice_id: str, purpose: str) -> InvoiceEmail | None:
    return ctx.session.execute(
        select(InvoiceEmail).where(
            InvoiceEmail.account_id == ctx.account_id,
            InvoiceEmail.invoice_id == invoice_id,
            InvoiceEmail.purpose == purpose,
        )
    ).scalar_one_or_none()


def queue(ctx: Ctx, invoice: Invoice, purpose: str, to_address: str) -> InvoiceEmail | None:
    """One e-mail per (invoice, purpose): pending or sent → nothing changes (None);
    failed or cancelled → queued again with the current address."""
    existing = find(ctx, invoice.id, purpose)
    if existing is not None and existing.status in (PENDING, SENT):
        return None
    row = existing or InvoiceEmail(
        id=new_id("iem"),
        account_id=ctx.account_id,
        invoice_id=invoice.id,
        purpose=purpose,
        created_at=ctx.now,
    )
    row.to_address = to_address
    row.status = PENDING
    row.attempt_count = 0
    row.next_attempt_at = ctx.now
    row.message_id = None
    row.error = None
    row.sent_at = None
    row.updated_at = ctx.now
    row.request_id = ctx.request_id
    if existing is None:
        ctx.session.add(row)
    ctx.session.flush()
    return row


def queue_invoice_email(ctx: Ctx, invoice: Invoice) -> InvoiceEmail | None:
    """`send`: the invoice goes out on the next worker pass (SMTP) or at once (file sink)."""
    existing = find(ctx, invoice.id, PURPOSE_INVOICE)
    if existing is not None and existing.status in (PENDING, SENT):
        return None
    address = customer_email(ctx, invoice)
    if address is None and not ctx.settings.smtp_url:
        # Nobody to write to and no server to fail: the platform delivers it (SPEC: `send`
        # never fails for want of a mail server).
        invoice.delivered_at = invoice.delivered_at or ctx.now
        return None
    if address is None:
        raise ValidationFailed(
            f"customer {invoice.customer_id} has no email; set customer.email before invoice "
            f"{invoice.id} can be sent",
            param="customer.email",
            object_name="invoice",
            code="parameter_missing",
        )
    row = queue(ctx, invoice, PURPOSE_INVOICE, address)
    if row is not None and not ctx.settings.smtp_url:
        _write_now(ctx, invoice, row)
    return row


def _write_now(ctx: Ctx, invoice: Invoice, row: InvoiceEmail) -> None:
    """The file sink accepts at once, inside the send request; a disk error leaves the e-mail
    pending for the worker's retries rather than failing `send`."""
    row.attempt_count = 1
    claimed = Claimed(row.id, ctx.account_id, invoice.id, row.purpose, row.to_address or "", 1)
    try:
        filename, pdf_bytes = _render_invoice_pdf(ctx, invoice.id)
        message = compose(ctx, claimed, filename, pdf_bytes)
        _write_eml(Path(ctx.settings.mail_dir), message)
    except (OSError, ValueError) as exc:
        log.warning("e-mail %s left for the worker: %s", row.id, exc)
        row.error = f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH_MAX]
        return
    row.status = SENT
    row.sent_at = ctx.now
    row.message_id = message["Message-ID"]
    row.next_attempt_at = None
    invoice.delivered_at = invoice.delivered_at or ctx.now


# --- transport ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpTransport:
    host: str
    port: int
    implicit_tls: bool  # smtps://
    starttls: bool
    username: str | None
    password: str | None
    timeout_seconds: float = SMTP_TIMEOUT_SECONDS


@dataclass(frozen=True)
class FileTransport:
    """No mail server configured: each message becomes `<mail_dir>/<iem_…>.eml` (SPEC)."""

    directory: Path


Transport = SmtpTransport | FileTransport

_TRUE = {"1", "true", "yes", "on"}


def transport_for(settings: Settings) -> Transport:
    if settings.smtp_url:
        return parse_smtp_url(settings.smtp_url)
    return FileTransport(Path(settings.mail_dir))


def parse_smtp_url(url: str) -> SmtpTransport:
    """`smtp://[user:pass@]host[:port][?starttls=true]` or `smtps://…` (implicit TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("INVOICETRAIL_SMTP_URL must look like smtp://[user:pass@]host:port")
    query = parse_qs(parts.query)
    starttls = query.get("starttls", ["false"])[-1].lower() in _TRUE
    implicit_tls = parts.scheme == "smtps"
    return SmtpTransport(
        host=parts.hostname,
        port=parts.port or (465 if implicit_tls else 587 if starttls else 25),
        implicit_tls=implicit_tls,
        starttls=starttls and not implicit_tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@dataclass(frozen=True)
class Outcome:
    ok: bool
    permanent: bool = False
    error: str | None = None


def _reply_text(code: int, message: bytes | str) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    return f"{code} {text}"


def classify(exc: Exception) -> Outcome:
    """5xx replies and refused recipients are permanent; connection trouble and 4xx retry."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        replies = "; ".join(
            f"{address}: {_reply_text(code, message)}"
            for address, (code, message) in exc.recipients.items()
        )
        permanent = any(code >= 500 for code in codes)
        return Outcome(False, permanent, f"recipient refused: {replies}")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        # Our credentials, not the recipient: an operator fixes them, the retries then pass.
        return Outcome(
            False, False, f"SMTP login refused: {_reply_text(exc.smtp_code, exc.smtp_error)}"
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = _reply_text(exc.smtp_code, exc.smtp_error)
        return Outcome(False, exc.smtp_code >= 500, f"SMTP server replied {reply}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Outcome(False, True, f"SMTP server does not support what the message needs: {exc}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return Outcome(False, False, f"the mail server closed the connection: {exc}")
    if isinstance(exc, smtplib.SMTPException):  # (an OSError too: checked first)
        return Outcome(False, False, f"SMTP error: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        # ConnectionRefusedError, timeouts, DNS and TLS errors.
        return Outcome(False, False, f"cannot reach the mail server: {type(exc).__name__}: {exc}")
    return Outcome(False, False, f"{type(exc).__name__}: {exc}")


def _write_eml(directory: Path, message: EmailMessage) -> None:
    """Written whole or not at all, one file per e-mail id: a retry replaces, never doubles."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{message['X-Invoicetrail-Email']}.eml"
    partial = target.with_suffix(".eml.partial")
    partial.write_bytes(message.as_bytes())
    os.replace(partial, target)


def deliver(transport: Transport, message: EmailMessage) -> None:
    """Hands the message to the server (raises what smtplib raises) or writes the file."""
    if isinstance(transport, FileTransport):
        _write_eml(transport.directory, message)
        return
    client: smtplib.SMTP
    if transport.implicit_tls:
        client = smtplib.SMTP_SSL(
            transport.host,
            transport.port,
            timeout=transport.timeout_seconds,
            context=ssl.create_default_context(),
        )
    else:
        client = smtplib.SMTP(transport.host, transport.port, timeout=transport.timeout_seconds)
    try:
        if transport.starttls:
            client.starttls(context=ssl.create_default_context())
        if transport.username is not None:
            client.login(transport.username, transport.password or "")
        client.send_message(message)
    finally:
        # After DATA was accepted, a failing QUIT must not turn a sent message into a retry.
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


# --- the message -------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    email_id: str
    account_id: str
    invoice_id: str
    purpose: str
    to_address: str
    attempt: int


def message_id_for(email_id: str, mail_from: str) -> str:
    """The same on every attempt of one e-mail, so a resend after a crash is recognisable."""
    _, address = parseaddr(mail_from)
    domain = address.rpartition("@")[2] or "invoicetrail.localhost"
    return f"<{email_id}@{domain}>"


def _offset_days(purpose: str) -> int | None:
    if not purpose.startswith(REMINDER_PREFIX):
        return None
    return int(purpose.removeprefix(REMINDER_PREFIX))


def compose(ctx: Ctx, claimed: Claimed, filename: str, pdf_bytes: bytes) -> EmailMessage:
    """The plain-text message with the invoice PDF attached; ValueError for a bad header."""
    invoice = ctx.session.execute(
        select(Invoice).where(Invoice.id == claimed.invoice_id).options(selectinload(Invoice.lines))
    ).scalar_one()
    # The seller as on the attached PDF (as at finalize), so body and attachment agree.
    from invoicetrail.invoices.pdf import parties_of

    entity, _buyer = parties_of(ctx, invoice)
    number = invoice.number or invoice.id
    total = format_display(invoice.total_minor, invoice.currency)
    remaining = format_display(invoice.amount_remaining_minor, invoice.currency)
    due = invoice.due_date.isoformat() if invoice.due_date else "on receipt"
    offset = _offset_days(claimed.purpose)
    if offset is None:
        subject = f"Invoice {number} from {entity.name}"
        opening = f"Please find attached invoice {number} from {entity.name}."
    elif offset < 0:
        subject = f"Reminder: invoice {number} is due on {due}"
        opening = f"A friendly reminder: invoice {number} from {entity.name} is due on {due}."
    elif offset == 0:
        subject = f"Reminder: invoice {number} is due today"
        opening = f"A reminder: invoice {number} from {entity.name} is due today ({due})."
    else:
        subject = f"Overdue: invoice {number} was due on {due}"
        opening = (
            f"Our records show invoice {number} from {entity.name}, due on {due}, "
            "is still unpaid. If you have already paid, please ignore this message."
        )
    lines = [
        opening,
        "",
        f"Invoice number: {number}",
        f"Total: {total}",
        f"Amount due: {remaining}",
        f"Due date: {due}",
    ]
    if invoice.bank_transfer_reference:
        lines.append(f"Bank transfer reference: {invoice.bank_transfer_reference}")
    bank = entity.bank_account or {}
    if bank.get("iban"):
        lines.append(f"IBAN: {bank['iban']}" + (f"  BIC: {bank['bic']}" if bank.get("bic") else ""))
    if invoice.bank_transfer_reference:
        lines += [
            "",
            "When paying by bank transfer, please quote the reference above exactly, so the "
            "payment is matched to this invoice.",
        ]
    lines += ["", entity.name, ""]

    message = EmailMessage()
    display, address = parseaddr(ctx.settings.mail_from)
    message["From"] = formataddr((display or entity.name, address or ctx.settings.mail_from))
    message["To"] = claimed.to_address
    message["Subject"] = subject
    message["Date"] = format_datetime(ctx.now)
    message["Message-ID"] = message_id_for(claimed.email_id, ctx.settings.mail_from)
    message["X-Invoicetrail-Invoice"] = invoice.id
    message["X-Invoicetrail-Email"] = claimed.email_id
    message.set_content("\n".join(lines))
    message.add_attachment(pdf_bytes, maintype="application", subtype="pdf", filename=filename)
    return message


def _render_invoice_pdf(ctx: Ctx, invoice_id: str) -> tuple[str, bytes]:
    # Imported here: the PDF renderer (fpdf2, templates) is only needed by the worker.
    from invoicetrail.invoices.pdf import render_invoice_pdf

    return render_invoice_pdf(ctx, invoice_id)


# --- the worker job ------------------------------------------------------------------------


def _worker_ctx(session: Session, account_id: str, now: datetime, settings: Settings) -> Ctx:
    return Ctx(session, account_id, new_id("req"), now, settings, actor="worker")


def _claim(sessions: sessionmaker[Session], clock: Clock) -> tuple[int, list[Claimed]]:
    """Leases a batch of due e-mails; e-mails whose invoice moved on are cancelled."""
    with write_transaction(sessions) as session:
        now = clock.now()
        stmt = (
            select(InvoiceEmail)
            .where(InvoiceEmail.status == PENDING, InvoiceEmail.next_attempt_at <= now)
            .order_by(InvoiceEmail.next_attempt_at, InvoiceEmail.seq)
            .limit(CLAIM_BATCH_SIZE)
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        # SQLite: the write transaction (BEGIN IMMEDIATE) already serialises claimers.
        rows = list(session.execute(stmt).scalars())
        if not rows:
            return 0, []
        statuses: dict[str, str] = {
            invoice_id: status
            for invoice_id, status in session.execute(
                select(Invoice.id, Invoice.status).where(
                    Invoice.id.in_({row.invoice_id for row in rows})
                )
            )
        }
        claimed: list[Claimed] = []
        for row in rows:
            row.updated_at = now
            invoice_status = statuses.get(row.invoice_id)
            if invoice_status is None or not _sendable_status(invoice_status, row.purpose):
                row.status = CANCELLED
                row.next_attempt_at = None
                row.error = f"not sent: the invoice is {invoice_status}"
                continue
            row.attempt_count += 1
            row.next_attempt_at = now + CLAIM_LEASE
            claimed.append(
                Claimed(
                    email_id=row.id,
                    account_id=row.account_id,
                    invoice_id=row.invoice_id,
                    purpose=row.purpose,
                    to_address=row.to_address or "",
                    attempt=row.attempt_count,
                )
            )
        session.commit()
    return len(rows), claimed


def _sendable_status(status: str, purpose: str) -> bool:
    """Reminders only for invoices still open; the invoice itself for any non-void one."""
    if purpose == PURPOSE_INVOICE:
        return status in ("open", "paid", "uncollectible")
    return status == "open"


def _record(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    claimed: Claimed,
    outcome: Outcome,
    message_id: str | None,
) -> None:
    with write_transaction(sessions) as session:
        ctx = _worker_ctx(session, claimed.account_id, clock.now(), settings)
        # Invoice first, then the e-mail: the order `send` takes them in.
        invoice = _locked_invoice(ctx, claimed.invoice_id)
        row = session.execute(
            select(InvoiceEmail)
            .where(InvoiceEmail.id == claimed.email_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one()
        if row.status != PENDING or row.attempt_count != claimed.attempt:
            return  # our lease ran out and another worker took the e-mail over
        row.updated_at = ctx.now
        if outcome.ok:
            _record_sent(ctx, invoice, row, message_id)
        elif not outcome.permanent and row.attempt_count < ATTEMPTS_MAX:
            row.error = outcome.error
            row.next_attempt_at = ctx.now + RETRY_DELAYS[row.attempt_count - 1]
        else:
            _record_failed(ctx, invoice, row, outcome)
        session.commit()


def _locked_invoice(ctx: Ctx, invoice_id: str) -> Invoice:
    return ctx.session.execute(
        select(Invoice)
        .where(Invoice.id == invoice_id, Invoice.account_id == ctx.account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
        .options(selectinload(Invoice.lines))
    ).scalar_one()


def _record_sent(ctx: Ctx, invoice: Invoice, row: InvoiceEmail, message_id: str | None) -> None:
    row.status = SENT
    row.sent_at = ctx.now
    row.message_id = message_id
    row.error = None
    row.next_attempt_at = None
    if row.purpose == PURPOSE_INVOICE:
        if invoice.delivered_at is None:
            invoice.delivered_at = ctx.now
            ctx.session.flush()
            events.record(ctx, "invoice.updated", InvoiceOut.of(invoice))
        # A resend that went through fixes an earlier failure of this invoice's e-mail.
        exceptions.resolve_matching(
            ctx,
            refs={"invoice": invoice.id},
            kind=DELIVERY_FAILED_KIND,
            note=f"e-mailed to {row.to_address} ({message_id})",
        )
    else:
        ctx.session.flush()
        events.record(ctx, "invoice.reminder_sent", InvoiceOut.of(invoice))


def _record_failed(ctx: Ctx, invoice: Invoice, row: InvoiceEmail, outcome: Outcome) -> None:
    row.status = FAILED
    row.error = outcome.error
    row.next_attempt_at = None
    ctx.session.flush()
    if row.purpose == PURPOSE_INVOICE:
        what, then = "Invoice", "then send the invoice again"
    else:
        what, then = "Reminder for invoice", "later reminders go to the address then on file"
    tries = f"after {row.attempt_count} attempts" if not outcome.permanent else "permanently"
    exceptions.raise_item(
        ctx,
        DELIVERY_FAILED_KIND,
        refs={"invoice": invoice.id},
        next_action=(
            f"{what} {invoice.number} could not be e-mailed to {row.to_address} ({tries}): "
            f"{outcome.error}. Correct the customer's email or the mail server; {then}."
        ),
        detail={
            "invoice_email": row.id,
            "purpose": row.purpose,
            "to_address": row.to_address,
            "error": outcome.error,
        },
        area="invoice_state",
    )


def send_due_emails(sessions: sessionmaker[Session], clock: Clock, settings: Settings) -> int:
    """Worker: sends every due e-mail once; returns how many the mail server accepted."""
    try:
        transport = transport_for(settings)
    except ValueError as exc:
        log.error("e-mail not sent: %s", exc)
        return 0
    sent = 0
    while True:
        count, batch = _claim(sessions, clock)
        if count == 0:
            return sent
        for claimed in batch:
            message_id = message_id_for(claimed.email_id, settings.mail_from)
            outcome = _attempt(sessions, clock, settings, transport, claimed)
            if not outcome.ok:
                log.warning("e-mail %s: %s", claimed.email_id, outcome.error)
            _record(sessions, clock, settings, claimed, outcome, message_id)
            if outcome.ok:
                sent += 1


def _attempt(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    transport: Transport,
    claimed: Claimed,
) -> Outcome:
    with read_session(sessions) as session:
        ctx = _worker_ctx(session, claimed.account_id, clock.now(), settings)
        try:
            filename, pdf_bytes = _render_invoice_pdf(ctx, claimed.invoice_id)
        except Exception as exc:  # a renderer bug: logged, retried by the schedule
            log.exception("rendering the PDF of %s failed", claimed.invoice_id)
            return _clipped(Outcome(False, False, f"cannot render the PDF: {exc!r}"))
        try:
            message = compose(ctx, claimed, filename, pdf_bytes)
        except ValueError as exc:  # e.g. an address with a line break: retrying cannot help
            return _clipped(Outcome(False, True, f"cannot compose the message: {exc}"))
    try:
        deliver(transport, message)
    except Exception as exc:
        return _clipped(classify(exc))
    return Outcome(True)


def _clipped(outcome: Outcome) -> Outcome:
    error = outcome.error
    if error is not None and len(error) > ERROR_LENGTH_MAX:
        error = error[: ERROR_LENGTH_MAX - 1] + "…"
    return Outcome(outcome.ok, outcome.permanent, error)
