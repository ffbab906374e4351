"""MyInvois (Malaysia, LHDN): the UBL 2.1 JSON document, its shape check, the 72-hour window.

The document is the JSON form of a UBL 2.1 `Invoice` that the LHDN SDK's 1.0 samples use:
namespace keys `_D`, `_A`, `_B` and every element an array of objects whose value sits under
`_` and whose attributes are sibling keys (`currencyID`, `schemeID`, …). Version 1.0 is the
unsigned one; all note kinds (credit 02, debit 03, refund 04) use the `Invoice` root with
their own `InvoiceTypeCode`.

Amounts are JSON numbers in major units, as in the samples. They are written from `Decimal`
by our own small serializer (`_dumps`), never through `float`, so 1010 minor units of MYR
become the number text `10.1` exactly and 0.1 + 0.2 never turns into 0.30000000000000004.
Trailing zeros are dropped (`100.00` → `100`): a JSON number has no scale, and this is what
the samples show.

`check_structure` is not a validator (none exists offline): it checks the shape that every
LHDN sample has, the code values against the shipped code tables and a few sums.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pycountry

from invoicetrail.einvoicing.facts import DocumentFacts, Line, Party
from invoicetrail.einvoicing.validation import Finding

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "myinvois"

NS_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
NS_CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
NS_CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
NAMESPACES = {"_D": NS_INVOICE, "_A": NS_CAC, "_B": NS_CBC}

DOCUMENT_VERSION = "1.0"  # unsigned; 1.1 needs the taxpayer's digital signature
VERSIONS = frozenset({"1.0", "1.1"})
# Credit, debit, refund notes and their self-billed variants must name the invoice they adjust.
NOTE_TYPES = frozenset({"02", "03", "04", "12", "13", "14"})
DEFAULT_TYPE_CODE = {"invoice": "01", "credit_note": "02"}

# LHDN's general TINs for parties without one of their own (the consolidated sample uses
# the first): the general public, and a foreign buyer.
GENERAL_PUBLIC_TIN = "EI00000000010"
FOREIGN_BUYER_TIN = "EI00000000020"
NOT_APPLICABLE = "NA"
STATE_NOT_APPLICABLE = "17"
DEFAULT_CLASSIFICATION = "022"  # "Others"
DEFAULT_MSIC = ("00000", "NOT APPLICABLE")
DEFAULT_SERVICE_TAX = "02"  # EN 16931 "S" is service tax unless the seller says sales tax (01)
UNIT_CODE = "C62"  # "one": quantities are counts of the line's unit
PAYMENT_BANK_TRANSFER = "03"
TAX_SCHEME = {"_": "OTH", "schemeID": "UN/ECE 5153", "schemeAgencyID": "6"}
COUNTRY_LIST = {"listID": "ISO3166-1", "listAgencyID": "6"}
# Schemes a party's second identification may use besides its TIN (BRN for companies).
ID_SCHEMES = ("BRN", "NRIC", "PASSPORT", "ARMY")
PARTY_SCHEMES = frozenset({"TIN", "SST", "TTX", *ID_SCHEMES})
# Common English / short names of states, on top of the names in StateCodes.json.
STATE_ALIASES = {
    "kuala lumpur": "14",
    "wp kuala lumpur": "14",
    "labuan": "15",
    "wp labuan": "15",
    "putrajaya": "16",
    "wp putrajaya": "16",
    "penang": "07",
    "malacca": "04",
}

# MyInvois lets an issuer cancel a valid document only this long after validation; later
# it has to issue a credit / debit / refund note instead (SDK, Cancel Document).
CANCELLATION_WINDOW = timedelta(hours=72)


def cancellation_deadline(validated_at: datetime) -> datetime:
    """The last moment a document validated at `validated_at` can still be cancelled (UTC)."""
    return _utc(validated_at) + CANCELLATION_WINDOW


def cancellable(validated_at: datetime, now: datetime) -> bool:
    """Whether MyInvois still accepts a cancellation at `now` (the window's end included)."""
    return _utc(now) <= cancellation_deadline(validated_at)


def _utc(value: datetime) -> datetime:
    # Stored datetimes may come back naive (SQLite); everything here is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- code tables -------------------------------------------------------------------------


@functools.cache
def _table(name: str) -> tuple[dict[str, str], ...]:
    with (ARTIFACTS / f"{name}.json").open(encoding="utf-8") as handle:
        rows: list[dict[str, str]] = json.load(handle)
    return tuple(rows)


@functools.cache
def codes(name: str) -> frozenset[str]:
    """The `Code` values of one shipped code table, e.g. codes("TaxTypes")."""
    return frozenset(row["Code"].strip() for row in _table(name))


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


@functools.cache
def _state_names() -> dict[str, str]:
    names = {_normal(row["State"]): row["Code"] for row in _table("StateCodes")}
    names.update({_normal(alias): code for alias, code in STATE_ALIASES.items()})
    return names


def state_code(state: str | None) -> str:
    """A Malaysian state as its MyInvois code: "14", "4" and "Wilayah Persekutuan Kuala
    Lumpur" are all accepted; anything unknown is "17" (Not Applicable)."""
    if not state or not state.strip():
        return STATE_NOT_APPLICABLE
    text = state.strip()
    if text.isdigit():
        code = text.zfill(2)
        return code if code in codes("StateCodes") else STATE_NOT_APPLICABLE
    return _state_names().get(_normal(text), STATE_NOT_APPLICABLE)


def country_alpha3(alpha2: str | None) -> str:
    """ISO 3166-1 alpha-2 → alpha-3; a missing country is taken as Malaysia (MYS). An
    unknown code is written as given, so the shape check reports it (MYINVOIS-CODE) instead
    of the generator failing at finalize."""
    if not alpha2:
        return "MYS"
    country = pycountry.countries.get(alpha_2=alpha2.upper())
    return alpha2.upper() if country is None else str(country.alpha_3)


def myinvois_type_code(facts: DocumentFacts) -> str:
    if facts.myinvois_type_code:
        return facts.myinvois_type_code
    if facts.document_type not in DEFAULT_TYPE_CODE:
        raise ValueError(f"a {facts.document_type} is not a MyInvois document")
    return DEFAULT_TYPE_CODE[facts.document_type]


def tax_type(category: str, service_or_sales: str = DEFAULT_SERVICE_TAX) -> str:
    """EN 16931 VAT category → MyInvois tax type. Malaysia has no VAT: standard-rated (S) is
    the seller's sales (01) or service tax (02), exempt (E) is "E", and everything else
    (zero-rated, out of scope, reverse charge, …) has no Malaysian tax: 06 Not Applicable."""
    if category == "S":
        return service_or_sales
    if category == "E":
        return "E"
    return "06"


# --- JSON text ---------------------------------------------------------------------------


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value}")
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _dumps(value: Any) -> str:
    """Compact JSON that writes `Decimal` as an exact JSON number (json.dumps cannot)."""
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(
                json.dumps(key, ensure_ascii=False) + ":" + _dumps(item)
                for key, item in value.items()
            )
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(item) for item in value) + "]"
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if value is None or isinstance(value, bool | int | str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} into a MyInvois document")


