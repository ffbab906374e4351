"""Customers and their credit balance: the only writer of these tables."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import DuplicateExternalReference, NotFound, invariant
from invoicetrail.core.http import Page
from invoicetrail.core.ids import new_id
from invoicetrail.core.listing import list_page
from invoicetrail.core.taxids import check_tax_ids
from invoicetrail.customers.models import Customer, CustomerCredit
from invoicetrail.customers.schemas import CustomerCreate, CustomerOut, CustomerUpdate
from invoicetrail.events import service as events


def _ensure_external_reference_free(ctx: Ctx, external_reference: str | None) -> None:
    if external_reference is None:
        return
    existing = ctx.session.execute(
        select(Customer.id).where(
            Customer.account_id == ctx.account_id,
            Customer.external_reference == external_reference,
        )
    ).scalar_one_or_none()
    if existing is not None:
        raise DuplicateExternalReference("customer", existing, external_reference)


def create(ctx: Ctx, body: CustomerCreate) -> Customer:
    tax_ids = check_tax_ids(body.tax_ids, param_prefix="tax_ids", object_name="customer")
    _ensure_external_reference_free(ctx, body.external_reference)
    customer = Customer(
        id=new_id("cus"),
        account_id=ctx.account_id,
        name=body.name,
        email=body.email,
        address=body.address.model_dump(exclude_none=True) if body.address else None,
        tax_ids=tax_ids,
        peppol_id=body.peppol_id,
        cfdi=body.cfdi.model_dump(exclude_none=True) if body.cfdi else None,
        myinvois=body.myinvois.model_dump(exclude_none=True) if body.myinvois else None,
        external_reference=body.external_reference,
        metadata_=dict(body.metadata),
        created_at=ctx.now,
        request_id=ctx.request_id,
    )
    ctx.session.add(customer)
    ctx.session.flush()
    events.record(ctx, "customer.created", out(ctx, customer))
    return customer


def update(ctx: Ctx, customer_id: str, body: CustomerUpdate) -> Customer:
    customer = get(ctx, customer_id, for_update=True)
    fields = body.model_fields_set
    if "tax_ids" in fields and body.tax_ids is not None:
        customer.tax_ids = check_tax_ids(
            body.tax_ids, param_prefix="tax_ids", object_name="customer"
        )
    if "external_reference" in fields and body.external_reference != customer.external_reference:
        _ensure_external_reference_free(ctx, body.external_reference)
        customer.external_reference = body.external_reference
    if "name" in fields:
        customer.name = body.name
    if "email" in fields:
        customer.email = body.email
    if "address" in fields:
        customer.address = body.address.model_dump(exclude_none=True) if body.address else None
    if "peppol_id" in fields:
        customer.peppol_id = body.peppol_id
    if "cfdi" in fields:
        customer.cfdi = body.cfdi.model_dump(exclude_none=True) if body.cfdi else None
    if "myinvois" in fields:
        customer.myinvois = body.myinvois.model_dump(exclude_none=True) if body.myinvois else None
    if "metadata" in fields and body.metadata is not None:
        customer.metadata_ = merge_metadata(customer.metadata_, body.metadata)
    ctx.session.flush()
    events.record(ctx, "customer.updated", out(ctx, customer))
    return customer


def merge_metadata(current: dict[str, str], changes: dict[str, str]) -> dict[str, str]:
    """Stripe semantics: keys merge; an empty string removes a key."""
    merged = dict(current)
    for key, value in changes.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def get(
    ctx: Ctx, customer_id: str, *, param: str | None = None, for_update: bool = False
) -> Customer:
    stmt = select(Customer).where(Customer.id == customer_id, Customer.account_id == ctx.account_id)
    if for_update:
        stmt = stmt.with_for_update()
    customer = ctx.session.execute(stmt).scalar_one_or_none()
    if customer is None:
        raise NotFound("customer", customer_id, param=param)
    return customer


def list_customers(ctx: Ctx, page: Page, *, email: str | None) -> tuple[list[Customer], bool]:
    filters = [Customer.email == email] if email is not None else []
    return list_page(ctx, Customer, page, *filters, object_name="customer")


def credit_balance(ctx: Ctx, customer_id: str) -> dict[str, int]:
    rows = ctx.session.execute(
        select(CustomerCredit.currency, CustomerCredit.amount_minor)
        .where(CustomerCredit.customer_id == customer_id, CustomerCredit.amount_minor > 0)
        .order_by(CustomerCredit.currency)
    ).all()
    return {currency: amount for currency, amount in rows}


def add_credit(ctx: Ctx, customer_id: str, currency: str, amount_minor: int) -> None:
    """Overpayments land here. One atomic upsert: two invoices of one customer can overpay at
    the same time (their invoice locks differ), and neither may lose or fail on the other."""
    invariant(amount_minor > 0, "credit added must be positive")
    insert = pg_insert if ctx.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(CustomerCredit).values(
        customer_id=customer_id,
        currency=currency,
        account_id=ctx.account_id,
        amount_minor=amount_minor,
        updated_at=ctx.now,
    )
    ctx.session.execute(
        statement.on_conflict_do_update(
            index_elements=[CustomerCredit.customer_id, CustomerCredit.currency],
            set_={
                "amount_minor": CustomerCredit.amount_minor + statement.excluded.amount_minor,
                "updated_at": statement.excluded.updated_at,
            },
        )
    )


def out(ctx: Ctx, customer: Customer) -> CustomerOut:
    return CustomerOut.of(customer, credit_balance(ctx, customer.id))
