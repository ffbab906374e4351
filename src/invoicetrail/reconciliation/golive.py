"""The go-live check: every precondition by name, each failing one saying what to fix."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, func, or_, select

from invoicetrail.accounts import control
from invoicetrail.core.context import Ctx
from invoicetrail.exceptions import service as exceptions
from invoicetrail.exports.models import ExportRow
from invoicetrail.invoices.models import Invoice
from invoicetrail.ledger import service as ledger
from invoicetrail.ledger.models import JournalEntry
from invoicetrail.payments.models import Payment, ProviderEndpoint, ProviderEndpointSecret
from invoicetrail.reconciliation.checks import MONEY_STATUSES

SHOWN_MAX = 5


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def _ownership(ctx: Ctx) -> CheckResult:
    missing = control.unassigned_areas(ctx)
    if missing:
        return CheckResult(
            "ownership",
            False,
            f"no owner for: {', '.join(missing)}; set them with PUT /v1/ownership "
            "(or invoicetrail ownership apply invoicetrail.toml)",
        )
    return CheckResult("ownership", True, "every area has an owner")


def _endpoints(ctx: Ctx) -> list[CheckResult]:
    active_secret = or_(
        ProviderEndpointSecret.expires_at.is_(None), ProviderEndpointSecret.expires_at > ctx.now
    )
    rows = ctx.session.execute(
        select(
            ProviderEndpoint.id, ProviderEndpoint.provider, func.count(ProviderEndpointSecret.seq)
        )
        .outerjoin(
            ProviderEndpointSecret,
            and_(ProviderEndpointSecret.endpoint_id == ProviderEndpoint.id, active_secret),
        )
        .where(ProviderEndpoint.account_id == ctx.account_id)
        .group_by(ProviderEndpoint.id, ProviderEndpoint.provider)
    ).all()
    with_secret = [endpoint_id for endpoint_id, _p, secrets in rows if secrets > 0]
    without_secret = [endpoint_id for endpoint_id, _p, secrets in rows if secrets == 0]
    endpoints = (
        CheckResult(
            "provider_endpoint",
            True,
            f"{len(with_secret)} provider endpoint(s) with a webhook secret",
        )
        if with_secret
        else CheckResult(
            "provider_endpoint",
            False,
            "no provider endpoint with a webhook secret; create one with "
            "POST /v1/provider_endpoints and give its URL and secret to the provider",
        )
    )
    if not rows:
        verification = CheckResult(
            "webhook_signature_verification",
            False,
            "no provider endpoint yet, so no webhook can be verified",
        )
    elif without_secret:
        verification = CheckResult(
            "webhook_signature_verification",
            False,
            f"endpoint(s) {', '.join(without_secret[:SHOWN_MAX])} have no unexpired secret, so "
            "their events fail verification; rotate in a new secret",
        )
    else:
        verification = CheckResult(
            "webhook_signature_verification",
            True,
            "every endpoint verifies signatures with an unexpired secret (verification "
            "cannot be switched off: unverified events are stored and never applied)",
        )
    return [endpoints, verification]


def _books(ctx: Ctx) -> CheckResult:
    settings = ledger.settings_of(ctx)
    if settings is None:
        return CheckResult(
            "posting_policy_and_chart",
            False,
            "posting policy and chart of accounts not confirmed; review GET /v1/ledger_settings "
            'and confirm with POST /v1/ledger_settings {"posting_policy": …, "accounts": …}',
        )
    return CheckResult(
        "posting_policy_and_chart",
        True,
        f"posting policy {settings.posting_policy}; "
        f"{len(settings.account_names)} renamed chart account(s)",
    )


def _paid_invoices_trace(ctx: Ctx) -> CheckResult:
    """Each paid invoice: exactly one payment reference and one close-ready receipt row."""
    since = ctx.now - timedelta(days=ctx.settings.golive_window_days)
    # Grouped once each and hash-joined: no per-invoice subquery, whatever the volume.
    references = (
        select(
            Payment.invoice_id.label("invoice_id"),
            func.count(func.distinct(Payment.reference)).label("n"),
        )
        .where(Payment.account_id == ctx.account_id, Payment.status.in_(MONEY_STATUSES))
        .group_by(Payment.invoice_id)
        .subquery()
    )
    receipts = (
        select(JournalEntry.invoice_id.label("invoice_id"), func.count().label("n"))
        .where(
            JournalEntry.account_id == ctx.account_id,
            JournalEntry.business_key.like("receipt:%"),
        )
        .group_by(JournalEntry.invoice_id)
        .subquery()
    )
    refused = (
        select(JournalEntry.invoice_id.label("invoice_id"), func.count().label("n"))
        .join(ExportRow, ExportRow.journal_entry_id == JournalEntry.id)
        .where(
            JournalEntry.account_id == ctx.account_id,
            JournalEntry.business_key.like("receipt:%"),
            ExportRow.status == "failed",
        )
        .group_by(JournalEntry.invoice_id)
        .subquery()
    )
    per_invoice = (
        select(
            Invoice.id.label("invoice_id"),
            func.coalesce(references.c.n, 0).label("references"),
            func.coalesce(receipts.c.n, 0).label("receipts"),
            func.coalesce(refused.c.n, 0).label("failed_rows"),
        )
        .outerjoin(references, references.c.invoice_id == Invoice.id)
        .outerjoin(receipts, receipts.c.invoice_id == Invoice.id)
        .outerjoin(refused, refused.c.invoice_id == Invoice.id)
        .where(
            Invoice.account_id == ctx.account_id,
            Invoice.status == "paid",
            Invoice.paid_at >= since,
        )
        .subquery()
    )
    total = ctx.session.execute(select(func.count()).select_from(per_invoice)).scalar_one()
    bad = ctx.session.execute(
        select(
            per_invoice.c.invoice_id,
            per_invoice.c.references,
            per_invoice.c.receipts,
            per_invoice.c.failed_rows,
        )
        .where(
            or_(
                per_invoice.c.references != 1,
                per_invoice.c.receipts != 1,
                per_invoice.c.failed_rows > 0,
            )
        )
        .order_by(per_invoice.c.invoice_id)
    ).all()
    days = ctx.settings.golive_window_days
    if not bad:
        return CheckResult(
            "paid_invoices_trace",
            True,
            f"each of the {total} invoice(s) paid in the last {days} days traces to exactly one "
            "payment reference and one close-ready receipt entry",
        )
    shown = "; ".join(
        f"{invoice_id}: {refs} payment reference(s), {receipts_n} receipt entr(ies)"
        + (f", {failed} export row(s) refused by the ERP" if failed else "")
        for invoice_id, refs, receipts_n, failed in bad[:SHOWN_MAX]
    )
    more = f" and {len(bad) - SHOWN_MAX} more" if len(bad) > SHOWN_MAX else ""
    return CheckResult(
        "paid_invoices_trace",
        False,
        f"{len(bad)} of {total} paid invoice(s) do not trace to exactly one payment reference "
        f"and one close-ready receipt entry: {shown}{more}; see GET /v1/invoices/{{id}}/trace",
    )


def _exceptions(ctx: Ctx) -> CheckResult:
    overdue = exceptions.count_overdue(ctx)
    if overdue:
        return CheckResult(
            "exceptions_past_due",
            False,
            f"{overdue} open exception item(s) past due; work them "
            "(GET /v1/exception_items?overdue=true)",
        )
    return CheckResult("exceptions_past_due", True, "no open exception item is past due")


def _gates(ctx: Ctx) -> CheckResult:
    failing = [
        (name, gate.status if gate else "pending", gate.owner if gate else None)
        for name, required, gate in control.list_gates(ctx)
        if required and (gate is None or gate.status not in ("passed", "not_applicable"))
    ]
    if failing:
        shown = ", ".join(
            f"{name} ({status}{', owner ' + owner if owner else ', no owner'})"
            for name, status, owner in failing
        )
        return CheckResult(
            "launch_gates",
            False,
            f"launch gates not passed: {shown}; record each with PUT /v1/launch_gates/{{name}} "
            "and its evidence reference",
        )
    return CheckResult("launch_gates", True, "every launch gate for the account's markets passed")


def run_checks(ctx: Ctx) -> list[CheckResult]:
    return [
        _ownership(ctx),
        *_endpoints(ctx),
        _books(ctx),
        _paid_invoices_trace(ctx),
        _exceptions(ctx),
        _gates(ctx),
    ]