# --- the document ------------------------------------------------------------------------

Node = dict[str, Any]


def _v(value: Any, **attributes: Any) -> list[Node]:
    """One basic element: [{"_": value, attribute: …}]."""
    return [{"_": value, **attributes}]


class _Builder:
    def __init__(self, facts: DocumentFacts) -> None:
        self.facts = facts
        self.currency = facts.currency
        self.exponent = facts.currency_exponent
        # The seller decides whether its standard rate is sales (01) or service (02) tax.
        self.standard_tax = facts.seller.myinvois.get("tax_type") or DEFAULT_SERVICE_TAX

    def major(self, minor: int, exponent: int | None = None) -> Decimal:
        return Decimal(minor).scaleb(-(self.exponent if exponent is None else exponent))

    def amount(self, minor: int) -> list[Node]:
        return _v(self.major(minor), currencyID=self.currency)

    def document(self) -> Node:
        facts = self.facts
        type_code = myinvois_type_code(facts)
        issued = _utc(facts.issued_at)
        invoice: Node = {
            "ID": _v(facts.number),
            "IssueDate": _v(issued.date().isoformat()),
            "IssueTime": _v(issued.strftime("%H:%M:%SZ")),
            "InvoiceTypeCode": _v(type_code, listVersionID=DOCUMENT_VERSION),
            "DocumentCurrencyCode": _v(facts.currency),
            "TaxCurrencyCode": _v(facts.tax_currency or facts.currency),
        }
        if type_code in NOTE_TYPES and facts.billing_reference_number:
            invoice["BillingReference"] = [
                {
                    "InvoiceDocumentReference": [
                        {
                            "ID": _v(facts.billing_reference_number),
                            # The SDK samples carry the adjusted document's MyInvois UUID;
                            # "NA" when the original was issued before e-invoicing.
                            "UUID": _v(facts.billing_reference_uuid or NOT_APPLICABLE),
                        }
                    ]
                }
            ]
        invoice["AccountingSupplierParty"] = [{"Party": [self.supplier(facts.seller)]}]
        invoice["AccountingCustomerParty"] = [{"Party": [self.customer(facts.buyer)]}]
        account = facts.bank_account.get("iban") or facts.bank_account.get("account")
        if account:
            invoice["PaymentMeans"] = [
                {
                    "PaymentMeansCode": _v(PAYMENT_BANK_TRANSFER),
                    "PayeeFinancialAccount": [{"ID": _v(account)}],
                }
            ]
        if facts.due_date is not None:
            note = f"Due {facts.due_date.isoformat()}"
            if facts.payment_reference:
                note += f", reference {facts.payment_reference}"
            invoice["PaymentTerms"] = [{"Note": _v(note)}]
        prepaid = facts.total_minor - facts.payable_minor
        if prepaid > 0:  # credit already applied: the payable amount is less than the total
            invoice["PrepaidPayment"] = [{"PaidAmount": self.amount(prepaid)}]
        if facts.allowance_charges:
            invoice["AllowanceCharge"] = [
                {
                    "ChargeIndicator": _v(item.is_charge),
                    "AllowanceChargeReason": _v(item.reason),
                    "Amount": self.amount(item.amount_minor),
                }
                for item in facts.allowance_charges
            ]
        rate = self.exchange_rate()
        if rate is not None:
            invoice["TaxExchangeRate"] = [
                {
                    "SourceCurrencyCode": _v(facts.currency),
                    "TargetCurrencyCode": _v("MYR"),
                    "CalculationRate": _v(rate),
                }
            ]
        invoice["TaxTotal"] = [self.tax_total()]
        invoice["LegalMonetaryTotal"] = [self.monetary_total()]
        invoice["InvoiceLine"] = [self.line(line) for line in facts.lines]
        return {**NAMESPACES, "Invoice": [invoice]}

    def exchange_rate(self) -> Decimal | None:
        """MyInvois wants the rate to MYR on a foreign-currency document. The facts carry no
        rate, only the tax converted to the tax currency (BT-111), so the rate is derived from
        it when it can be (MYR tax currency, non-zero tax); otherwise none is written and the
        shape check reports MYINVOIS-EXCHANGE-RATE."""
        facts = self.facts
        if facts.currency == "MYR":
            return None
        converted = facts.tax_in_tax_currency_minor
        if facts.tax_currency != "MYR" or converted is None or facts.tax_minor == 0:
            return None
        rate = self.major(converted, 2) / self.major(facts.tax_minor)
        return rate.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)

    def identifications(self, party: Party, tin: str | None, *, buyer: bool) -> list[Node]:
        ids: list[Node] = []
        if tin:
            ids.append({"ID": _v(tin, schemeID="TIN")})
        second = _second_id(party)
        if second is None and buyer:
            # The consolidated sample: a buyer without any registration gets BRN "NA".
            second = ("BRN", NOT_APPLICABLE)
        if second is not None:
            ids.append({"ID": _v(second[1], schemeID=second[0])})
        ids.append({"ID": _v(party.tax_id("my_sst") or NOT_APPLICABLE, schemeID="SST")})
        ids.append({"ID": _v(party.tax_id("my_ttx") or NOT_APPLICABLE, schemeID="TTX")})
        return ids

    def supplier(self, party: Party) -> Node:
        msic = party.myinvois.get("msic_code") or DEFAULT_MSIC[0]
        activity = party.myinvois.get("business_activity") or DEFAULT_MSIC[1]
        node: Node = {
            "IndustryClassificationCode": _v(msic, name=activity),
            "PartyIdentification": self.identifications(party, party.tax_id("my_tin"), buyer=False),
            "PostalAddress": [_address(party)],
            "PartyLegalEntity": [{"RegistrationName": _v(party.name)}],
            "Contact": [_contact(party)],
        }
        return node

    def customer(self, party: Party) -> Node:
        tin = party.tax_id("my_tin")
        if not tin:
            foreign = (party.address.country or "MY").upper() != "MY"
            tin = FOREIGN_BUYER_TIN if foreign else GENERAL_PUBLIC_TIN
        # Key order as in the SDK samples' AccountingCustomerParty.
        return {
            "PostalAddress": [_address(party)],
            "PartyLegalEntity": [{"RegistrationName": _v(party.name)}],
            "PartyIdentification": self.identifications(party, tin, buyer=True),
            "Contact": [_contact(party)],
        }

    def category(self, code: str, reason: str | None) -> Node:
        node: Node = {"ID": _v(code)}
        if code == "E":  # an exempt amount must say why (every sample does)
            node["TaxExemptionReason"] = _v(reason or "Exempt")
        node["TaxScheme"] = [{"ID": [dict(TAX_SCHEME)]}]
        return node

    def tax_total(self) -> Node:
        """Document TaxSubtotals per MyInvois tax type (taxable amounts include the
        document-level allowances and charges of that type), in order of first use."""
        groups: dict[str, list[int]] = {}  # type → [taxable, tax]
        reasons: dict[str, str | None] = {}
        for line in self.facts.lines:
            code = tax_type(line.tax_category, self.standard_tax)
            group = groups.setdefault(code, [0, 0])
            group[0] += line.amount_minor
            group[1] += line.tax_minor
            reasons.setdefault(code, line.tax_exemption_reason)
        for item in self.facts.allowance_charges:
            code = tax_type(item.tax_category, self.standard_tax)
            group = groups.setdefault(code, [0, 0])
            group[0] += item.amount_minor if item.is_charge else -item.amount_minor
            reasons.setdefault(code, item.reason)
        return {
            "TaxAmount": self.amount(self.facts.tax_minor),
            "TaxSubtotal": [
                {
                    "TaxableAmount": self.amount(taxable),
                    "TaxAmount": self.amount(tax),
                    "TaxCategory": [self.category(code, reasons.get(code))],
                }
                for code, (taxable, tax) in groups.items()
            ],
        }

    def monetary_total(self) -> Node:
        facts = self.facts
        allowances = sum(a.amount_minor for a in facts.allowance_charges if not a.is_charge)
        charges = sum(a.amount_minor for a in facts.allowance_charges if a.is_charge)
        total: Node = {
            "LineExtensionAmount": self.amount(sum(line.amount_minor for line in facts.lines)),
            # Net of document allowances and charges: the facts' total less their tax.
            "TaxExclusiveAmount": self.amount(facts.total_minor - facts.tax_minor),
            "TaxInclusiveAmount": self.amount(facts.total_minor),
        }
        if facts.allowance_charges:
            total["AllowanceTotalAmount"] = self.amount(allowances)
            total["ChargeTotalAmount"] = self.amount(charges)
        total["PayableAmount"] = self.amount(facts.payable_minor)
        return total

    def line(self, line: Line) -> Node:
        classification = (
            self.facts.seller.myinvois.get("classification_code") or DEFAULT_CLASSIFICATION
        )
        return {
            "ID": _v(str(line.position)),
            "InvoicedQuantity": _v(_decimal(line.quantity), unitCode=UNIT_CODE),
            "LineExtensionAmount": self.amount(line.amount_minor),
            "TaxTotal": [
                {
                    "TaxAmount": self.amount(line.tax_minor),
                    "TaxSubtotal": [
                        {
                            "TaxableAmount": self.amount(line.amount_minor),
                            "TaxAmount": self.amount(line.tax_minor),
                            "Percent": _v(_decimal(line.tax_rate)),
                            "TaxCategory": [
                                self.category(
                                    tax_type(line.tax_category, self.standard_tax),
                                    line.tax_exemption_reason,
                                )
                            ],
                        }
                    ],
                }
            ],
            "Item": [
                {
                    "CommodityClassification": [
                        {"ItemClassificationCode": _v(classification, listID="CLASS")}
                    ],
                    "Description": _v(line.description),
                }
            ],
            "Price": [{"PriceAmount": self.amount(line.unit_amount_minor)}],
            # The line's subtotal before discounts: quantity × unit price.
            "ItemPriceExtension": [{"Amount": self.amount(line.amount_minor)}],
        }


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {text!r}") from exc


