from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from invoicetrail.core.http import ListOut, PageParams, Read, Write, json_response
from invoicetrail.core.openapi import READ_ERRORS, WRITE_ERRORS, json_body
from invoicetrail.customers import service
from invoicetrail.customers.schemas import CustomerCreate, CustomerOut, CustomerUpdate

router = APIRouter(prefix="/v1", tags=["customers"])


@router.post(
    "/customers",
    response_model=CustomerOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(CustomerCreate),
)
def create_customer(write: Write) -> Response:
    return write.run(
        CustomerCreate,
        lambda ctx, body: service.out(ctx, service.create(ctx, body)),
        object_name="customer",
        action="create a customer",
    )


@router.patch(
    "/customers/{customer_id}",
    response_model=CustomerOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(CustomerUpdate),
)
def update_customer(customer_id: str, write: Write) -> Response:
    return write.run(
        CustomerUpdate,
        lambda ctx, body: service.out(ctx, service.update(ctx, customer_id, body)),
        object_name="customer",
        action="update a customer",
    )


@router.get("/customers/{customer_id}", response_model=CustomerOut, responses=READ_ERRORS)
def get_customer(customer_id: str, ctx: Read) -> Response:
    return json_response(service.out(ctx, service.get(ctx, customer_id)), ctx.request_id)


@router.get("/customers", response_model=ListOut[CustomerOut], responses=READ_ERRORS)
def list_customers(
    ctx: Read, page: PageParams, email: Annotated[str | None, Query(max_length=512)] = None
) -> Response:
    rows, has_more = service.list_customers(ctx, page, email=email)
    return json_response(
        ListOut[CustomerOut](data=[service.out(ctx, c) for c in rows], has_more=has_more),
        ctx.request_id,
    )
