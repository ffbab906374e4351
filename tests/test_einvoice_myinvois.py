"""MyInvois: the UBL 2.1 JSON generator, the shape check against the LHDN SDK samples, the
72-hour cancellation window, and the transports against a local MyInvois (no database)."""

from __future__ import annotations

import copy
import json
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from invoicetrail.core.clock import ManualClock
from invoicetrail.core.config import Settings
from invoicetrail.einvoicing import myinvois
from invoicetrail.einvoicing.facts import Address, AllowanceCharge, DocumentFacts, Line, Party
from invoicetrail.einvoicing.myinvois import (
    CANCELLATION_WINDOW,
    build_myinvois,
    cancellable,
    cancellation_deadline,
    check_structure,
    state_code,
)
from invoicetrail.einvoicing.myinvois_api import (
    HttpMyInvois,
    SandboxMyInvois,
    myinvois_transport,
)
from invoicetrail.einvoicing.transports import CancelRefused, TransportUnavailable
from invoicetrail.einvoicing.validation import validate_myinvois
from myinvois_server import MyInvoisServer, running_myinvois

SAMPLES = Path(__file__).parent / "fixtures" / "einvoicing" / "myinvois" / "samples"
SAMPLE_FILES = sorted(SAMPLES.glob("1.[01]-*.json"))
ISSUED = datetime(2025, 3, 3, 8, 15, 30, tzinfo=UTC)


def seller() -> Party:
    return Party(
        name="Syarikat Contoh Sdn. Bhd.",
        address=Address(
            line1="Lot 66, Bangunan Merdeka",
            line2="Persiaran Jaya",
            city="Kuala Lumpur",
            postal_code="50480",
            state="Wilayah Persekutuan Kuala Lumpur",
            country="MY",
        ),
        tax_ids=(("my_tin", "C25845632020"), ("my_sst", "W10-1808-32000001")),
        registration_id="201901234567",
        email="billing@contoh.example",
        myinvois={
            "msic_code": "62010",
            "business_activity": "Computer programming activities",
            "phone": "+60123456789",
        },
    )


def buyer() -> Party:
    return Party(
        name="Pembeli Berhad",
        address=Address(
            line1="No. 1, Jalan Ampang",
            city="Shah Alam",
            postal_code="40000",
            state="10",
            country="MY",
        ),
        tax_ids=(("my_tin", "C20880050010"),),
        registration_id="200101012345",
        email="ap@pembeli.example",
        myinvois={"phone": "+60387654321"},
    )


def facts(**changes: Any) -> DocumentFacts:
    lines = (
        Line(1, "Software licence", "2", 5050, 10100, "8", "S", 808),
        Line(2, "Training (exempt)", "1.5", 2000, 3000, "0", "E", 0, "Education services"),
    )
    base = DocumentFacts(
        regime="myinvois",
        document_type="invoice",
        number="INV-2025-0001",
        issued_at=ISSUED,
        currency="MYR",
        currency_exponent=2,
        seller=seller(),
        buyer=buyer(),
        lines=lines,
        subtotal_minor=13100,
        tax_minor=808,
        total_minor=13908,
        payable_minor=13908,
        due_date=ISSUED.date() + timedelta(days=30),
        payment_reference="ABCD-1234-5",
        bank_account={"account": "5140 1234 5678"},
    )
    return replace(base, **changes)


def note(type_code: str) -> DocumentFacts:
    return facts(
        document_type="credit_note" if type_code == "02" else "invoice",
        number=f"N{type_code}-0001",
        myinvois_type_code=type_code,
        billing_reference_number="INV-2025-0001",
        billing_reference_uuid="F9D425P6DS7D8IUMYN2DFK8X10",
        due_date=None,
    )


def load(document: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(document)
    return loaded


def rules(document: Any) -> list[str]:
    return [finding.rule for finding in check_structure(document)]


def invoice_of(document: dict[str, Any]) -> dict[str, Any]:
    invoice: dict[str, Any] = document["Invoice"][0]
    return invoice


# --- generator ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("built", "type_code"),
    [
        (facts(), "01"),
        (note("02"), "02"),
        (note("03"), "03"),
        (note("04"), "04"),
        (facts(document_type="credit_note", billing_reference_number="INV-1"), "02"),
    ],
)
def test_generated_documents_pass_the_shape_check(built: DocumentFacts, type_code: str) -> None:
    document = build_myinvois(built)
    loaded = load(document)
    assert check_structure(loaded) == []
    assert validate_myinvois(document).valid
    invoice = invoice_of(loaded)
    assert invoice["InvoiceTypeCode"] == [{"_": type_code, "listVersionID": "1.0"}]
    if type_code != "01":
        reference = invoice["BillingReference"][0]["InvoiceDocumentReference"][0]
        assert reference["ID"] == [{"_": built.billing_reference_number}]