def _second_id(party: Party) -> tuple[str, str] | None:
    brn = party.registration_id or party.tax_id("my_brn")
    if brn:
        return ("BRN", brn)
    for scheme in ID_SCHEMES[1:]:
        value = party.tax_id(f"my_{scheme.lower()}")
        if value:
            return (scheme, value)
    return None


def _address(party: Party) -> Node:
    address = party.address
    country = country_alpha3(address.country)
    lines = [text for text in (address.line1, address.line2) if text] or [NOT_APPLICABLE]
    node: Node = {"CityName": _v(address.city or NOT_APPLICABLE)}
    if address.postal_code:
        node["PostalZone"] = _v(address.postal_code)
    node["CountrySubentityCode"] = _v(
        state_code(address.state) if country == "MYS" else STATE_NOT_APPLICABLE
    )
    node["AddressLine"] = [{"Line": _v(text)} for text in lines]
    node["Country"] = [{"IdentificationCode": _v(country, **COUNTRY_LIST)}]
    return node


def _contact(party: Party) -> Node:
    node: Node = {"Telephone": _v(party.myinvois.get("phone") or party.phone or NOT_APPLICABLE)}
    if party.email:
        node["ElectronicMail"] = _v(party.email)
    return node


def build_myinvois_tree(facts: DocumentFacts) -> dict[str, Any]:
    """The document as Python data (amounts as Decimal), before it becomes JSON text."""
    if facts.regime != "myinvois":
        raise ValueError(f"facts of regime {facts.regime!r} are not a MyInvois document")
    return _Builder(facts).document()


