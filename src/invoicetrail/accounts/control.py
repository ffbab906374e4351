"""Ownership of each area of the chain and the launch gates: the only writer of both tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from invoicetrail.accounts.models import LaunchGate, LegalEntity, Ownership
from invoicetrail.accounts.schemas import LaunchGateUpdate, OwnershipIn
from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import ApiError, NotFound, ParameterMissing

# The areas every account must give an owner before go-live (SPEC "Control").
AREAS = ("invoice_state", "payment_evidence", "journal_posting", "erp_export", "exception_queue")
DISPUTE_FIELDS = ("first_responder", "authoritative_record")

GATE_STATUSES = ("pending", "passed", "failed", "not_applicable")
KYB = "kyb"
# Gates a market needs before go-live; "*" applies to every account. Tax forms are US rules.
GATES_BY_MARKET: dict[str, tuple[str, ...]] = {
    "*": (KYB, "aml_screening"),
    "US": ("tax_forms_w9_w8ben", "form_1099_nec_readiness"),
}
FBAR = "fbar"
GATE_DESCRIPTIONS = {
    KYB: "business verification (KYB) of the legal entity by the payment provider or bank",
    "aml_screening": "AML / sanctions screening of the business and its owners",
    "tax_forms_w9_w8ben": "W-9 or W-8BEN collected from every payee",
    "form_1099_nec_readiness": "1099-NEC filing readiness for the tax year",
    FBAR: "FBAR filing for foreign financial accounts held by a US person",
}


class LaunchGateNotPassed(ApiError):
    status_code = 409
    code = "launch_gate_not_passed"


def _ownership_row(ctx: Ctx) -> Ownership | None:
    return ctx.session.get(Ownership, ctx.account_id)


def markets(ctx: Ctx) -> list[str]:
    """The account's markets: the countries of its legal entities."""
    return sorted(
        set(
            ctx.session.execute(
                select(LegalEntity.country).where(LegalEntity.account_id == ctx.account_id)
            ).scalars()
        )
    )


def ownership_config(ctx: Ctx) -> dict[str, Any]:
    row = _ownership_row(ctx)
    return dict(row.config) if row is not None else {}


def unassigned_areas(ctx: Ctx, config: dict[str, Any] | None = None) -> list[str]:
    config = ownership_config(ctx) if config is None else config
    missing = [area for area in AREAS if not config.get(area)]
    disputes = config.get("disputes") or {}
    missing += [f"disputes.{name}" for name in DISPUTE_FIELDS if not disputes.get(name)]
    compliance = config.get("compliance_markets") or {}
    missing += [f"compliance_markets.{m}" for m in markets(ctx) if not compliance.get(m)]
    return missing


def owner_for(ctx: Ctx, area: str) -> str | None:
    """The configured owner of an area (`disputes` → its first responder), if any."""
    config = ownership_config(ctx)
    if area == "disputes":
        value = (config.get("disputes") or {}).get("first_responder")
    elif area.startswith("compliance_markets."):
        value = (config.get("compliance_markets") or {}).get(area.split(".", 1)[1])
    else:
        value = config.get(area)
    return str(value) if value else None


def put_ownership(ctx: Ctx, body: OwnershipIn) -> Ownership:
    """Replaces the whole configuration (PUT): a field left out is unassigned."""
    config = body.model_dump(mode="json")
    entry = {
        "at": iso_instant(ctx.now),
        "actor": ctx.actor,
        "request_id": ctx.request_id,
        "config": config,
    }
    row = _ownership_row(ctx)
    if row is None:
        row = Ownership(
            account_id=ctx.account_id,
            config=config,
            history=[entry],
            updated_at=ctx.now,
            request_id=ctx.request_id,
        )
        ctx.session.add(row)
    else:
        row.config = config
        row.history = [*row.history, entry]
        row.updated_at = ctx.now
        row.request_id = ctx.request_id
    ctx.session.flush()
    return row


def get_ownership(ctx: Ctx) -> Ownership | None:
    return _ownership_row(ctx)


def required_gates(ctx: Ctx) -> list[str]:
    account_markets = markets(ctx)
    names = list(GATES_BY_MARKET["*"])
    for market in account_markets:
        names += [g for g in GATES_BY_MARKET.get(market, ()) if g not in names]
    # A US person with an account abroad files an FBAR; we see it as a bank account held by a
    # non-US entity of an account that also has a US entity.
    if "US" in account_markets and any(
        entity.country != "US" and entity.bank_account
        for entity in ctx.session.execute(
            select(LegalEntity).where(LegalEntity.account_id == ctx.account_id)
        ).scalars()
    ):
        names.append(FBAR)
    return names


def list_gates(ctx: Ctx) -> list[tuple[str, bool, LaunchGate | None]]:
    """Every required gate (recorded or not) and every other recorded gate, by name."""
    recorded = {
        gate.name: gate
        for gate in ctx.session.execute(
            select(LaunchGate).where(LaunchGate.account_id == ctx.account_id)
        ).scalars()
    }
    required = required_gates(ctx)
    names = required + sorted(n for n in recorded if n not in required)
    return [(name, name in required, recorded.get(name)) for name in names]


def update_gate(ctx: Ctx, name: str, body: LaunchGateUpdate) -> LaunchGate:
    if body.status == "passed" and not body.evidence_reference:
        raise ParameterMissing(
            f"launch gate {name} can pass only with the evidence_reference of the check "
            "that passed it (a provider verification id, a document id…)",
            param="evidence_reference",
            object_name="launch_gate",
        )
    gate = ctx.session.execute(
        select(LaunchGate)
        .where(LaunchGate.account_id == ctx.account_id, LaunchGate.name == name)
        .with_for_update()
    ).scalar_one_or_none()
    entry = {
        "at": iso_instant(ctx.now),
        "actor": ctx.actor,
        "request_id": ctx.request_id,
        "status": body.status,
        "owner": body.owner,
        "evidence_reference": body.evidence_reference,
        "note": body.note,
    }
    if gate is None:
        gate = LaunchGate(account_id=ctx.account_id, name=name, history=[])
        ctx.session.add(gate)
    gate.status = body.status
    gate.owner = body.owner
    gate.evidence_reference = body.evidence_reference
    gate.note = body.note
    gate.history = [*gate.history, entry]
    gate.updated_at = ctx.now
    gate.request_id = ctx.request_id
    ctx.session.flush()
    return gate


def gate_status(ctx: Ctx, name: str) -> str:
    gate = ctx.session.execute(
        select(LaunchGate.status).where(
            LaunchGate.account_id == ctx.account_id, LaunchGate.name == name
        )
    ).scalar_one_or_none()
    return gate or "pending"


def require_gate(ctx: Ctx, name: str, *, action: str, object_name: str) -> None:
    status = gate_status(ctx, name)
    if status != "passed":
        raise LaunchGateNotPassed(
            f"{action} needs the launch gate '{name}' ({GATE_DESCRIPTIONS.get(name, name)}) "
            f"to have passed; it is {status}. Record it with PUT /v1/launch_gates/{name}",
            object_name=object_name,
            extra={"gate": name, "gate_status": status},
        )


def get_gate(ctx: Ctx, name: str) -> tuple[str, bool, LaunchGate | None]:
    for gate in list_gates(ctx):
        if gate[0] == name:
            return gate
    raise NotFound("launch_gate", name)