def test_generated_shape_matches_the_sdk_sample() -> None:
    sample = json.loads((SAMPLES / "1.0-Invoice-Sample.json").read_text())
    mine = load(build_myinvois(facts()))
    assert list(mine) == list(sample)  # _D, _A, _B, Invoice
    assert {k: mine[k] for k in ("_D", "_A", "_B")} == {k: sample[k] for k in ("_D", "_A", "_B")}
    ours, theirs = invoice_of(mine), invoice_of(sample)
    assert set(ours) <= set(theirs)
    # Our keys come in the sample's order.
    assert [k for k in theirs if k in ours] == list(ours)

    def party(invoice: dict[str, Any], key: str) -> dict[str, Any]:
        found: dict[str, Any] = invoice[key][0]["Party"][0]
        return found

    for key in ("AccountingSupplierParty", "AccountingCustomerParty"):
        assert list(party(ours, key)) == list(party(theirs, key))
        assert list(party(ours, key)["PostalAddress"][0]) == list(
            party(theirs, key)["PostalAddress"][0]
        )
        assert list(party(ours, key)["Contact"][0]) == list(party(theirs, key)["Contact"][0])
    assert set(ours["LegalMonetaryTotal"][0]) <= set(theirs["LegalMonetaryTotal"][0])
    line, their_line = ours["InvoiceLine"][0], theirs["InvoiceLine"][0]
    assert set(line) <= set(their_line)
    assert set(line["Item"][0]) <= set(their_line["Item"][0])
    assert list(ours["TaxTotal"][0]) == list(theirs["TaxTotal"][0])
    assert list(ours["PaymentMeans"][0]) == list(theirs["PaymentMeans"][0])


def test_generated_values() -> None:
    invoice = invoice_of(load(build_myinvois(facts())))
    assert invoice["ID"] == [{"_": "INV-2025-0001"}]
    assert invoice["IssueDate"] == [{"_": "2025-03-03"}]
    assert invoice["IssueTime"] == [{"_": "08:15:30Z"}]
    supplier = invoice["AccountingSupplierParty"][0]["Party"][0]
    assert supplier["IndustryClassificationCode"] == [
        {"_": "62010", "name": "Computer programming activities"}
    ]
    ids = [(i["ID"][0]["schemeID"], i["ID"][0]["_"]) for i in supplier["PartyIdentification"]]
    assert ids == [
        ("TIN", "C25845632020"),
        ("BRN", "201901234567"),
        ("SST", "W10-1808-32000001"),
        ("TTX", "NA"),
    ]
    address = supplier["PostalAddress"][0]
    assert address["CountrySubentityCode"] == [{"_": "14"}]
    assert address["Country"][0]["IdentificationCode"] == [
        {"_": "MYS", "listID": "ISO3166-1", "listAgencyID": "6"}
    ]
    assert [a["Line"][0]["_"] for a in address["AddressLine"]] == [
        "Lot 66, Bangunan Merdeka",
        "Persiaran Jaya",
    ]
    assert supplier["Contact"][0]["Telephone"] == [{"_": "+60123456789"}]
    customer = invoice["AccountingCustomerParty"][0]["Party"][0]
    assert customer["PostalAddress"][0]["CountrySubentityCode"] == [{"_": "10"}]
    assert customer["Contact"][0]["Telephone"] == [{"_": "+60387654321"}]
    totals = {k: v[0]["_"] for k, v in invoice["LegalMonetaryTotal"][0].items()}
    assert totals == {
        "LineExtensionAmount": 131,
        "TaxExclusiveAmount": 131,
        "TaxInclusiveAmount": 139.08,
        "PayableAmount": 139.08,
    }
    tax = invoice["TaxTotal"][0]
    assert tax["TaxAmount"] == [{"_": 8.08, "currencyID": "MYR"}]
    subtotals = [
        (s["TaxCategory"][0]["ID"][0]["_"], s["TaxableAmount"][0]["_"], s["TaxAmount"][0]["_"])
        for s in tax["TaxSubtotal"]
    ]
    assert subtotals == [("02", 101, 8.08), ("E", 30, 0)]
    exempt = tax["TaxSubtotal"][1]["TaxCategory"][0]
    assert exempt["TaxExemptionReason"] == [{"_": "Education services"}]
    line = invoice["InvoiceLine"][1]
    assert line["InvoicedQuantity"] == [{"_": 1.5, "unitCode": "C62"}]
    assert line["Item"][0]["CommodityClassification"] == [
        {"ItemClassificationCode": [{"_": "022", "listID": "CLASS"}]}
    ]
    assert invoice["PaymentMeans"][0]["PayeeFinancialAccount"] == [
        {"ID": [{"_": "5140 1234 5678"}]}
    ]


