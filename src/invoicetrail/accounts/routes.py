from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from invoicetrail.accounts import control, service
from invoicetrail.accounts.models import LaunchGate
from invoicetrail.accounts.schemas import (
    ApiKeyOut,
    ApiKeyRotate,
    LaunchGateOut,
    LaunchGateUpdate,
    LegalEntityCreate,
    LegalEntityOut,
    OwnershipIn,
    OwnershipOut,
)
from invoicetrail.core.clock import iso_instant
from invoicetrail.core.context import Ctx
from invoicetrail.core.http import ListOut, PageParams, Read, Write, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.post(
    "/api_keys/rotate",
    response_model=ApiKeyOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ApiKeyRotate, required=False),
)
def rotate_api_key(write: Write) -> Response:
    def command(ctx: Ctx, body: ApiKeyRotate) -> ApiKeyOut:
        rotated = service.rotate_keys(ctx, body.expire_previous_after_seconds)
        return ApiKeyOut(
            id=rotated.issued.key.id,
            secret_key=rotated.issued.secret_key,
            created=iso_instant(rotated.issued.key.created_at),
            previous_key_expires_at=iso_instant(rotated.previous_expires_at),
        )

    # The answer holds a new secret: keep its replay copy only as long as the minimum.
    return write.run(
        ApiKeyRotate,
        command,
        object_name="api_key",
        action="rotate API keys",
        retention=timedelta(days=1),
    )


@router.post(
    "/legal_entities",
    response_model=LegalEntityOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(LegalEntityCreate),
)
def create_legal_entity(write: Write) -> Response:
    return write.run(
        LegalEntityCreate,
        lambda ctx, body: LegalEntityOut.of(service.create_legal_entity(ctx, body)),
        object_name="legal_entity",
        action="create a legal entity",
    )


@router.get("/legal_entities/{entity_id}", response_model=LegalEntityOut, responses=READ_ERRORS)
def get_legal_entity(entity_id: str, ctx: Read) -> Response:
    return json_response(
        LegalEntityOut.of(service.get_legal_entity(ctx, entity_id)), ctx.request_id
    )


@router.get("/legal_entities", response_model=ListOut[LegalEntityOut], responses=READ_ERRORS)
def list_legal_entities(ctx: Read, page: PageParams) -> Response:
    rows, has_more = service.list_legal_entities(ctx, page)
    return json_response(
        ListOut[LegalEntityOut](data=[LegalEntityOut.of(r) for r in rows], has_more=has_more),
        ctx.request_id,
    )


def ownership_out(ctx: Ctx) -> OwnershipOut:
    row = control.get_ownership(ctx)
    config = dict(row.config) if row is not None else {}
    disputes = config.get("disputes") or {}
    return OwnershipOut(
        invoice_state=config.get("invoice_state"),
        payment_evidence=config.get("payment_evidence"),
        journal_posting=config.get("journal_posting"),
        erp_export=config.get("erp_export"),
        exception_queue=config.get("exception_queue"),
        disputes={name: disputes.get(name) for name in control.DISPUTE_FIELDS},
        compliance_markets=dict(config.get("compliance_markets") or {}),
        markets=control.markets(ctx),
        unassigned=control.unassigned_areas(ctx, config),
        updated=iso_instant(row.updated_at) if row is not None else None,
        history=row.history if row is not None else [],
    )


@router.get("/ownership", response_model=OwnershipOut, responses=READ_ERRORS)
def get_ownership(ctx: Read) -> Response:
    return json_response(ownership_out(ctx), ctx.request_id)


@router.put(
    "/ownership",
    response_model=OwnershipOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(OwnershipIn),
)
def put_ownership(write: Write) -> Response:
    def command(ctx: Ctx, body: OwnershipIn) -> OwnershipOut:
        control.put_ownership(ctx, body)
        return ownership_out(ctx)

    return write.run(
        OwnershipIn,
        command,
        object_name="ownership",
        action="set ownership",
        status_code=200,
    )


GateName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


def gate_out(name: str, required: bool, gate: LaunchGate | None) -> LaunchGateOut:
    return LaunchGateOut(
        name=name,
        description=control.GATE_DESCRIPTIONS.get(name),
        required=required,
        status=gate.status if gate is not None else "pending",
        owner=gate.owner if gate is not None else None,
        evidence_reference=gate.evidence_reference if gate is not None else None,
        note=gate.note if gate is not None else None,
        updated=iso_instant(gate.updated_at) if gate is not None else None,
        history=gate.history if gate is not None else [],
    )


@router.get("/launch_gates", response_model=ListOut[LaunchGateOut], responses=READ_ERRORS)
def list_launch_gates(ctx: Read) -> Response:
    return json_response(
        ListOut[LaunchGateOut](
            data=[gate_out(*gate) for gate in control.list_gates(ctx)], has_more=False
        ),
        ctx.request_id,
    )


@router.get("/launch_gates/{name}", response_model=LaunchGateOut, responses=READ_ERRORS)
def get_launch_gate(name: GateName, ctx: Read) -> Response:
    return json_response(gate_out(*control.get_gate(ctx, name)), ctx.request_id)


@router.put(
    "/launch_gates/{name}",
    response_model=LaunchGateOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(LaunchGateUpdate),
)
def put_launch_gate(name: GateName, write: Write) -> Response:
    def command(ctx: Ctx, body: LaunchGateUpdate) -> LaunchGateOut:
        gate = control.update_gate(ctx, name, body)
        return gate_out(name, name in control.required_gates(ctx), gate)

    return write.run(
        LaunchGateUpdate,
        command,
        object_name="launch_gate",
        action="record a launch gate",
        status_code=200,
    )
