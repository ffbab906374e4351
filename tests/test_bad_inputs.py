"""Bad inputs across the write routes: each is refused with the SPEC error and writes nothing.

One table of cases; every case asserts status, `code`, `param`, `object`, `retryable`, the
`request_id` (= the `Request-Id` header) and that the account's row counts did not move.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from conftest import Api, row_counts

MISSING: Any = object()  # a key whose value is MISSING is left out of the body
CUSTOMER = "<customer>"  # replaced by the id of a customer the case's account owns
DRAFT = "<draft>"  # replaced by the id of a draft invoice the case's account owns

CUSTOMERS = "POST /v1/customers"
INVOICES = "POST /v1/invoices"
PATCH_DRAFT = "PATCH /v1/invoices/{draft}"
PATCH_OPEN = "PATCH /v1/invoices/{open}"
PAY_OPEN = "POST /v1/invoices/{open}/pay"
PAY_DRAFT = "POST /v1/invoices/{draft}/pay"
FINALIZE_DRAFT = "POST /v1/invoices/{draft}/finalize"
FINALIZE_OPEN = "POST /v1/invoices/{open}/finalize"
LEGAL_ENTITIES = "POST /v1/legal_entities"

RFC_BAD_CHECK_DIGIT = "GODE561231GR9"  # GODE561231GR8 is valid


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **changes}
    return {key: value for key, value in merged.items() if value is not MISSING}


def line(**changes: Any) -> dict[str, Any]:
    base = {"description": "Widget", "quantity": "2", "unit_amount": 1050, "tax_rate": "19"}
    return _merge(base, changes)


def invoice(**changes: Any) -> dict[str, Any]:
    return _merge({"customer": CUSTOMER, "currency": "eur", "lines": [line()]}, changes)


def customer(**changes: Any) -> dict[str, Any]:
    return _merge({"name": "Buyer Ltd", "address": {"country": "DE"}}, changes)


def entity(**changes: Any) -> dict[str, Any]:
    return _merge({"name": "Seller GmbH", "country": "DE"}, changes)


def pay(**changes: Any) -> dict[str, Any]:
    return _merge({"reference": "wire-1"}, changes)


def many_keys(count: int) -> dict[str, str]:
    return {f"k{index}": "v" for index in range(count)}


@dataclass
class Given:
    """What a case's request refers to, created before the row counts are taken."""

    api: Api
    customer_fields: dict[str, Any] = field(default_factory=dict)
    draft_fields: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str:
        if name not in self.ids:
            if name == "customer":
                self.ids[name] = self.api.customer(**self.customer_fields)["id"]
            elif name == "draft":
                self.ids[name] = self.api.draft(self.get("customer"), **self.draft_fields)["id"]
            elif name == "open":
                draft = self.api.draft(self.get("customer"), **self.draft_fields)
                finalized = self.api.post(f"/v1/invoices/{draft['id']}/finalize")
                self.ids[name] = self.api.ok(finalized)["id"]
            else:
                raise KeyError(name)
        return self.ids[name]

    def resolve(self, value: Any) -> Any:
        if value == CUSTOMER:
            return self.get("customer")
        if value == DRAFT:
            return self.get("draft")
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value


Prepare = Callable[[Given], list[str]]  # returns strings the error body must mention


@dataclass(frozen=True)
class Case:
    name: str
    route: str
    body: Any
    status: int
    code: str
    param: str | None
    object: str | None
    customer_fields: dict[str, Any] = field(default_factory=dict)
    draft_fields: dict[str, Any] = field(default_factory=dict)
    prepare: Prepare | None = None


def _first_customer_with_reference(given: Given) -> list[str]:
    return [given.api.customer(external_reference="crm-7")["id"]]


def _first_invoice_with_reference(given: Given) -> list[str]:
    return [given.api.draft(given.get("customer"), external_reference="order-7")["id"]]


def bad(
    name: str,
    route: str,
    body: Any,
    param: str | None,
    *,
    code: str = "parameter_invalid",
    status: int = 400,
    obj: str | None = None,
    **extra: Any,
) -> Case:
    default_object = {
        CUSTOMERS: "customer",
        LEGAL_ENTITIES: "legal_entity",
    }.get(route, "invoice")
    return Case(
        name=name,
        route=route,
        body=body,
        status=status,
        code=code,
        param=param,
        object=obj if obj is not None else default_object,
        **extra,
    )


MISSING_P = "parameter_missing"
UNKNOWN_P = "parameter_unknown"