def test_amounts_are_exact_json_numbers_and_bytes_are_deterministic() -> None:
    document = build_myinvois(facts())
    assert document == build_myinvois(facts())
    text = document.decode("utf-8")
    assert '"_":101,' in text and '"_":50.5,' in text and '"_":8.08,' in text
    assert "e+" not in text.lower() and "00000000" not in text
    # Parsed as Decimal, every amount is exactly the minor amount in major units.
    exact = json.loads(document, parse_float=Decimal)
    assert exact["Invoice"][0]["TaxTotal"][0]["TaxAmount"][0]["_"] == Decimal("8.08")
    # Compact and otherwise exactly what json.dumps writes for the parsed document.
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def test_currency_exponent_and_unicode() -> None:
    yen = facts(
        currency="JPY",
        currency_exponent=0,
        tax_currency="MYR",
        tax_in_tax_currency_minor=2424,  # 808 JPY of tax = 24.24 MYR → rate 0.03
        buyer=replace(buyer(), name="株式会社テスト", address=Address(city="Tokyo", country="JP")),
    )
    document = build_myinvois(yen)
    assert "株式会社テスト".encode() in document  # ensure_ascii=False
    invoice = invoice_of(load(document))
    assert invoice["LegalMonetaryTotal"][0]["PayableAmount"] == [{"_": 13908, "currencyID": "JPY"}]
    assert invoice["TaxExchangeRate"][0]["CalculationRate"] == [{"_": 0.03}]
    customer = invoice["AccountingCustomerParty"][0]["Party"][0]
    assert customer["PostalAddress"][0]["Country"][0]["IdentificationCode"][0]["_"] == "JPN"
    assert customer["PostalAddress"][0]["CountrySubentityCode"] == [{"_": "17"}]
    assert check_structure(load(document)) == []
    # Without a way to a rate, the shape check says what is missing.
    no_rate = build_myinvois(replace(yen, tax_in_tax_currency_minor=None))
    assert rules(load(no_rate)) == ["MYINVOIS-EXCHANGE-RATE"]


def test_buyer_without_tin_uses_the_general_tins_and_other_ids() -> None:
    person = Party(
        name="Ali bin Abu",
        address=Address(city="Ipoh", state="Perak", country="MY"),
        tax_ids=(("my_nric", "770625015324"),),
    )
    invoice = invoice_of(load(build_myinvois(facts(buyer=person))))
    customer = invoice["AccountingCustomerParty"][0]["Party"][0]
    ids = [(i["ID"][0]["schemeID"], i["ID"][0]["_"]) for i in customer["PartyIdentification"]]
    assert ids[:2] == [("TIN", "EI00000000010"), ("NRIC", "770625015324")]
    assert customer["Contact"][0]["Telephone"] == [{"_": "NA"}]
    assert customer["PostalAddress"][0]["CountrySubentityCode"] == [{"_": "08"}]
    foreign = Party(name="Acme GmbH", address=Address(city="Berlin", country="DE"))
    invoice = invoice_of(load(build_myinvois(facts(buyer=foreign))))
    customer = invoice["AccountingCustomerParty"][0]["Party"][0]
    assert customer["PartyIdentification"][0]["ID"][0]["_"] == "EI00000000020"
    assert customer["PartyIdentification"][1]["ID"] == [{"_": "NA", "schemeID": "BRN"}]


