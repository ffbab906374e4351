"""Peppol BIS Billing 3.0: a UBL 2.1 Invoice or CreditNote built from an issued document's facts.

The document is a pure function of its facts (same facts, same bytes), so a stored submission
can always be rebuilt. Element order follows the UBL 2.1 XSD sequences, which are strict.

Amounts. EN 16931 reads every amount except unit prices with at most 2 decimals (BR-DEC-*).
Currencies with up to 2 decimals are written in their own exponent ("1200" JPY, "12.00" EUR);
3-decimal currencies (KWD, BHD, …) are written with 2 decimals and can only be expressed when
every amount is a whole multiple of 10 fils; `unsupported()` says when they are not.

VAT. The invoice core rounds VAT per line; EN 16931 wants each VAT breakdown group rounded once
(BR-CO-17). The breakdown here is group-rounded, and the few minor units between that and the
core's total go into PayableRoundingAmount, so PayableAmount is always the amount due at issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from lxml import etree

from invoicetrail.core.money import currency_exponent, round_half_up
from invoicetrail.einvoicing.facts import AllowanceCharge, DocumentFacts, Line, Party, major

CUSTOMIZATION_ID = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PROFILE_ID = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
ROOT = {
    "invoice": ("Invoice", "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"),
    "credit_note": ("CreditNote", "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"),
}
INVOICE_TYPE_CODE = "380"  # commercial invoice
CREDIT_NOTE_TYPE_CODE = "381"
UNIT_CODE_ONE = "C62"  # UN/ECE rec 20 "one": our lines carry no unit of measure
CATEGORIES = frozenset({"S", "Z", "E", "AE", "K", "G", "O", "L", "M"})
# Only these categories may (and AE/K/G/O/E must) state an exemption reason (BR-*-10).
REASON_CATEGORIES = frozenset({"E", "AE", "K", "G", "O"})
# A reason for the categories whose wording the law fixes; E depends on the exempting article,
# so it has no default and the validator reports BR-E-10 when the line gave none.
DEFAULT_EXEMPTION = {
    "AE": ("VATEX-EU-AE", "Reverse charge"),
    "K": ("VATEX-EU-IC", "Intra-Community supply"),
    "G": ("VATEX-EU-G", "Export outside the EU"),
    "O": ("VATEX-EU-O", "Not subject to VAT"),
}
# Country rules demand a scheme on the legal registration id: DK CVR (DK-R-014/017), NL KvK or,
# for 20-digit government numbers, OIN (NL-R-003/005).
DK_CVR_SCHEME = "0184"
NL_KVK_SCHEME = "0106"
NL_OIN_SCHEME = "0190"
NL_OIN_DIGITS = 20
ITEM_NAME_MAX_CHARS = 100
# PEPPOL-EN16931-R120 accepts line amount = quantity × price within 0.02 (major units).
LINE_PRICE_SLACK = Decimal("0.02")
# Digits of an effective unit price written when the real one cannot meet R120 (see _price).
EFFECTIVE_PRICE_QUANTUM = Decimal("1e-10")
# EN 16931 allows at most 2 decimals on amounts (BR-DEC-*).
MAX_AMOUNT_DECIMALS = 2


@dataclass(frozen=True)
class _Money:
    code: str
    exponent: int

    @property
    def step_minor(self) -> int:
        """The smallest amount, in minor units, that 2 decimals can express (10 fils for KWD)."""
        return int(10 ** max(self.exponent - MAX_AMOUNT_DECIMALS, 0))

    def fits(self, amount_minor: int) -> bool:
        return amount_minor % self.step_minor == 0

    def text(self, amount_minor: int) -> str:
        if not self.fits(amount_minor):
            raise ValueError(
                f"{major(amount_minor, self.exponent)} {self.code} has more than "
                f"{MAX_AMOUNT_DECIMALS} decimals, which EN 16931 cannot express"
            )
        return major(amount_minor // self.step_minor, min(self.exponent, MAX_AMOUNT_DECIMALS))

    def rounded(self, value_minor: Decimal) -> int:
        """Half-up to what the document can state: whole minor units, or 10 fils for KWD."""
        return round_half_up(value_minor / self.step_minor) * self.step_minor


@dataclass
class _TaxGroup:
    category: str
    rate: Decimal
    taxable_minor: int = 0
    tax_minor: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class _Totals:
    line_extension_minor: int
    allowance_minor: int
    charge_minor: int
    tax_exclusive_minor: int
    tax_minor: int
    tax_inclusive_minor: int
    prepaid_minor: int
    rounding_minor: int
    payable_minor: int
    groups: tuple[_TaxGroup, ...]


def unsupported(facts: DocumentFacts) -> tuple[str, ...]:
    """Why `build_ubl` would refuse these facts (empty when it will not); for pre-checks."""
    problems: list[str] = []
    if facts.document_type not in ROOT:
        problems.append(f"document_type {facts.document_type!r} has no Peppol BIS document")
    if not facts.lines:
        problems.append("a Peppol document needs at least one line (BR-16)")
    money = _Money(facts.currency, facts.currency_exponent)
    categories = [line.tax_category for line in facts.lines] + [
        item.tax_category for item in facts.allowance_charges
    ]
    problems += [f"unknown VAT category {c!r}" for c in sorted(set(categories) - CATEGORIES)]
    if "O" in categories and set(categories) != {"O"}:
        problems.append("VAT category O cannot be combined with other categories (BR-O-11)")
    for line in facts.lines:
        if _decimal(line.quantity) is None:
            problems.append(f"line {line.position}: quantity {line.quantity!r} is not a number")
        if _decimal(line.tax_rate) is None:
            problems.append(f"line {line.position}: tax_rate {line.tax_rate!r} is not a number")
        elif _decimal(line.quantity) == 0 and line.amount_minor != 0:
            problems.append(f"line {line.position}: a zero quantity with a non-zero amount")
    for item in facts.allowance_charges:
        if _decimal(item.tax_rate) is None:
            problems.append(f"allowance/charge tax_rate {item.tax_rate!r} is not a number")
    amounts = [line.amount_minor for line in facts.lines] + [
        item.amount_minor for item in facts.allowance_charges
    ]
    amounts += [facts.total_minor, facts.payable_minor]
    if any(not money.fits(amount) for amount in amounts):
        problems.append(
            f"{facts.currency} amounts with more than {MAX_AMOUNT_DECIMALS} decimals cannot be "
            "expressed in EN 16931 (BR-DEC-*)"
        )
    if sum(line.amount_minor for line in facts.lines) != facts.subtotal_minor:
        problems.append("subtotal_minor is not the sum of the line amounts")
    if facts.payable_minor > facts.total_minor:
        problems.append("payable_minor exceeds total_minor")
    for role, party in (("seller", facts.seller), ("buyer", facts.buyer)):
        if party.peppol_id is not None and _endpoint(party.peppol_id) is None:
            problems.append(f"{role} peppol_id {party.peppol_id!r} is not '<scheme>:<identifier>'")
    problems += _tax_currency_problems(facts)
    if not problems:
        problems += _rounding_problems(facts)
    return tuple(problems)


def build_ubl(facts: DocumentFacts) -> bytes:
    problems = unsupported(facts)
    if problems:
        raise ValueError(
            f"cannot build a Peppol document for {facts.number}: {'; '.join(problems)}"
        )
    money = _Money(facts.currency, facts.currency_exponent)
    totals = _totals(facts, money)
    is_invoice = facts.document_type == "invoice"
    root_name, root_ns = ROOT[facts.document_type]
    root = etree.Element(f"{{{root_ns}}}{root_name}", nsmap={None: root_ns, "cac": CAC, "cbc": CBC})

    _text(root, "cbc:CustomizationID", CUSTOMIZATION_ID)
    _text(root, "cbc:ProfileID", PROFILE_ID)
    _text(root, "cbc:ID", facts.number)
    _text(root, "cbc:IssueDate", facts.issue_date.isoformat())
    if is_invoice:
        _text(root, "cbc:DueDate", _iso(facts.due_date))
        _text(root, "cbc:InvoiceTypeCode", INVOICE_TYPE_CODE)
    else:
        _text(root, "cbc:CreditNoteTypeCode", CREDIT_NOTE_TYPE_CODE)
    _text(root, "cbc:Note", facts.note)
    _text(root, "cbc:DocumentCurrencyCode", facts.currency)
    _text(root, "cbc:TaxCurrencyCode", facts.tax_currency)
    _text(root, "cbc:BuyerReference", facts.buyer_reference)
    if _present(facts.purchase_order):
        _text(_el(root, "cac:OrderReference"), "cbc:ID", facts.purchase_order)
    if not is_invoice and _present(facts.billing_reference_number):
        reference = _el(_el(root, "cac:BillingReference"), "cac:InvoiceDocumentReference")
        _text(reference, "cbc:ID", facts.billing_reference_number)
        _text(reference, "cbc:IssueDate", _iso(facts.billing_reference_issue_date))

    # A document with only category O must not name any VAT identifier (BR-O-02..04).
    show_vat_ids = totals.groups[0].category != "O"
    _party(root, "cac:AccountingSupplierParty", facts.seller, show_vat_ids, is_seller=True)
    _party(root, "cac:AccountingCustomerParty", facts.buyer, show_vat_ids, is_seller=False)
    if any(group.category == "K" for group in totals.groups):
        # Intra-community supplies must state when and to which member state (BR-IC-11/12).
        delivery = _el(root, "cac:Delivery")
        _text(delivery, "cbc:ActualDeliveryDate", facts.issue_date.isoformat())
        if _present(facts.buyer.address.country):
            address = _el(_el(delivery, "cac:DeliveryLocation"), "cac:Address")
            country = _el(address, "cac:Country")
            _text(country, "cbc:IdentificationCode", facts.buyer.address.country)
    _payment(root, facts, is_invoice)
    for item in facts.allowance_charges:
        _allowance_charge(root, item, money)

    tax_total = _el(root, "cac:TaxTotal")
    _amount(tax_total, "cbc:TaxAmount", totals.tax_minor, money)
    for group in totals.groups:
        subtotal = _el(tax_total, "cac:TaxSubtotal")
        _amount(subtotal, "cbc:TaxableAmount", group.taxable_minor, money)
        _amount(subtotal, "cbc:TaxAmount", group.tax_minor, money)
        _tax_category(subtotal, "cac:TaxCategory", group.category, group.rate, _exemption(group))
    if facts.tax_currency is not None and facts.tax_in_tax_currency_minor is not None:
        # VAT in accounting currency (BT-111): a second TaxTotal with no breakdown (BR-53).
        tax_money = _Money(facts.tax_currency, currency_exponent(facts.tax_currency) or 0)
        _amount(
            _el(root, "cac:TaxTotal"), "cbc:TaxAmount", facts.tax_in_tax_currency_minor, tax_money
        )

    monetary = _el(root, "cac:LegalMonetaryTotal")
    _amount(monetary, "cbc:LineExtensionAmount", totals.line_extension_minor, money)
    _amount(monetary, "cbc:TaxExclusiveAmount", totals.tax_exclusive_minor, money)
    _amount(monetary, "cbc:TaxInclusiveAmount", totals.tax_inclusive_minor, money)
    if any(not item.is_charge for item in facts.allowance_charges):
        _amount(monetary, "cbc:AllowanceTotalAmount", totals.allowance_minor, money)
    if any(item.is_charge for item in facts.allowance_charges):
        _amount(monetary, "cbc:ChargeTotalAmount", totals.charge_minor, money)
    if totals.prepaid_minor:
        _amount(monetary, "cbc:PrepaidAmount", totals.prepaid_minor, money)
    if totals.rounding_minor:
        _amount(monetary, "cbc:PayableRoundingAmount", totals.rounding_minor, money)
    _amount(monetary, "cbc:PayableAmount", totals.payable_minor, money)

    for line in facts.lines:
        _line(root, line, money, is_invoice)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _totals(facts: DocumentFacts, money: _Money) -> _Totals:
    groups = _tax_groups(facts, money)
    allowance_minor = sum(i.amount_minor for i in facts.allowance_charges if not i.is_charge)
    charge_minor = sum(i.amount_minor for i in facts.allowance_charges if i.is_charge)
    line_extension_minor = sum(line.amount_minor for line in facts.lines)
    tax_exclusive_minor = line_extension_minor - allowance_minor + charge_minor
    tax_minor = sum(group.tax_minor for group in groups)
    tax_inclusive_minor = tax_exclusive_minor + tax_minor
    # BR-CO-16: Payable = TaxInclusive - Prepaid + Rounding, with Payable and the core's total
    # fixed; credit already applied at issue is the prepaid amount.
    return _Totals(
        line_extension_minor=line_extension_minor,
        allowance_minor=allowance_minor,
        charge_minor=charge_minor,
        tax_exclusive_minor=tax_exclusive_minor,
        tax_minor=tax_minor,
        tax_inclusive_minor=tax_inclusive_minor,
        prepaid_minor=facts.total_minor - facts.payable_minor,
        rounding_minor=facts.total_minor - tax_inclusive_minor,
        payable_minor=facts.payable_minor,
        groups=groups,
    )


def _tax_groups(facts: DocumentFacts, money: _Money) -> tuple[_TaxGroup, ...]:
    """One group per (category, rate), in order of first appearance so the bytes are stable."""
    groups: dict[tuple[str, Decimal], _TaxGroup] = {}

    def group_for(category: str, rate_text: str) -> _TaxGroup:
        rate = _decimal(rate_text) or Decimal(0)
        key = (category, rate)
        if key not in groups:
            groups[key] = _TaxGroup(category, rate)
        return groups[key]

    for line in facts.lines:
        group = group_for(line.tax_category, line.tax_rate)
        group.taxable_minor += line.amount_minor
        if group.reason is None and _present(line.tax_exemption_reason):
            group.reason = line.tax_exemption_reason
    for item in facts.allowance_charges:
        group = group_for(item.tax_category, item.tax_rate)
        group.taxable_minor += item.amount_minor if item.is_charge else -item.amount_minor
    for group in groups.values():
        # O carries no rate (BR-O-05); every other exempt category is 0 %, so its VAT is 0.
        rate = Decimal(0) if group.category == "O" else group.rate
        group.tax_minor = money.rounded(Decimal(group.taxable_minor) * rate / 100)
    return tuple(groups.values())


def _rounding_problems(facts: DocumentFacts) -> list[str]:
    """The rounding amount may only absorb rounding, never a missing allowance or tax."""
    money = _Money(facts.currency, facts.currency_exponent)
    totals = _totals(facts, money)
    # Per-line rounding moves the core's VAT by at most half a step per line or allowance. An
    # amount-only credit note splits VAT in the invoice's own ratio, which carries that
    # invoice's per-line rounding into one line: allow what BR-CO-17 itself tolerates per group,
    # less than one major unit.
    items = len(facts.lines) + len(facts.allowance_charges)
    limit_minor = items * money.step_minor + len(totals.groups) * (10**money.exponent - 1)
    if abs(totals.rounding_minor) > limit_minor:
        return [
            f"total_minor {facts.total_minor} differs from lines, allowances/charges and VAT "
            f"({totals.tax_inclusive_minor}) by more than rounding"
        ]
    if not money.fits(totals.rounding_minor):
        return [f"the rounding difference {totals.rounding_minor} is not expressible"]
    return []


def _tax_currency_problems(facts: DocumentFacts) -> list[str]:
    if facts.tax_currency is None and facts.tax_in_tax_currency_minor is None:
        return []
    if facts.tax_currency is None or facts.tax_in_tax_currency_minor is None:
        return ["tax_currency and tax_in_tax_currency_minor go together (BR-53)"]
    if facts.tax_currency == facts.currency:
        return ["tax_currency must differ from the document currency (PEPPOL-EN16931-R005)"]
    exponent = currency_exponent(facts.tax_currency)
    if exponent is None:
        return [f"tax_currency {facts.tax_currency!r} is not an ISO 4217 currency"]
    if not _Money(facts.tax_currency, exponent).fits(facts.tax_in_tax_currency_minor):
        return [f"the {facts.tax_currency} VAT amount has more than 2 decimals (BR-DEC-15)"]
    return []


def _party(
    root: etree._Element, tag: str, party: Party, show_vat_id: bool, *, is_seller: bool
) -> None:
    element = _el(_el(root, tag), "cac:Party")
    endpoint = _endpoint(party.peppol_id) if party.peppol_id else None
    if endpoint is not None:
        _text(element, "cbc:EndpointID", endpoint[1], schemeID=endpoint[0])
    _text(_el(element, "cac:PartyName"), "cbc:Name", party.name)
    address = _el(element, "cac:PostalAddress")
    _text(address, "cbc:StreetName", party.address.line1)
    _text(address, "cbc:AdditionalStreetName", party.address.line2)
    _text(address, "cbc:CityName", party.address.city)
    _text(address, "cbc:PostalZone", party.address.postal_code)
    _text(address, "cbc:CountrySubentity", party.address.state)
    if _present(party.address.country):
        _text(_el(address, "cac:Country"), "cbc:IdentificationCode", party.address.country)
    vat_id = party.tax_id("eu_vat")
    if show_vat_id and _present(vat_id):
        tax_scheme = _el(element, "cac:PartyTaxScheme")
        _text(tax_scheme, "cbc:CompanyID", vat_id)
        _text(_el(tax_scheme, "cac:TaxScheme"), "cbc:ID", "VAT")
    legal = _el(element, "cac:PartyLegalEntity")
    _text(legal, "cbc:RegistrationName", party.name)
    scheme = _registration_scheme(party)
    _text(legal, "cbc:CompanyID", party.registration_id, **({"schemeID": scheme} if scheme else {}))
    telephone = _telephone(party) if is_seller else None
    if _present(party.email) or _present(telephone):
        contact = _el(element, "cac:Contact")
        # XRechnung (DE-R-005) wants a contact name; the party's own name is the contact point.
        _text(contact, "cbc:Name", (party.contact_name or party.name) if is_seller else None)
        _text(contact, "cbc:Telephone", telephone)
        _text(contact, "cbc:ElectronicMail", party.email)


def _registration_scheme(party: Party) -> str | None:
    country = party.address.country
    if country == "DK":
        return DK_CVR_SCHEME
    if country == "NL":
        number = (party.registration_id or "").strip()
        is_oin = len(number) == NL_OIN_DIGITS and number.isdigit()
        return NL_OIN_SCHEME if is_oin else NL_KVK_SCHEME
    return None


def _telephone(party: Party) -> str | None:
    # German domestic invoices need one (DE-R-006); a MyInvois phone serves as well.
    return party.phone or party.myinvois.get("phone")


def _payment(root: etree._Element, facts: DocumentFacts, is_invoice: bool) -> None:
    iban = facts.bank_account.get("iban")
    bic = facts.bank_account.get("bic")
    means = _el(root, "cac:PaymentMeans")
    _text(means, "cbc:PaymentMeansCode", _payment_means_code(facts, iban, bic))
    if not is_invoice:
        # UBL 2.1 CreditNote has no DueDate; BIS maps BT-9 here for credit notes.
        _text(means, "cbc:PaymentDueDate", _iso(facts.due_date))
    _text(means, "cbc:PaymentID", facts.payment_reference)
    if _present(iban):
        account = _el(means, "cac:PayeeFinancialAccount")
        _text(account, "cbc:ID", iban)
        if _present(bic):
            _text(_el(account, "cac:FinancialInstitutionBranch"), "cbc:ID", bic)
    if facts.due_date is not None:
        _text(_el(root, "cac:PaymentTerms"), "cbc:Note", f"Due {facts.due_date.isoformat()}")


def _payment_means_code(facts: DocumentFacts, iban: str | None, bic: str | None) -> str:
    if not _present(iban):
        return "1"  # instrument not defined
    domestic_dk = facts.seller.address.country == facts.buyer.address.country == "DK"
    if domestic_dk:
        # DK-R-005 refuses 30 between Danish parties; 31 needs account and bank (DK-R-006).
        return "31" if _present(bic) else "58"
    # SEPA credit transfer exists only in euro; any other currency is a plain credit transfer.
    return "58" if facts.currency == "EUR" else "30"


def _allowance_charge(root: etree._Element, item: AllowanceCharge, money: _Money) -> None:
    element = _el(root, "cac:AllowanceCharge")
    _text(element, "cbc:ChargeIndicator", "true" if item.is_charge else "false")
    _text(element, "cbc:AllowanceChargeReason", item.reason)
    _amount(element, "cbc:Amount", item.amount_minor, money)
    _tax_category(element, "cac:TaxCategory", item.tax_category, _decimal(item.tax_rate))


def _line(root: etree._Element, line: Line, money: _Money, is_invoice: bool) -> None:
    element = _el(root, "cac:InvoiceLine" if is_invoice else "cac:CreditNoteLine")
    _text(element, "cbc:ID", str(line.position))
    quantity, price = _price(line, money)
    quantity_tag = "cbc:InvoicedQuantity" if is_invoice else "cbc:CreditedQuantity"
    _text(element, quantity_tag, quantity, unitCode=UNIT_CODE_ONE)
    _amount(element, "cbc:LineExtensionAmount", line.amount_minor, money)
    item = _el(element, "cac:Item")
    name = _item_name(line.description)
    if name != line.description.strip():
        _text(item, "cbc:Description", line.description.strip())
    _text(item, "cbc:Name", name)
    _tax_category(item, "cac:ClassifiedTaxCategory", line.tax_category, _decimal(line.tax_rate))
    _text(_el(element, "cac:Price"), "cbc:PriceAmount", price, currencyID=money.code)


def _price(line: Line, money: _Money) -> tuple[str, str]:
    """Quantity and net unit price such that quantity × price = line amount (R120, BR-27)."""
    quantity = _decimal(line.quantity) or Decimal(0)
    unit_minor = line.unit_amount_minor
    if unit_minor < 0:
        # A price is never negative (BR-27): a credit line is a negative quantity instead.
        quantity, unit_minor = -quantity, -unit_minor
    scale = Decimal(10) ** money.exponent
    gap = abs(Decimal(line.amount_minor) - quantity * unit_minor) / scale
    if gap <= LINE_PRICE_SLACK:
        return _plain(quantity), major(unit_minor, money.exponent)
    # A whole-unit currency with a fractional quantity: the half-up rounded line amount is
    # further than R120 allows from quantity × price, so state the effective net price.
    effective = (Decimal(line.amount_minor) / quantity / scale).quantize(EFFECTIVE_PRICE_QUANTUM)
    return _plain(quantity), _plain(effective)


def _item_name(description: str) -> str:
    first_line = description.strip().splitlines()[0].strip() if description.strip() else ""
    if len(first_line) <= ITEM_NAME_MAX_CHARS:
        return first_line
    return first_line[: ITEM_NAME_MAX_CHARS - 1].rstrip() + "…"


def _exemption(group: _TaxGroup) -> tuple[str | None, str | None]:
    """(code, reason) for a breakdown group; S, Z, L and M must state none (BR-S-10, …)."""
    if group.category not in REASON_CATEGORIES:
        return None, None
    code, default_reason = DEFAULT_EXEMPTION.get(group.category, (None, None))
    return code, group.reason if _present(group.reason) else default_reason


def _tax_category(
    parent: etree._Element,
    tag: str,
    category: str,
    rate: Decimal | None,
    exemption: tuple[str | None, str | None] = (None, None),
) -> None:
    element = _el(parent, tag)
    _text(element, "cbc:ID", category)
    if category != "O":
        _text(element, "cbc:Percent", _plain(rate or Decimal(0)))
    _text(element, "cbc:TaxExemptionReasonCode", exemption[0])
    _text(element, "cbc:TaxExemptionReason", exemption[1])
    _text(_el(element, "cac:TaxScheme"), "cbc:ID", "VAT")


def _endpoint(peppol_id: str) -> tuple[str, str] | None:
    scheme, sep, identifier = peppol_id.partition(":")
    if not sep or not scheme.strip() or not identifier.strip():
        return None
    return scheme.strip(), identifier.strip()


def _amount(parent: etree._Element, tag: str, amount_minor: int, money: _Money) -> None:
    _text(parent, tag, money.text(amount_minor), currencyID=money.code)


def _el(parent: etree._Element, tag: str) -> etree._Element:
    return etree.SubElement(parent, _qname(tag))


def _text(parent: etree._Element, tag: str, value: str | None, **attributes: str) -> None:
    """Adds the element only when it has content: Peppol refuses empty ones (R008)."""
    if value is None or not value.strip():
        return
    element = etree.SubElement(parent, _qname(tag), attributes)
    element.text = value.strip()


def _qname(tag: str) -> str:
    prefix, _, local = tag.partition(":")
    return f"{{{CAC if prefix == 'cac' else CBC}}}{local}"


def _present(value: str | None) -> bool:
    return value is not None and bool(value.strip())


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _plain(value: Decimal) -> str:
    """No exponent and no trailing zeros: Decimal("7.50") → "7.5", Decimal("1E+1") → "10"."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text