CASES: list[Case] = [
    # --- POST /v1/customers ----------------------------------------------------------------
    bad("customer-unknown-field", CUSTOMERS, customer(colour="red"), "colour", code=UNKNOWN_P),
    bad(
        "customer-unknown-nested-field",
        CUSTOMERS,
        customer(address={"country": "DE", "planet": "Earth"}),
        "address.planet",
        code=UNKNOWN_P,
    ),
    bad(
        "customer-address-without-country",
        CUSTOMERS,
        customer(address={"city": "Berlin"}),
        "address.country",
        code=MISSING_P,
    ),
    bad(
        "customer-country-unknown",
        CUSTOMERS,
        customer(address={"country": "XX"}),
        "address.country",
    ),
    bad(
        "customer-country-name",
        CUSTOMERS,
        customer(address={"country": "Germany"}),
        "address.country",
    ),
    bad("customer-address-string", CUSTOMERS, customer(address="DE"), "address"),
    bad("customer-name-257", CUSTOMERS, customer(name="n" * 257), "name"),
    bad("customer-name-number", CUSTOMERS, customer(name=42), "name"),
    bad("customer-name-bool", CUSTOMERS, customer(name=True), "name"),
    bad("customer-email-513", CUSTOMERS, customer(email="e" * 501 + "@example.com"), "email"),
    bad("customer-email-shape", CUSTOMERS, customer(email="not-an-email"), "email"),
    bad(
        "customer-mx-rfc-check-digit",
        CUSTOMERS,
        customer(tax_ids=[{"type": "mx_rfc", "value": RFC_BAD_CHECK_DIGIT}]),
        "tax_ids[0].value",
        code="invalid_tax_id",
    ),
    bad(
        "customer-second-tax-id-bad",
        CUSTOMERS,
        customer(
            tax_ids=[
                {"type": "mx_rfc", "value": "GODE561231GR8"},
                {"type": "mx_rfc", "value": RFC_BAD_CHECK_DIGIT},
            ]
        ),
        "tax_ids[1].value",
        code="invalid_tax_id",
    ),
    bad(
        "customer-tax-id-without-value",
        CUSTOMERS,
        customer(tax_ids=[{"type": "eu_vat"}]),
        "tax_ids[0].value",
        code=MISSING_P,
    ),
    bad(
        "customer-external-reference-256",
        CUSTOMERS,
        customer(external_reference="r" * 256),
        "external_reference",
    ),
    bad("customer-metadata-51-keys", CUSTOMERS, customer(metadata=many_keys(51)), "metadata"),
    bad("customer-metadata-key-41", CUSTOMERS, customer(metadata={"k" * 41: "v"}), "metadata"),
    bad("customer-metadata-value-501", CUSTOMERS, customer(metadata={"k": "v" * 501}), "metadata"),
    bad("customer-metadata-value-int", CUSTOMERS, customer(metadata={"a": 1}), "metadata.a"),
    bad("customer-metadata-value-null", CUSTOMERS, customer(metadata={"a": None}), "metadata.a"),
    bad("customer-metadata-list", CUSTOMERS, customer(metadata=["a"]), "metadata"),
    bad(
        "customer-duplicate-external-reference",
        CUSTOMERS,
        customer(name="Second", external_reference="crm-7"),
        "external_reference",
        code="duplicate_external_reference",
        status=409,
        prepare=_first_customer_with_reference,
    ),
    # --- POST /v1/invoices -----------------------------------------------------------------
    bad(
        "invoice-missing-customer", INVOICES, invoice(customer=MISSING), "customer", code=MISSING_P
    ),
    bad(
        "invoice-missing-currency", INVOICES, invoice(currency=MISSING), "currency", code=MISSING_P
    ),
    bad("invoice-missing-lines", INVOICES, invoice(lines=MISSING), "lines", code=MISSING_P),
    bad(
        "invoice-line-missing-quantity",
        INVOICES,
        invoice(lines=[line(quantity=MISSING)]),
        "lines[0].quantity",
        code=MISSING_P,
    ),
    bad(
        "invoice-second-line-missing-unit-amount",
        INVOICES,
        invoice(lines=[line(), line(unit_amount=MISSING)]),
        "lines[1].unit_amount",
        code=MISSING_P,
    ),
    bad(
        "invoice-line-missing-description",
        INVOICES,
        invoice(lines=[line(description=MISSING)]),
        "lines[0].description",
        code=MISSING_P,
    ),
    bad("invoice-unknown-field", INVOICES, invoice(discount=5), "discount", code=UNKNOWN_P),
    bad(
        "invoice-line-unknown-field",
        INVOICES,
        invoice(lines=[line(sku="W-1")]),
        "lines[0].sku",
        code=UNKNOWN_P,
    ),
    bad("invoice-status-not-settable", INVOICES, invoice(status="paid"), "status", code=UNKNOWN_P),
    bad("invoice-currency-unknown", INVOICES, invoice(currency="xyz"), "currency"),
    bad("invoice-currency-no-minor-unit", INVOICES, invoice(currency="XAU"), "currency"),
    bad("invoice-currency-word", INVOICES, invoice(currency="euro"), "currency"),
    bad("invoice-currency-number", INVOICES, invoice(currency=978), "currency"),
    bad(
        "invoice-unit-amount-string",
        INVOICES,
        invoice(lines=[line(unit_amount="1050")]),
        "lines[0].unit_amount",
    ),
    bad(
        "invoice-unit-amount-float-integral",
        INVOICES,
        invoice(lines=[line(unit_amount=1.0)]),
        "lines[0].unit_amount",
    ),
    bad(
        "invoice-unit-amount-float",
        INVOICES,
        invoice(lines=[line(unit_amount=10.5)]),
        "lines[0].unit_amount",
    ),
    bad(
        "invoice-unit-amount-bool",
        INVOICES,
        invoice(lines=[line(unit_amount=True)]),
        "lines[0].unit_amount",
    ),
    bad(
        "invoice-unit-amount-over-1e15",
        INVOICES,
        invoice(lines=[line(quantity="1", unit_amount=10**15 + 1)]),
        "lines[0].unit_amount",
    ),
    bad(
        "invoice-unit-amount-under-minus-1e15",
        INVOICES,
        invoice(lines=[line(quantity="1", unit_amount=-(10**15) - 1)]),
        "lines[0].unit_amount",
    ),
    bad(
        "invoice-line-amount-over-1e15",
        INVOICES,
        invoice(lines=[line(quantity="2", unit_amount=10**15)]),
        "lines[0].quantity",
    ),
    bad(
        "invoice-total-over-1e15",
        INVOICES,
        invoice(lines=[line(quantity="1", unit_amount=6 * 10**14, tax_rate="0")] * 2),
        "lines",
    ),
    bad(
        "invoice-quantity-negative",
        INVOICES,
        invoice(lines=[line(quantity="-1")]),
        "lines[0].quantity",
    ),
    bad(
        "invoice-quantity-exponent",
        INVOICES,
        invoice(lines=[line(quantity="1e3")]),
        "lines[0].quantity",
    ),
    bad(
        "invoice-quantity-number",
        INVOICES,
        invoice(lines=[line(quantity=2)]),
        "lines[0].quantity",
    ),
    bad(
        "invoice-quantity-nan",
        INVOICES,
        invoice(lines=[line(quantity="NaN")]),
        "lines[0].quantity",
    ),
    bad(
        "invoice-quantity-empty", INVOICES, invoice(lines=[line(quantity="")]), "lines[0].quantity"
    ),
    bad(
        "invoice-tax-rate-over-100",
        INVOICES,
        invoice(lines=[line(tax_rate="101")]),
        "lines[0].tax_rate",
    ),
    bad(
        "invoice-tax-rate-just-over-100",
        INVOICES,
        invoice(lines=[line(tax_rate="100.01")]),
        "lines[0].tax_rate",
    ),
    bad(
        "invoice-tax-rate-negative",
        INVOICES,
        invoice(lines=[line(tax_rate="-1")]),
        "lines[0].tax_rate",
    ),
    bad(
        "invoice-tax-rate-number",
        INVOICES,
        invoice(lines=[line(tax_rate=19)]),
        "lines[0].tax_rate",
    ),
    bad("invoice-zero-lines", INVOICES, invoice(lines=[]), "lines"),
    bad("invoice-1001-lines", INVOICES, invoice(lines=[line()] * 1001), "lines"),
    bad("invoice-lines-object", INVOICES, invoice(lines={"0": line()}), "lines"),
    bad("invoice-line-string", INVOICES, invoice(lines=["Widget"]), "lines[0]"),
    bad(
        "invoice-description-5001",
        INVOICES,
        invoice(lines=[line(description="d" * 5001)]),
        "lines[0].description",
    ),
    bad(
        "invoice-external-reference-256",
        INVOICES,
        invoice(external_reference="r" * 256),
        "external_reference",
    ),
    bad("invoice-metadata-51-keys", INVOICES, invoice(metadata=many_keys(51)), "metadata"),
    bad("invoice-metadata-key-41", INVOICES, invoice(metadata={"k" * 41: "v"}), "metadata"),
    bad("invoice-metadata-value-501", INVOICES, invoice(metadata={"k": "v" * 501}), "metadata"),
    bad("invoice-metadata-value-bool", INVOICES, invoice(metadata={"paid": True}), "metadata.paid"),
    bad("invoice-due-date-month-13", INVOICES, invoice(due_date="2026-13-01"), "due_date"),
    bad("invoice-due-date-slashes", INVOICES, invoice(due_date="2026/01/01"), "due_date"),
    bad("invoice-due-date-compact", INVOICES, invoice(due_date="20260101"), "due_date"),
    bad("invoice-due-date-instant", INVOICES, invoice(due_date="2026-01-01T00:00:00Z"), "due_date"),
    bad("invoice-due-date-number", INVOICES, invoice(due_date=20260101), "due_date"),
    bad(
        "invoice-collection-method-unknown",
        INVOICES,
        invoice(collection_method="weekly"),
        "collection_method",
    ),
    bad(
        "invoice-customer-wrong-prefix",
        INVOICES,
        invoice(customer=DRAFT),
        "customer",
        code="resource_missing",
        status=404,
        obj="customer",
    ),
    bad(
        "invoice-customer-unknown",
        INVOICES,
        invoice(customer="cus_01HZZZZZZZZZZZZZZZZZZZZZZZ"),
        "customer",
        code="resource_missing",
        status=404,
        obj="customer",
    ),
    bad(
        "invoice-customer-malformed-300",
        INVOICES,
        invoice(customer="cus_" + "x" * 296),
        "customer",
        code="resource_missing",
        status=404,
        obj="customer",
    ),
    bad(
        "invoice-customer-malformed-unicode",
        INVOICES,
        invoice(customer="cus_ñandú😀"),
        "customer",
        code="resource_missing",
        status=404,
        obj="customer",
    ),
    bad(
        "invoice-legal-entity-unknown",
        INVOICES,
        invoice(legal_entity="le_01HZZZZZZZZZZZZZZZZZZZZZZZ"),
        "legal_entity",
        code="resource_missing",
        status=404,
        obj="legal_entity",
    ),
    bad(
        "invoice-duplicate-external-reference",
        INVOICES,
        invoice(external_reference="order-7"),
        "external_reference",
        code="duplicate_external_reference",
        status=409,
        prepare=_first_invoice_with_reference,
    ),
    # --- PATCH /v1/invoices/{id} -------------------------------------------------------------
    bad("patch-zero-lines", PATCH_DRAFT, {"lines": []}, "lines"),
    bad("patch-currency-no-minor-unit", PATCH_DRAFT, {"currency": "XAU"}, "currency"),
    bad("patch-currency-null", PATCH_DRAFT, {"currency": None}, "currency"),
    bad("patch-lines-null", PATCH_DRAFT, {"lines": None}, "lines"),
    bad("patch-status-not-settable", PATCH_DRAFT, {"status": "paid"}, "status", code=UNKNOWN_P),
    bad(
        "patch-quantity-exponent",
        PATCH_DRAFT,
        {"lines": [line(quantity="1e3")]},
        "lines[0].quantity",
    ),
    bad(
        "patch-line-missing-quantity",
        PATCH_DRAFT,
        {"lines": [line(), line(quantity=MISSING)]},
        "lines[1].quantity",
        code=MISSING_P,
    ),
    bad("patch-due-date-feb-30", PATCH_DRAFT, {"due_date": "2026-02-30"}, "due_date"),
    bad("patch-metadata-key-41", PATCH_DRAFT, {"metadata": {"k" * 41: "v"}}, "metadata"),
    bad(
        "patch-customer-unknown",
        PATCH_DRAFT,
        {"customer": "cus_01HZZZZZZZZZZZZZZZZZZZZZZZ"},
        "customer",
        code="resource_missing",
        status=404,
        obj="customer",
    ),
    bad(
        "patch-open-invoice",
        PATCH_OPEN,
        {"metadata": {"late": "edit"}},
        None,
        code="invalid_state_transition",
        status=409,
    ),
    # --- POST /v1/invoices/{id}/pay ----------------------------------------------------------
    bad("pay-without-reference", PAY_OPEN, pay(reference=MISSING), "reference", code=MISSING_P),
    bad("pay-empty-body", PAY_OPEN, None, "reference", code=MISSING_P),
    bad("pay-amount-zero", PAY_OPEN, pay(amount=0), "amount"),
    bad("pay-amount-negative", PAY_OPEN, pay(amount=-100), "amount"),
    bad("pay-amount-string", PAY_OPEN, pay(amount="100"), "amount"),
    bad("pay-amount-float", PAY_OPEN, pay(amount=100.0), "amount"),
    bad("pay-amount-over-1e15", PAY_OPEN, pay(amount=10**15 + 1), "amount"),
    bad("pay-reference-256", PAY_OPEN, pay(reference="r" * 256), "reference"),
    bad("pay-reference-empty", PAY_OPEN, pay(reference=""), "reference"),
    bad("pay-method-unknown", PAY_OPEN, pay(method="bitcoin"), "method"),
    bad("pay-unknown-field", PAY_OPEN, pay(currency="eur"), "currency", code=UNKNOWN_P),
    bad(
        "pay-draft",
        PAY_DRAFT,
        pay(),
        None,
        code="invalid_state_transition",
        status=409,
    ),
    # --- POST /v1/invoices/{id}/finalize -----------------------------------------------------
    bad(
        "finalize-send-invoice-without-due-date",
        FINALIZE_DRAFT,
        None,
        "due_date",
        code=MISSING_P,
        draft_fields={"collection_method": "send_invoice"},
    ),
    bad(
        "finalize-customer-without-country",
        FINALIZE_DRAFT,
        None,
        "customer.address.country",
        code=MISSING_P,
        customer_fields={"address": None},
    ),
    bad(
        "finalize-zero-total",
        FINALIZE_DRAFT,
        None,
        "lines",
        draft_fields={"lines": [line(unit_amount=0)]},
    ),
    bad("finalize-unknown-field", FINALIZE_DRAFT, {"force": True}, "force", code=UNKNOWN_P),
    bad(
        "finalize-open-invoice",
        FINALIZE_OPEN,
        None,
        None,
        code="invalid_state_transition",
        status=409,
    ),
    # --- POST /v1/legal_entities -------------------------------------------------------------
    bad("entity-missing-name", LEGAL_ENTITIES, entity(name=MISSING), "name", code=MISSING_P),
    bad(
        "entity-missing-country",
        LEGAL_ENTITIES,
        entity(country=MISSING),
        "country",
        code=MISSING_P,
    ),
    bad("entity-country-unknown", LEGAL_ENTITIES, entity(country="XX"), "country"),
    bad("entity-country-number", LEGAL_ENTITIES, entity(country=49), "country"),
    bad("entity-name-257", LEGAL_ENTITIES, entity(name="n" * 257), "name"),
    bad("entity-unknown-field", LEGAL_ENTITIES, entity(vat="DE1"), "vat", code=UNKNOWN_P),
    bad(
        "entity-address-country-unknown",
        LEGAL_ENTITIES,
        entity(address={"country": "ZZ"}),
        "address.country",
    ),
    bad(
        "entity-number-prefix-shape",
        LEGAL_ENTITIES,
        entity(number_prefix="inv-1"),
        "number_prefix",
    ),
    bad(
        "entity-tax-id-without-value",
        LEGAL_ENTITIES,
        entity(tax_ids=[{"type": "eu_vat"}]),
        "tax_ids[0].value",
        code=MISSING_P,
    ),
    bad(
        "entity-iban-number",
        LEGAL_ENTITIES,
        entity(bank_account={"iban": 123}),
        "bank_account.iban",
    ),
]


def _path(route: str, given: Given) -> str:
    path = route.split(" ", 1)[1]
    for name in ("draft", "open"):
        if "{" + name + "}" in path:
            path = path.replace("{" + name + "}", given.get(name))
    return path


def test_case_table_is_large_and_unique() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 45


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_and_writes_nothing(api: Api, case: Case) -> None:
    given = Given(api, customer_fields=case.customer_fields, draft_fields=case.draft_fields)
    path = _path(case.route, given)
    body = given.resolve(case.body)
    mentions = case.prepare(given) if case.prepare else []
    target = path.removesuffix("/pay").removesuffix("/finalize")
    before_object = api.get(target).content if "{" in case.route else b""
    before = row_counts(api)

    patch = case.route.startswith("PATCH")
    response = api.patch(path, body) if patch else api.post(path, body)

    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert error["code"] == case.code, error
    assert error["param"] == case.param, error
    assert error.get("object") == case.object, error
    assert error["retryable"] is False
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["Request-Id"]
    assert error["request_id"].startswith("req_")
    for text in mentions:
        assert text in response.text, error
    assert row_counts(api) == before
    if before_object:
        assert api.get(target).content == before_object