def test_allowances_prepaid_and_tax_type_choice() -> None:
    built = facts(
        allowance_charges=(AllowanceCharge(False, 1000, "Loyalty discount", "S", "8"),),
        subtotal_minor=13100,
        tax_minor=808,
        total_minor=12908,
        payable_minor=10000,
        seller=replace(seller(), myinvois={**seller().myinvois, "tax_type": "01"}),
    )
    loaded = load(build_myinvois(built))
    assert check_structure(loaded) == []
    invoice = invoice_of(loaded)
    totals = {k: v[0]["_"] for k, v in invoice["LegalMonetaryTotal"][0].items()}
    assert totals["TaxExclusiveAmount"] == 121
    assert totals["AllowanceTotalAmount"] == 10 and totals["ChargeTotalAmount"] == 0
    assert invoice["PrepaidPayment"] == [{"PaidAmount": [{"_": 29.08, "currencyID": "MYR"}]}]
    first = invoice["TaxTotal"][0]["TaxSubtotal"][0]
    assert first["TaxCategory"][0]["ID"] == [{"_": "01"}]  # the seller's sales tax
    assert first["TaxableAmount"][0]["_"] == 91  # 101 less the 10 allowance
    zero = build_myinvois(
        facts(
            lines=(Line(1, "Export", "1", 100, 100, "0", "Z", 0),),
            subtotal_minor=100,
            tax_minor=0,
            total_minor=100,
            payable_minor=100,
        )
    )
    sub = invoice_of(load(zero))["TaxTotal"][0]["TaxSubtotal"][0]
    assert sub["TaxCategory"][0]["ID"] == [{"_": "06"}]


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("14", "14"),
        ("4", "04"),
        ("Wilayah Persekutuan Kuala Lumpur", "14"),
        ("wilayah persekutuan  kuala lumpur", "14"),
        ("Kuala Lumpur", "14"),
        ("Pulau Pinang", "07"),
        ("Bavaria", "17"),
        ("99", "17"),
        (None, "17"),
    ],
)
def test_state_codes(given: str | None, code: str) -> None:
    assert state_code(given) == code


def test_payment_document_is_not_a_myinvois_document() -> None:
    with pytest.raises(ValueError):
        build_myinvois(facts(document_type="payment"))


# --- shape check -------------------------------------------------------------------------


def test_sdk_samples_are_there() -> None:
    names = {path.name for path in SAMPLE_FILES}
    assert len(names) == 22
    assert {"1.0-Invoice-Sample.json", "1.1-Invoice-ForeignCurrency-Sample.json"} <= names


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.name)
def test_every_sdk_sample_passes_the_shape_check(path: Path) -> None:
    # No exception needed: the foreign-currency JSON samples are sound; the README's broken
    # PayableAmount "abc" is in 1.1-Invoice-ForeignCurrency-Sample.xml only.
    assert [(f.rule, f.location) for f in check_structure(json.loads(path.read_text()))] == []
    assert validate_myinvois(path.read_bytes()).valid


def sample() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / "1.0-Invoice-Sample.json").read_text())
    return loaded


def test_missing_supplier_tin() -> None:
    broken = sample()
    party = invoice_of(broken)["AccountingSupplierParty"][0]["Party"][0]
    party["PartyIdentification"] = party["PartyIdentification"][1:]
    findings = check_structure(broken)
    assert [f.rule for f in findings] == ["MYINVOIS-SUPPLIER-TIN"]
    assert findings[0].location == "Invoice[0].AccountingSupplierParty[0].Party[0]"
    assert findings[0].flag == "fatal" and findings[0].source == "structure"
    # From facts: a seller without a my_tin.
    no_tin = replace(seller(), tax_ids=())
    assert rules(load(build_myinvois(facts(seller=no_tin)))) == ["MYINVOIS-SUPPLIER-TIN"]
    no_brn = replace(seller(), registration_id=None)
    assert rules(load(build_myinvois(facts(seller=no_brn)))) == ["MYINVOIS-SUPPLIER-ID"]


def test_missing_buyer_tin() -> None:
    broken = sample()
    party = invoice_of(broken)["AccountingCustomerParty"][0]["Party"][0]
    party["PartyIdentification"][0]["ID"][0]["_"] = ""
    assert rules(broken) == ["MYINVOIS-BUYER-TIN"]


