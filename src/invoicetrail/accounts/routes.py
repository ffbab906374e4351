from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import Response

from invoicetrail.accounts import service
from invoicetrail.accounts.schemas import ApiKeyOut, ApiKeyRotate, LegalEntityCreate, LegalEntityOut
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