def build_myinvois(facts: DocumentFacts) -> bytes:
    """The UBL 2.1 JSON document, version 1.0 (unsigned), as compact UTF-8 bytes. The same
    facts always give the same bytes: keys keep the samples' order, nothing is sorted."""
    return _dumps(build_myinvois_tree(facts)).encode("utf-8")


# --- the shape check ---------------------------------------------------------------------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


class _Checker:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def fail(self, rule: str, message: str, location: str) -> None:
        self.findings.append(Finding(f"MYINVOIS-{rule}", "fatal", message, location, "structure"))

    # Elements are arrays of objects; these read them and report what is malformed.
    def elements(self, node: Node, key: str, where: str, *, required: bool) -> list[Node]:
        value = node.get(key)
        if value is None:
            if required:
                self.fail("REQUIRED", f"{key} is missing", f"{where}.{key}")
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.fail("SHAPE", f"{key} must be an array of objects", f"{where}.{key}")
            return []
        if not value and required:
            self.fail("REQUIRED", f"{key} is empty", f"{where}.{key}")
        return value

    def first(self, node: Node, key: str, where: str, *, required: bool) -> Node | None:
        items = self.elements(node, key, where, required=required)
        return items[0] if items else None

    def text(self, node: Node, key: str, where: str, *, required: bool) -> str | None:
        element = self.first(node, key, where, required=required)
        if element is None:
            return None
        value = element.get("_")
        if not isinstance(value, str):
            self.fail("SHAPE", f"{key} must hold a text value", f"{where}.{key}[0]")
            return None
        if required and not value.strip():
            self.fail("REQUIRED", f"{key} is empty", f"{where}.{key}[0]")
        return value

    def number(self, node: Node, key: str, where: str, *, required: bool) -> Decimal | None:
        element = self.first(node, key, where, required=required)
        if element is None:
            return None
        value = element.get("_")
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail("AMOUNT", f"{key} must be a JSON number, not {value!r}", f"{where}.{key}[0]")
            return None
        # repr gives the shortest text that reads back as this float: 1436.5, 87.63.
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)

    def code(self, value: str | None, table: str, what: str, where: str) -> None:
        if value is not None and value.strip() and value.strip() not in codes(table):
            self.fail("CODE", f"{what} {value!r} is not in {table}", where)

    def run(self, document: Any) -> None:
        if not isinstance(document, dict):
            self.fail("ROOT", "the document must be a JSON object", "$")
            return
        for key, namespace in NAMESPACES.items():
            if document.get(key) != namespace:
                self.fail("NAMESPACE", f"{key} must be {namespace}", key)
        invoices = document.get("Invoice")
        if (
            not isinstance(invoices, list)
            or len(invoices) != 1
            or not isinstance(invoices[0], dict)
        ):
            self.fail("ROOT", "Invoice must be an array of exactly one object", "Invoice")
            return
        self.invoice(invoices[0], "Invoice[0]")

    def invoice(self, inv: Node, at: str) -> None:
        self.text(inv, "ID", at, required=True)
        issue_date = self.text(inv, "IssueDate", at, required=True)
        if issue_date and not _valid_date(issue_date):
            self.fail("DATE", f"IssueDate {issue_date!r} is not YYYY-MM-DD", f"{at}.IssueDate")
        issue_time = self.text(inv, "IssueTime", at, required=True)
        if issue_time and not _TIME.match(issue_time):
            self.fail("DATE", f"IssueTime {issue_time!r} is not HH:MM:SSZ", f"{at}.IssueTime")
        type_code = self.text(inv, "InvoiceTypeCode", at, required=True)
        type_element = self.first(inv, "InvoiceTypeCode", at, required=False) or {}
        if type_code is not None:
            version = type_element.get("listVersionID")
            if version not in VERSIONS:
                self.fail(
                    "VERSION",
                    f"InvoiceTypeCode listVersionID must be one of {sorted(VERSIONS)}",
                    f"{at}.InvoiceTypeCode",
                )
            self.code(type_code, "EInvoiceTypes", "InvoiceTypeCode", f"{at}.InvoiceTypeCode")
        currency = self.text(inv, "DocumentCurrencyCode", at, required=True)
        self.code(currency, "CurrencyCodes", "currency", f"{at}.DocumentCurrencyCode")
        tax_currency = self.text(inv, "TaxCurrencyCode", at, required=False)
        self.code(tax_currency, "CurrencyCodes", "currency", f"{at}.TaxCurrencyCode")
        if currency and currency.strip() and currency != "MYR":
            self.exchange_rate(inv, at)
        if type_code in NOTE_TYPES:
            self.billing_reference(inv, at)
        self.supplier(inv, at)
        self.customer(inv, at)
        for index, means in enumerate(self.elements(inv, "PaymentMeans", at, required=False)):
            where = f"{at}.PaymentMeans[{index}]"
            code = self.text(means, "PaymentMeansCode", where, required=False)
            self.code(code, "PaymentMethods", "payment means", f"{where}.PaymentMeansCode")
        lines = self.elements(inv, "InvoiceLine", at, required=True)
        line_sums = [self.line(line, f"{at}.InvoiceLine[{i}]") for i, line in enumerate(lines)]
        self.tax_totals(inv, at, [tax for _, tax in line_sums])
        self.monetary_total(inv, at, [amount for amount, _ in line_sums])

    def exchange_rate(self, inv: Node, at: str) -> None:
        rate = self.first(inv, "TaxExchangeRate", at, required=False)
        value = None if rate is None else rate.get("CalculationRate")
        number = None
        if isinstance(value, list) and value and isinstance(value[0], dict):
            number = value[0].get("_")
        if isinstance(number, bool) or not isinstance(number, int | float) or number <= 0:
            self.fail(
                "EXCHANGE-RATE",
                "a document not in MYR needs TaxExchangeRate/CalculationRate to MYR",
                f"{at}.TaxExchangeRate",
            )

    def billing_reference(self, inv: Node, at: str) -> None:
        for index, reference in enumerate(
            self.elements(inv, "BillingReference", at, required=False)
        ):
            where = f"{at}.BillingReference[{index}]"
            document = self.first(reference, "InvoiceDocumentReference", where, required=False)
            if document is None:
                continue
            number = self.text(
                document, "ID", f"{where}.InvoiceDocumentReference[0]", required=False
            )
            if number and number.strip():
                return
        self.fail(
            "BILLING-REFERENCE",
            "a credit, debit or refund note must name the invoice it adjusts "
            "(BillingReference/InvoiceDocumentReference/ID)",
            f"{at}.BillingReference",
        )

    def party(self, inv: Node, key: str, at: str) -> tuple[Node, str] | None:
        holder = self.first(inv, key, at, required=True)
        if holder is None:
            return None
        where = f"{at}.{key}[0]"
        party = self.first(holder, "Party", where, required=True)
        return None if party is None else (party, f"{where}.Party[0]")

    def identification(self, party: Node, where: str, label: str) -> None:
        found: dict[str, str] = {}
        for index, item in enumerate(
            self.elements(party, "PartyIdentification", where, required=True)
        ):
            element = self.first(item, "ID", f"{where}.PartyIdentification[{index}]", required=True)
            if element is None:
                continue
            scheme, value = element.get("schemeID"), element.get("_")
            location = f"{where}.PartyIdentification[{index}].ID[0]"
            if scheme not in PARTY_SCHEMES:
                self.fail("CODE", f"identification scheme {scheme!r} is not known", location)
            elif isinstance(value, str) and value.strip():
                found.setdefault(str(scheme), value)
        if "TIN" not in found:
            self.fail(f"{label}-TIN", f"the {label.lower()}'s TIN is missing", where)
        if not any(scheme in found for scheme in ID_SCHEMES):
            self.fail(
                f"{label}-ID",
                f"the {label.lower()} needs a BRN, NRIC, PASSPORT or ARMY identification",
                where,
            )

    def address(self, party: Node, where: str, *, required: bool) -> None:
        address = self.first(party, "PostalAddress", where, required=True)
        if address is None:
            return
        here = f"{where}.PostalAddress[0]"
        state = self.text(address, "CountrySubentityCode", here, required=required)
        self.code(state, "StateCodes", "state", f"{here}.CountrySubentityCode")
        country = self.first(address, "Country", here, required=True)
        if country is not None:
            code = self.text(country, "IdentificationCode", f"{here}.Country[0]", required=required)
            self.code(code, "CountryCodes", "country", f"{here}.Country[0].IdentificationCode")

    def supplier(self, inv: Node, at: str) -> None:
        found = self.party(inv, "AccountingSupplierParty", at)
        if found is None:
            return
        party, where = found
        msic = self.text(party, "IndustryClassificationCode", where, required=True)
        self.code(msic, "MSICSubCategoryCodes", "MSIC code", f"{where}.IndustryClassificationCode")
        self.identification(party, where, "SUPPLIER")
        self.address(party, where, required=True)
        legal = self.first(party, "PartyLegalEntity", where, required=True)
        if legal is not None:
            self.text(legal, "RegistrationName", f"{where}.PartyLegalEntity[0]", required=True)
        contact = self.first(party, "Contact", where, required=True)
        if contact is not None:
            self.text(contact, "Telephone", f"{where}.Contact[0]", required=True)

    def customer(self, inv: Node, at: str) -> None:
        found = self.party(inv, "AccountingCustomerParty", at)
        if found is None:
            return
        party, where = found
        self.identification(party, where, "BUYER")
        # A consolidated invoice's "general public" buyer has an empty address (the sample).
        self.address(party, where, required=False)
        legal = self.first(party, "PartyLegalEntity", where, required=True)
        if legal is not None:
            self.text(legal, "RegistrationName", f"{where}.PartyLegalEntity[0]", required=True)

    def subtotals(self, total: Node, where: str) -> Decimal:
        """Checks one TaxTotal's subtotals and returns the sum of their TaxAmounts."""
        summed = Decimal(0)
        for index, subtotal in enumerate(self.elements(total, "TaxSubtotal", where, required=True)):
            here = f"{where}.TaxSubtotal[{index}]"
            self.number(subtotal, "TaxableAmount", here, required=True)
            summed += self.number(subtotal, "TaxAmount", here, required=True) or 0
            category = self.first(subtotal, "TaxCategory", here, required=True)
            if category is None:
                continue
            code = self.text(category, "ID", f"{here}.TaxCategory[0]", required=True)
            self.code(code, "TaxTypes", "tax type", f"{here}.TaxCategory[0].ID")
            if code == "E":
                self.text(category, "TaxExemptionReason", f"{here}.TaxCategory[0]", required=True)
        return summed

    def line(self, line: Node, where: str) -> tuple[Decimal, Decimal]:
        """Checks one InvoiceLine; returns its LineExtensionAmount and tax amount."""
        self.text(line, "ID", where, required=True)
        quantity = self.first(line, "InvoicedQuantity", where, required=True)
        if quantity is not None:
            self.number(line, "InvoicedQuantity", where, required=True)
            unit = quantity.get("unitCode")
            if unit is not None:
                self.code(str(unit), "UnitTypes", "unit", f"{where}.InvoicedQuantity[0]")
        amount = self.number(line, "LineExtensionAmount", where, required=True) or Decimal(0)
        tax = Decimal(0)
        for index, total in enumerate(self.elements(line, "TaxTotal", where, required=True)):
            here = f"{where}.TaxTotal[{index}]"
            tax += self.number(total, "TaxAmount", here, required=True) or 0
            self.subtotals(total, here)
        item = self.first(line, "Item", where, required=True)
        if item is not None:
            here = f"{where}.Item[0]"
            self.text(item, "Description", here, required=True)
            classes = self.elements(item, "CommodityClassification", here, required=True)
            listed = False
            for index, entry in enumerate(classes):
                code = self.first(
                    entry,
                    "ItemClassificationCode",
                    f"{here}.CommodityClassification[{index}]",
                    required=True,
                )
                if code is not None and code.get("listID") == "CLASS":
                    listed = True
                    location = f"{here}.CommodityClassification[{index}]"
                    self.code(str(code.get("_")), "ClassificationCodes", "class", location)
            if classes and not listed:
                self.fail(
                    "REQUIRED",
                    "an item needs an ItemClassificationCode with listID CLASS",
                    f"{here}.CommodityClassification",
                )
        price = self.first(line, "Price", where, required=True)
        if price is not None:
            self.number(price, "PriceAmount", f"{where}.Price[0]", required=True)
        extension = self.first(line, "ItemPriceExtension", where, required=True)
        if extension is not None:
            self.number(extension, "Amount", f"{where}.ItemPriceExtension[0]", required=True)
        return amount, tax

    def tax_totals(self, inv: Node, at: str, line_taxes: list[Decimal]) -> None:
        for index, total in enumerate(self.elements(inv, "TaxTotal", at, required=True)):
            where = f"{at}.TaxTotal[{index}]"
            amount = self.number(total, "TaxAmount", where, required=True)
            breakdown = self.subtotals(total, where)
            # The total must agree with its own breakdown or with the lines' taxes. Either
            # is accepted because the SDK's MultiLineItem sample totals its lines (85) while
            # its one (exempt) subtotal says 100; every other sample agrees both ways.
            if amount is not None and amount not in (breakdown, sum(line_taxes, Decimal(0))):
                self.fail(
                    "TAX-TOTAL",
                    f"TaxAmount {amount} is neither the sum of its TaxSubtotals ({breakdown})"
                    f" nor of the lines' taxes ({sum(line_taxes, Decimal(0))})",
                    f"{where}.TaxAmount",
                )

    def monetary_total(self, inv: Node, at: str, line_amounts: list[Decimal]) -> None:
        total = self.first(inv, "LegalMonetaryTotal", at, required=True)
        if total is None:
            return
        where = f"{at}.LegalMonetaryTotal[0]"
        declared = self.number(total, "LineExtensionAmount", where, required=True)
        for key in ("TaxExclusiveAmount", "TaxInclusiveAmount", "PayableAmount"):
            self.number(total, key, where, required=True)
        summed = sum(line_amounts, Decimal(0))
        if declared is not None and line_amounts and declared != summed:
            self.fail(
                "LINE-TOTAL",
                f"LineExtensionAmount {declared} is not the sum of the lines ({summed})",
                f"{where}.LineExtensionAmount",
            )


def _valid_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def check_structure(document: Any) -> list[Finding]:
    """Shape problems of a loaded MyInvois JSON document; [] when it looks like the samples."""
    checker = _Checker()
    checker.run(document)
    return checker.findings