def test_wrong_totals() -> None:
    broken = sample()
    invoice_of(broken)["LegalMonetaryTotal"][0]["LineExtensionAmount"][0]["_"] = 1436.51
    assert rules(broken) == ["MYINVOIS-LINE-TOTAL"]
    broken = sample()
    invoice_of(broken)["TaxTotal"][0]["TaxAmount"][0]["_"] = 87.64
    assert rules(broken) == ["MYINVOIS-TAX-TOTAL"]
    # From facts: a tax total that is neither the lines' nor the breakdown's.
    assert rules(load(build_myinvois(facts(tax_minor=809)))) == ["MYINVOIS-TAX-TOTAL"]


def test_note_without_billing_reference() -> None:
    broken = json.loads((SAMPLES / "1.0-Credit-Note-Sample.json").read_text())
    del invoice_of(broken)["BillingReference"]
    assert rules(broken) == ["MYINVOIS-BILLING-REFERENCE"]
    for type_code in ("02", "03", "04"):
        built = replace(note(type_code), billing_reference_number=None)
        assert rules(load(build_myinvois(built))) == ["MYINVOIS-BILLING-REFERENCE"]


def test_codes_and_shapes() -> None:
    broken = sample()
    invoice = invoice_of(broken)
    invoice["InvoiceTypeCode"] = [{"_": "05", "listVersionID": "1.0"}]
    invoice["DocumentCurrencyCode"] = [{"_": "QQQ"}]
    invoice["TaxTotal"][0]["TaxSubtotal"][0]["TaxCategory"][0]["ID"] = [{"_": "S"}]
    invoice["InvoiceLine"][0]["InvoicedQuantity"][0]["unitCode"] = "NOPE"
    supplier = invoice["AccountingSupplierParty"][0]["Party"][0]
    supplier["PostalAddress"][0]["CountrySubentityCode"] = [{"_": "99"}]
    supplier["IndustryClassificationCode"][0]["_"] = "12345"
    findings = check_structure(broken)
    assert {f.rule for f in findings} == {"MYINVOIS-CODE", "MYINVOIS-EXCHANGE-RATE"}
    locations = {f.location for f in findings if f.rule == "MYINVOIS-CODE"}
    assert "Invoice[0].InvoiceTypeCode" in locations
    assert "Invoice[0].TaxTotal[0].TaxSubtotal[0].TaxCategory[0].ID" in locations
    assert len(locations) == 6

    broken = sample()
    invoice = invoice_of(broken)
    invoice["LegalMonetaryTotal"][0]["PayableAmount"][0]["_"] = "abc"
    invoice["IssueTime"] = [{"_": "8:30"}]
    invoice["InvoiceTypeCode"][0]["listVersionID"] = "2.0"
    del invoice["InvoiceLine"]
    assert sorted(rules(broken)) == sorted(
        ["MYINVOIS-AMOUNT", "MYINVOIS-DATE", "MYINVOIS-VERSION", "MYINVOIS-REQUIRED"]
    )

    assert rules([]) == ["MYINVOIS-ROOT"]
    assert rules({**sample(), "Invoice": []}) == ["MYINVOIS-ROOT"]
    wrong_ns = {**sample(), "_D": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"}
    assert rules(wrong_ns) == ["MYINVOIS-NAMESPACE"]
    shapeless = sample()
    invoice_of(shapeless)["ID"] = "JSON-INV12345"
    assert rules(shapeless) == ["MYINVOIS-SHAPE"]
    assert validate_myinvois(b"{not json").fatal[0].rule == "JSON"


# --- the 72-hour window ------------------------------------------------------------------


def test_cancellation_deadline_with_an_injected_clock() -> None:
    validated = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    clock = ManualClock(validated)
    assert timedelta(hours=72) == CANCELLATION_WINDOW
    assert cancellation_deadline(validated) == datetime(2025, 3, 6, 9, 0, tzinfo=UTC)
    # Naive values are UTC (SQLite hands them back so).
    assert cancellation_deadline(validated.replace(tzinfo=None)) == cancellation_deadline(validated)
    clock.advance(timedelta(hours=71, minutes=59))
    assert cancellable(validated, clock.now())
    clock.advance(timedelta(minutes=1))
    assert cancellable(validated, clock.now())  # the deadline itself still counts
    clock.advance(timedelta(seconds=1))
    assert not cancellable(validated, clock.now())


# --- transports against the local MyInvois -----------------------------------------------


def http(server: MyInvoisServer, **options: Any) -> HttpMyInvois:
    return HttpMyInvois(
        api_url=server.url,
        identity_url=server.url,
        client_id=server.client_id,
        client_secret=server.client_secret,
        timeout_seconds=5.0,
        **options,
    )


@pytest.fixture()
def server() -> Any:
    with running_myinvois(clock=ManualClock(ISSUED + timedelta(minutes=5))) as running:
        yield running


def test_submit_poll_and_cancel_within_the_window(server: MyInvoisServer) -> None:
    transport = http(server)
    document = build_myinvois(facts())
    result = transport.submit(document, einvoice_id="ei_1", document_type="invoice")
    assert result.status == "submitted"
    assert result.external_id is not None and len(result.external_id) == 26
    assert result.external_id.isalnum()
    uid = result.detail["submission_uid"]
    stored = server.documents[result.external_id]
    assert stored.code_number == "INV-2025-0001"  # codeNumber is the document's ID
    assert stored.submission_uid == uid

    polled = transport.poll(result.external_id, result.detail)
    assert polled.status == "accepted"
    assert polled.accepted_at == ISSUED + timedelta(minutes=5)
    assert polled.detail["long_id"] and polled.detail["submission_uid"] == uid
    assert cancellation_deadline(polled.accepted_at) == ISSUED + timedelta(hours=72, minutes=5)

    server.advance(timedelta(hours=71))
    transport.cancel(result.external_id, polled.detail, "Wrong buyer details")
    assert server.status_of(result.external_id) == "Cancelled"
    assert server.documents[result.external_id].status_reason == "Wrong buyer details"
    # A cancelled document cannot be cancelled again.
    with pytest.raises(CancelRefused, match="IncorrectState"):
        transport.cancel(result.external_id, polled.detail, "again")


def test_cancel_after_72_hours_is_refused(server: MyInvoisServer) -> None:
    transport = http(server)
    result = transport.submit(build_myinvois(facts()), einvoice_id="ei_1", document_type="invoice")
    assert result.external_id is not None
    polled = transport.poll(result.external_id, result.detail)
    assert polled.accepted_at is not None
    server.advance(timedelta(hours=72, seconds=1))
    # Our own deadline agrees with the server's clock.
    assert not cancellable(polled.accepted_at, server.now())
    with pytest.raises(CancelRefused, match="OperationPeriodOver"):
        transport.cancel(result.external_id, polled.detail, "Wrong invoice details")
    assert server.status_of(result.external_id) == "Valid"


def test_settable_validated_at(server: MyInvoisServer) -> None:
    transport = http(server)
    result = transport.submit(build_myinvois(facts()), einvoice_id="ei_1", document_type="invoice")
    assert result.external_id is not None
    server.set_validated_at(result.external_id, server.now() - timedelta(hours=80))
    with pytest.raises(CancelRefused, match="OperationPeriodOver"):
        transport.cancel(result.external_id, result.detail, "late")


def test_pending_then_valid_or_invalid() -> None:
    start = ISSUED + timedelta(minutes=1)
    with running_myinvois(clock=ManualClock(start), auto_validate=False) as server:
        transport = http(server)
        first = transport.submit(build_myinvois(facts()), einvoice_id="a", document_type="invoice")
        assert first.external_id is not None
        assert transport.poll(first.external_id, first.detail).status == "submitted"
        server.validate(first.external_id)
        assert transport.poll(first.external_id, first.detail).status == "accepted"

        second = transport.submit(
            build_myinvois(facts(number="INV-2")), einvoice_id="b", document_type="invoice"
        )
        assert second.external_id is not None
        server.invalidate(second.external_id, "CF404", "Buyer TIN not found")
        polled = transport.poll(second.external_id, second.detail)
        assert polled.status == "rejected"
        assert polled.findings[0]["rule"] == "CF404"
        assert polled.findings[0]["message"] == "Buyer TIN not found"
        # An Invalid document cannot be cancelled.
        with pytest.raises(CancelRefused, match="IncorrectState"):
            transport.cancel(second.external_id, second.detail, "x")


def test_shape_problems_are_rejected_by_the_server(server: MyInvoisServer) -> None:
    transport = http(server)
    broken = build_myinvois(facts(seller=replace(seller(), tax_ids=())))
    result = transport.submit(broken, einvoice_id="ei_1", document_type="invoice")
    assert result.status == "rejected"
    assert [f["rule"] for f in result.findings] == ["MYINVOIS-SUPPLIER-TIN"]
    assert server.documents == {}


def test_server_checks_hash_and_issue_age(server: MyInvoisServer) -> None:
    transport = http(server)
    old = build_myinvois(facts(issued_at=ISSUED - timedelta(days=4)))
    result = transport.submit(old, einvoice_id="ei_1", document_type="invoice")
    assert result.status == "rejected"
    assert result.findings[0]["rule"] == "CF321"
    # A documentHash that is not the document's is refused by the server.
    token = transport.token()
    response = httpx.post(
        server.url + "/api/v1.0/documentsubmissions/",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "documents": [
                {"format": "JSON", "document": "e30=", "documentHash": "00", "codeNumber": "X"}
            ]
        },
    )
    assert response.status_code == 202
    error = response.json()["rejectedDocuments"][0]["error"]
    assert "documentHash" in error["details"][0]["message"]
    response = httpx.post(
        server.url + "/api/v1.0/documentsubmissions/",
        headers={"Authorization": f"Bearer {token}"},
        json={"documents": []},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadStructure"


def test_token_is_cached_and_renewed_on_401(server: MyInvoisServer) -> None:
    transport = http(server)
    for number in ("INV-1", "INV-2"):
        result = transport.submit(
            build_myinvois(facts(number=number)), einvoice_id=number, document_type="invoice"
        )
        assert result.status == "submitted"
    assert server.token_requests == 1
    token_call = [r for r in server.requests if r[1] == "/connect/token"]
    assert token_call == [("POST", "/connect/token")]
    server.expire_tokens()  # the next call answers 401: drop the token, log in, retry once
    result = transport.submit(
        build_myinvois(facts(number="INV-3")), einvoice_id="INV-3", document_type="invoice"
    )
    assert result.status == "submitted"
    assert server.token_requests == 2


def test_token_expiry_is_honoured() -> None:
    ticks = [0.0]
    with running_myinvois(clock=ManualClock(ISSUED), token_lifetime_seconds=3600) as server:
        transport = http(server, monotonic=lambda: ticks[0])
        transport.token()
        ticks[0] = 3000.0
        transport.token()
        assert server.token_requests == 1
        ticks[0] = 3541.0  # within a minute of expiry: renew beforehand
        transport.token()
        assert server.token_requests == 2


def test_bad_credentials_are_not_a_rejection(server: MyInvoisServer) -> None:
    transport = HttpMyInvois(
        api_url=server.url, identity_url=None, client_id="x", client_secret="y"
    )
    with pytest.raises(TransportUnavailable, match="invalid_client"):
        transport.submit(build_myinvois(facts()), einvoice_id="e", document_type="invoice")


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_outage_is_transport_unavailable(server: MyInvoisServer, status: int) -> None:
    transport = http(server)
    result = transport.submit(build_myinvois(facts()), einvoice_id="e", document_type="invoice")
    assert result.external_id is not None
    server.fail_with_status = status
    with pytest.raises(TransportUnavailable, match=str(status)):
        transport.submit(build_myinvois(facts()), einvoice_id="e", document_type="invoice")
    with pytest.raises(TransportUnavailable):
        transport.poll(result.external_id, result.detail)
    with pytest.raises(TransportUnavailable):
        transport.cancel(result.external_id, result.detail, "x")
    server.fail_with_status = None  # back up: the same calls work again
    assert transport.poll(result.external_id, result.detail).status == "accepted"


def test_outage_during_login(server: MyInvoisServer) -> None:
    server.fail_with_status = 503
    with pytest.raises(TransportUnavailable):
        http(server).submit(build_myinvois(facts()), einvoice_id="e", document_type="invoice")


def test_unreachable_port_is_transport_unavailable() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = HttpMyInvois(
        api_url=f"http://127.0.0.1:{port}",
        identity_url=None,
        client_id="c",
        client_secret="s",
        timeout_seconds=2.0,
    )
    with pytest.raises(TransportUnavailable, match="unreachable"):
        transport.submit(build_myinvois(facts()), einvoice_id="e", document_type="invoice")
    with pytest.raises(TransportUnavailable):
        transport.cancel("X" * 26, {}, "x")


def test_timeout_is_transport_unavailable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    transport = HttpMyInvois(
        api_url="http://myinvois.invalid",
        identity_url=None,
        client_id="c",
        client_secret="s",
        client=httpx.Client(transport=httpx.MockTransport(slow)),
    )
    with pytest.raises(TransportUnavailable, match="ReadTimeout"):
        transport.submit(build_myinvois(facts()), einvoice_id="e", document_type="invoice")


# --- sandbox and selection ---------------------------------------------------------------


def test_sandbox_opens_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the sandbox opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    now = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
    transport = SandboxMyInvois(clock=ManualClock(now))
    assert transport.sandbox is True and transport.regime == "myinvois"
    document = build_myinvois(facts())
    result = transport.submit(document, einvoice_id="e", document_type="invoice")
    assert result.status == "accepted"
    assert result.accepted_at == now
    assert result.external_id is not None and len(result.external_id) == 26
    assert result.external_id.isalnum() and result.external_id.isupper()
    assert result.detail["sandbox"] is True and result.detail["long_id"]
    again = transport.submit(document, einvoice_id="e", document_type="invoice")
    assert again.external_id == result.external_id  # derived from the bytes
    other = transport.submit(
        build_myinvois(facts(number="X")), einvoice_id="x", document_type="invoice"
    )
    assert other.external_id != result.external_id
    polled = transport.poll(result.external_id, result.detail)
    assert polled.status == "accepted" and polled.accepted_at == now
    transport.cancel(result.external_id, result.detail, "Wrong buyer details")


def test_transport_selection() -> None:
    assert isinstance(myinvois_transport(Settings(myinvois_url=None)), SandboxMyInvois)
    partial = Settings(myinvois_url="https://preprod-api.myinvois.hasil.gov.my")
    assert isinstance(myinvois_transport(partial), SandboxMyInvois)
    client = httpx.Client()
    try:
        configured = myinvois_transport(
            Settings(
                myinvois_url="https://preprod-api.myinvois.hasil.gov.my/",
                myinvois_identity_url="https://preprod-identity.myinvois.hasil.gov.my",
                myinvois_client_id="id",
                myinvois_client_secret="secret",
                einvoice_timeout_seconds=7.5,
            ),
            client=client,
        )
        assert isinstance(configured, HttpMyInvois)
        assert configured.sandbox is False
        assert configured.api_url == "https://preprod-api.myinvois.hasil.gov.my"
        assert configured.identity_url == "https://preprod-identity.myinvois.hasil.gov.my"
        assert configured.client is client and configured.timeout_seconds == 7.5
        same_host = myinvois_transport(
            Settings(
                myinvois_url="https://api.example",
                myinvois_client_id="i",
                myinvois_client_secret="s",
            )
        )
        assert isinstance(same_host, HttpMyInvois)
        assert same_host.identity_url == "https://api.example"
    finally:
        client.close()


def test_broken_documents_stay_broken_after_copy() -> None:
    # check_structure never mutates what it reads.
    original = sample()
    snapshot = copy.deepcopy(original)
    check_structure(original)
    assert original == snapshot
    assert myinvois.codes("TaxTypes") >= {"01", "02", "06", "E"}


def test_unknown_country_is_a_finding_not_a_crash() -> None:
    nowhere = replace(buyer(), address=Address(city="Atlantis", country="QQ"))
    assert rules(load(build_myinvois(facts(buyer=nowhere)))) == ["MYINVOIS-CODE"]


def test_wrong_api_url_is_not_a_rejection(server: MyInvoisServer) -> None:
    transport = HttpMyInvois(
        api_url=server.url + "/not-myinvois",
        identity_url=server.url,
        client_id=server.client_id,
        client_secret=server.client_secret,
    )
    with pytest.raises(TransportUnavailable, match="404"):
        transport.submit(build_myinvois(facts()), einvoice_id="e", document_type="invoice")
