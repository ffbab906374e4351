"""What a regime's document is built from: plain, market-neutral facts of one issued document.

The invoice core hands these over at finalize (and for credit notes and payments); the
generators never read the database, so a document is a pure function of its facts and the
same facts always give the same bytes. Facts are stored with the submission as JSON, which
is what a correction rebuilds from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Literal

DocumentType = Literal["invoice", "credit_note", "payment"]


@dataclass(frozen=True)
class Address:
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    postal_code: str | None = None
    state: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2, upper case


@dataclass(frozen=True)
class Party:
    name: str
    address: Address
    # [{"type": "eu_vat" | "mx_rfc" | "my_tin" | "my_brn" | "my_nric" | "my_sst" | …, "value"}]
    tax_ids: tuple[tuple[str, str], ...] = ()
    peppol_id: str | None = None  # "0088:7300010000001" (EAS scheme : identifier)
    registration_id: str | None = None  # company / legal registration number
    email: str | None = None
    phone: str | None = None
    contact_name: str | None = None  # the person or desk to ask (XRechnung wants one)
    # CFDI: seller {"fiscal_regime", "expedition_postal_code"}; buyer {"fiscal_regime", "cfdi_use"}
    cfdi: dict[str, str] = field(default_factory=dict)
    # MyInvois: seller {"msic_code", "business_activity", "phone"}; buyer {"phone"}
    myinvois: dict[str, str] = field(default_factory=dict)

    def tax_id(self, kind: str) -> str | None:
        return next((value for k, value in self.tax_ids if k == kind), None)


@dataclass(frozen=True)
class Line:
    position: int  # 1-based
    description: str
    quantity: str  # decimal string, e.g. "2" or "1.5"
    unit_amount_minor: int  # net unit price in minor units
    amount_minor: int  # net line amount in minor units (quantity × unit, rounded half-up)
    tax_rate: str  # percent as a decimal string, e.g. "19" or "7.5"
    tax_category: str  # EN 16931 VAT category: S, Z, E, AE, K, G, O, L, M
    tax_minor: int  # the line's tax as the invoice core computed it (rounded per line)
    tax_exemption_reason: str | None = None
    cfdi_product_code: str | None = None  # default 01010101
    cfdi_unit_code: str | None = None  # default E48


@dataclass(frozen=True)
class AllowanceCharge:
    """A document-level allowance (is_charge False) or charge, net, with its VAT category."""

    is_charge: bool
    amount_minor: int
    reason: str
    tax_category: str
    tax_rate: str


@dataclass(frozen=True)
class PaymentFacts:
    """A payment received on a CFDI PPD invoice: the Pagos 2.0 complement's content."""

    paid_at: datetime
    amount_minor: int
    method: str  # card | bank_transfer | …; mapped to SAT FormaDePago
    reference: str
    invoice_uuid: str | None  # the stamped UUID of the paid invoice's CFDI, if stamped
    invoice_number: str
    invoice_total_minor: int
    balance_before_minor: int
    installment: int  # 1 for the first payment on the invoice


@dataclass(frozen=True)
class DocumentFacts:
    regime: str  # peppol | cfdi | myinvois
    document_type: DocumentType
    number: str  # the invoice / credit note number (cbc:ID, Folio)
    issued_at: datetime  # finalized_at (invoice) / created_at (credit note), UTC
    currency: str  # ISO 4217, upper case
    currency_exponent: int  # 2 for EUR, 0 for JPY, 3 for KWD
    seller: Party
    buyer: Party
    lines: tuple[Line, ...]
    subtotal_minor: int  # sum of line amounts (net)
    tax_minor: int  # sum of line taxes as the invoice core computed them
    total_minor: int  # subtotal + tax
    payable_minor: int  # amount due at issue (total minus credit already applied)
    due_date: date | None = None
    buyer_reference: str | None = None
    purchase_order: str | None = None
    payment_reference: str | None = None  # bank-transfer reference (XXXX-XXXX-C)
    bank_account: dict[str, str] = field(default_factory=dict)  # {"iban", "bic"}
    collection_method: str = "send_invoice"  # send_invoice → CFDI PPD; charge_automatically → PUE
    # Credit notes: the credited invoice.
    billing_reference_number: str | None = None
    billing_reference_issue_date: date | None = None
    billing_reference_uuid: str | None = None  # CFDI UUID / MyInvois UUID of the invoice
    note: str | None = None  # credit note reason
    allowance_charges: tuple[AllowanceCharge, ...] = ()
    tax_currency: str | None = None  # BT-6, when VAT is accounted in another currency
    tax_in_tax_currency_minor: int | None = None
    payment: PaymentFacts | None = None
    # MyInvois document kind: invoice 01, credit 02, debit 03, refund 04.
    myinvois_type_code: str | None = None
    test: bool = False  # signed with a generated test certificate; never to a real PAC
    customer_id: str | None = None  # whose current data a correction rebuilds the buyer from

    @property
    def issue_date(self) -> date:
        return self.issued_at.date()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(asdict(self))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DocumentFacts:
        def party(p: dict[str, Any]) -> Party:
            return Party(
                name=p["name"],
                address=Address(**p["address"]),
                tax_ids=tuple((k, v) for k, v in p["tax_ids"]),
                peppol_id=p.get("peppol_id"),
                registration_id=p.get("registration_id"),
                email=p.get("email"),
                phone=p.get("phone"),
                contact_name=p.get("contact_name"),
                cfdi=dict(p.get("cfdi") or {}),
                myinvois=dict(p.get("myinvois") or {}),
            )

        payment = data.get("payment")
        return cls(
            regime=data["regime"],
            document_type=data["document_type"],
            number=data["number"],
            issued_at=datetime.fromisoformat(data["issued_at"]),
            currency=data["currency"],
            currency_exponent=data["currency_exponent"],
            seller=party(data["seller"]),
            buyer=party(data["buyer"]),
            lines=tuple(Line(**line) for line in data["lines"]),
            subtotal_minor=data["subtotal_minor"],
            tax_minor=data["tax_minor"],
            total_minor=data["total_minor"],
            payable_minor=data["payable_minor"],
            due_date=_date(data.get("due_date")),
            buyer_reference=data.get("buyer_reference"),
            purchase_order=data.get("purchase_order"),
            payment_reference=data.get("payment_reference"),
            bank_account=dict(data.get("bank_account") or {}),
            collection_method=data.get("collection_method", "send_invoice"),
            billing_reference_number=data.get("billing_reference_number"),
            billing_reference_issue_date=_date(data.get("billing_reference_issue_date")),
            billing_reference_uuid=data.get("billing_reference_uuid"),
            note=data.get("note"),
            allowance_charges=tuple(
                AllowanceCharge(**item) for item in data.get("allowance_charges") or ()
            ),
            tax_currency=data.get("tax_currency"),
            tax_in_tax_currency_minor=data.get("tax_in_tax_currency_minor"),
            payment=None
            if payment is None
            else PaymentFacts(**{**payment, "paid_at": datetime.fromisoformat(payment["paid_at"])}),
            myinvois_type_code=data.get("myinvois_type_code"),
            test=bool(data.get("test", False)),
            customer_id=data.get("customer_id"),
        )


def _date(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def major(amount_minor: int, exponent: int) -> str:
    """Minor units as a plain decimal string in major units: 12345, 2 → "123.45"."""
    sign = "-" if amount_minor < 0 else ""
    digits = str(abs(amount_minor))
    if exponent == 0:
        return sign + digits
    digits = digits.rjust(exponent + 1, "0")
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"
