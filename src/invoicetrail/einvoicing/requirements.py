"""Routing and the checks a regime needs before finalize: fail fast, naming field and regime.

The full validation with the official artifacts runs on the generated document before
submission; these checks catch, at the API, the data a regime would certainly reject, so the
client gets a 400 it can fix instead of an invoice number with a document that cannot be filed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

from stdnum import vatin
from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.my import nric as my_nric

from invoicetrail.accounts.models import LegalEntity
from invoicetrail.core.errors import ParameterMissing, ValidationFailed
from invoicetrail.core.taxids import MX_GENERIC_RFCS, normalize_mx_rfc
from invoicetrail.customers.models import Customer

# EU and EEA members and the UK: countries whose suppliers exchange Peppol BIS Billing 3.0.
PEPPOL_COUNTRIES = frozenset(
    {
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
        "IS",
        "LI",
        "NO",
        "GB",
    }
)
PEPPOL_ID = re.compile(r"^[0-9]{4}:[^\s:]{1,125}$")
# EN 16931 categories that carry no VAT: each needs a reason (BR-E-10, BR-AE-10, …).
CATEGORIES_NEEDING_REASON = frozenset({"E", "AE", "K", "G", "O"})
CATEGORIES_AT_ZERO = frozenset({"Z", "E", "AE", "K", "G", "O"})
CATEGORIES_NEEDING_BUYER_VAT = frozenset({"AE", "K"})
CFDI_REGIME = re.compile(r"^[0-9]{3}$")
CFDI_USE = re.compile(r"^[A-Z][0-9]{2}$|^CP01$|^S01$")
MX_POSTAL_CODE = re.compile(r"^[0-9]{5}$")
MSIC_CODE = re.compile(r"^[0-9]{5}$")


class LineLike(Protocol):
    tax_rate: str
    tax_category: str | None
    tax_exemption_reason: str | None


def route(seller_country: str, buyer_peppol_id: str | None) -> str | None:
    """SPEC routing: MX → cfdi, MY → myinvois, a Peppol country with a buyer on Peppol."""
    if seller_country == "MX":
        return "cfdi"
    if seller_country == "MY":
        return "myinvois"
    if seller_country in PEPPOL_COUNTRIES and buyer_peppol_id:
        return "peppol"
    return None


def _missing(regime: str, param: str, what: str, object_name: str) -> ParameterMissing:
    return ParameterMissing(
        f"{param} is required for {regime} e-invoicing: {what}",
        param=param,
        object_name=object_name,
        extra={"regime": regime},
    )


def _invalid(
    regime: str, param: str, message: str, object_name: str, code: str
) -> ValidationFailed:
    return ValidationFailed(
        f"{param}: {message} ({regime} e-invoicing)",
        param=param,
        object_name=object_name,
        code=code,
        extra={"regime": regime},
    )


def _tax_id(tax_ids: Sequence[dict[str, str]], kind: str) -> tuple[int, str] | None:
    return next(
        ((i, item["value"]) for i, item in enumerate(tax_ids) if item.get("type") == kind), None
    )


def check_before_finalize(
    regime: str,
    entity: LegalEntity,
    customer: Customer,
    *,
    currency: str,
    buyer_reference: str | None,
    purchase_order: str | None,
    lines: Sequence[LineLike],
) -> None:
    checks = {"peppol": _peppol, "cfdi": _cfdi, "myinvois": _myinvois}
    checks[regime](entity, customer, currency, buyer_reference, purchase_order, lines)


def _lines(regime: str, lines: Sequence[LineLike]) -> set[str]:
    categories = set()
    for index, line in enumerate(lines):
        rate = Decimal(line.tax_rate)
        category = line.tax_category or ("S" if rate > 0 else "Z")
        categories.add(category)
        if category in CATEGORIES_AT_ZERO and rate != 0:
            raise _invalid(
                regime,
                f"lines[{index}].tax_rate",
                f"tax category {category} needs a rate of 0, not {line.tax_rate}",
                "invoice",
                "parameter_invalid",
            )
        if category == "S" and rate <= 0:
            raise _invalid(
                regime,
                f"lines[{index}].tax_category",
                "standard rate S needs a rate above 0; use Z for zero-rated",
                "invoice",
                "parameter_invalid",
            )
        if category in CATEGORIES_NEEDING_REASON and not line.tax_exemption_reason:
            raise _missing(
                regime,
                f"lines[{index}].tax_exemption_reason",
                f"tax category {category} needs the exemption reason",
                "invoice",
            )
    return categories


def _peppol(
    entity: LegalEntity,
    customer: Customer,
    currency: str,
    buyer_reference: str | None,
    purchase_order: str | None,
    lines: Sequence[LineLike],
) -> None:
    regime = "peppol"
    if not buyer_reference and not purchase_order:
        raise _missing(
            regime, "buyer_reference", "a buyer reference or a purchase_order (R003)", "invoice"
        )
    if not entity.peppol_id:
        raise _missing(regime, "legal_entity.peppol_id", "the seller's Peppol id", "legal_entity")
    for param, value, object_name in (
        ("legal_entity.peppol_id", entity.peppol_id, "legal_entity"),
        ("customer.peppol_id", customer.peppol_id, "customer"),
    ):
        if value and not PEPPOL_ID.match(value):
            raise _invalid(
                regime,
                param,
                f"'{value}' is not a Peppol participant id (scheme:identifier, e.g. 0088:…)",
                object_name,
                "parameter_invalid",
            )
    if not customer.name:
        raise _missing(regime, "customer.name", "the buyer's legal name", "customer")
    if not (customer.address or {}).get("country"):
        raise _missing(regime, "customer.address.country", "the buyer's country", "customer")
    categories = _lines(regime, lines)
    buyer_country = (customer.address or {}).get("country", "").upper()
    if entity.country == "DE" and buyer_country == "DE":
        # XRechnung's national rules (DE-R-002/005/006/007): a seller contact point.
        contact = entity.contact or {}
        for field in ("name", "email", "phone"):
            if not contact.get(field):
                raise _missing(
                    regime,
                    f"legal_entity.contact.{field}",
                    "German domestic invoices name the seller's contact (name, email, phone)",
                    "legal_entity",
                )
    if (
        entity.country == "NL"
        and buyer_country == "NL"
        and not (entity.bank_account or {}).get("iban")
    ):
        raise _missing(
            regime,
            "legal_entity.bank_account.iban",
            "Dutch domestic invoices carry the payee account (NL-R-008)",
            "legal_entity",
        )
    seller_vat = _tax_id(entity.tax_ids, "eu_vat")
    taxed = categories - {"O"}
    if taxed and seller_vat is None and not entity.registration_id:
        raise _missing(
            regime,
            "legal_entity.tax_ids",
            "the seller's VAT id (type eu_vat) or registration_id",
            "legal_entity",
        )
    if "O" in categories and len(categories) > 1:
        raise _invalid(
            regime,
            "lines",
            "an invoice with category O (not subject to VAT) cannot mix other categories",
            "invoice",
            "parameter_invalid",
        )
    if categories & CATEGORIES_NEEDING_BUYER_VAT:
        if seller_vat is None:
            raise _missing(
                regime, "legal_entity.tax_ids", "the seller's VAT id (type eu_vat)", "legal_entity"
            )
        if _tax_id(customer.tax_ids, "eu_vat") is None:
            raise _missing(
                regime,
                "customer.tax_ids",
                "reverse charge and intra-community supply need the buyer's VAT id (eu_vat)",
                "customer",
            )
    for param, tax_ids, object_name in (
        ("legal_entity.tax_ids", entity.tax_ids, "legal_entity"),
        ("customer.tax_ids", customer.tax_ids, "customer"),
    ):
        found = _tax_id(tax_ids, "eu_vat")
        if found is not None and not vatin.is_valid(found[1]):
            raise _invalid(
                regime,
                f"{param}[{found[0]}].value",
                f"'{found[1]}' is not a valid VAT id",
                object_name,
                "invalid_tax_id",
            )


def _cfdi(
    entity: LegalEntity,
    customer: Customer,
    currency: str,
    buyer_reference: str | None,
    purchase_order: str | None,
    lines: Sequence[LineLike],
) -> None:
    regime = "cfdi"
    if currency.upper() != "MXN":
        raise _invalid(
            regime,
            "currency",
            "invoicetrail files CFDIs in mxn only (another currency needs an exchange rate "
            "the invoice does not carry)",
            "invoice",
            "parameter_invalid",
        )
    seller_rfc = _rfc(regime, entity.tax_ids, "legal_entity.tax_ids", "legal_entity")
    if seller_rfc in MX_GENERIC_RFCS:
        raise _invalid(
            regime,
            "legal_entity.tax_ids",
            "the issuer needs its own RFC, not a generic one",
            "legal_entity",
            "invalid_tax_id",
        )
    entity_cfdi = entity.cfdi or {}
    if not CFDI_REGIME.match(entity_cfdi.get("fiscal_regime") or ""):
        raise _missing(
            regime,
            "legal_entity.cfdi.fiscal_regime",
            "the issuer's SAT fiscal regime (e.g. 601)",
            "legal_entity",
        )
    expedition = entity_cfdi.get("expedition_postal_code") or (entity.address or {}).get(
        "postal_code"
    )
    if not MX_POSTAL_CODE.match(expedition or ""):
        raise _missing(
            regime,
            "legal_entity.cfdi.expedition_postal_code",
            "the 5-digit postal code of the place of issue",
            "legal_entity",
        )
    buyer_rfc = _rfc(regime, customer.tax_ids, "customer.tax_ids", "customer")
    if not customer.name:
        raise _missing(
            regime, "customer.name", "the receiver's name as registered at SAT", "customer"
        )
    customer_cfdi = customer.cfdi or {}
    if buyer_rfc in MX_GENERIC_RFCS:
        # SAT: the generic RFCs file under regime 616 with use S01, at the place of issue.
        for field, allowed in (("fiscal_regime", "616"), ("cfdi_use", "S01")):
            given = customer_cfdi.get(field)
            if given and given != allowed:
                raise _invalid(
                    regime,
                    f"customer.cfdi.{field}",
                    f"the generic RFC {buyer_rfc} files with {field} {allowed}, not {given}",
                    "customer",
                    "parameter_invalid",
                )
        return
    if not MX_POSTAL_CODE.match((customer.address or {}).get("postal_code") or ""):
        raise _missing(
            regime,
            "customer.address.postal_code",
            "the receiver's 5-digit fiscal postal code (DomicilioFiscalReceptor)",
            "customer",
        )
    if not CFDI_REGIME.match(customer_cfdi.get("fiscal_regime") or ""):
        raise _missing(
            regime, "customer.cfdi.fiscal_regime", "the receiver's SAT fiscal regime", "customer"
        )
    if not CFDI_USE.match(customer_cfdi.get("cfdi_use") or ""):
        raise _missing(
            regime, "customer.cfdi.cfdi_use", "the receiver's CFDI use (e.g. G03)", "customer"
        )
    _lines(regime, lines)


def _rfc(regime: str, tax_ids: Sequence[dict[str, str]], param: str, object_name: str) -> str:
    found = _tax_id(tax_ids, "mx_rfc")
    if found is None:
        raise _missing(regime, param, "an RFC (tax id of type mx_rfc)", object_name)
    index, value = found
    try:
        return normalize_mx_rfc(value)
    except StdnumValidationError as exc:
        raise _invalid(
            regime,
            f"{param}[{index}].value",
            f"'{value}' is not a valid Mexican RFC: {exc}",
            object_name,
            "invalid_tax_id",
        ) from None


def _myinvois(
    entity: LegalEntity,
    customer: Customer,
    currency: str,
    buyer_reference: str | None,
    purchase_order: str | None,
    lines: Sequence[LineLike],
) -> None:
    regime = "myinvois"
    if currency.upper() != "MYR":
        raise _invalid(
            regime,
            "currency",
            "invoicetrail files MyInvois documents in myr only (another currency needs the "
            "exchange rate to MYR, which the invoice does not carry)",
            "invoice",
            "parameter_invalid",
        )
    if _tax_id(entity.tax_ids, "my_tin") is None:
        raise _missing(
            regime, "legal_entity.tax_ids", "the supplier's TIN (type my_tin)", "legal_entity"
        )
    if not entity.registration_id and _tax_id(entity.tax_ids, "my_brn") is None:
        raise _missing(
            regime,
            "legal_entity.registration_id",
            "the supplier's business registration number",
            "legal_entity",
        )
    myinvois = entity.myinvois or {}
    if not myinvois.get("phone"):
        raise _missing(
            regime, "legal_entity.myinvois.phone", "the supplier's contact number", "legal_entity"
        )
    if myinvois.get("msic_code") and not MSIC_CODE.match(myinvois["msic_code"]):
        raise _invalid(
            regime,
            "legal_entity.myinvois.msic_code",
            "an MSIC code has 5 digits",
            "legal_entity",
            "parameter_invalid",
        )
    for param, address, object_name in (
        ("legal_entity.address", entity.address or {}, "legal_entity"),
        ("customer.address", customer.address or {}, "customer"),
    ):
        for field in ("line1", "city", "country"):
            if not address.get(field):
                raise _missing(
                    regime, f"{param}.{field}", "MyInvois needs a full address", object_name
                )
    if not customer.name:
        raise _missing(regime, "customer.name", "the buyer's registered name", "customer")
    if _tax_id(customer.tax_ids, "my_tin") is None:
        raise _missing(regime, "customer.tax_ids", "the buyer's TIN (type my_tin)", "customer")
    nric = _tax_id(customer.tax_ids, "my_nric")
    if nric is not None and not my_nric.is_valid(nric[1]):
        raise _invalid(
            regime,
            f"customer.tax_ids[{nric[0]}].value",
            f"'{nric[1]}' is not a valid NRIC",
            "customer",
            "invalid_tax_id",
        )
    if nric is None and _tax_id(customer.tax_ids, "my_brn") is None:
        raise _missing(
            regime,
            "customer.tax_ids",
            "the buyer's registration: BRN (my_brn) or NRIC (my_nric)",
            "customer",
        )
    _lines(regime, lines)
