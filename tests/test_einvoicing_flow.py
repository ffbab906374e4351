"""The e-invoicing branch end to end through the real ASGI app and the real worker job, on
SQLite and PostgreSQL: routing at finalize, pre-checks, the document as submitted, the queue
per market (one market's outage holds back no other), corrections approved by a second
person, the MyInvois 72-hour cancellation window, and the trace.

Transports are the product's own: the built-in sandboxes, and the HTTP adapters pointed at
local servers this module starts (or at a port nothing listens on, for an outage).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from lxml import etree

from conftest import (
    PG_TEST_DB,
    Api,
    create_account,
    make_settings,
    prepare_postgres_database,
    prepare_sqlite_database,
)
from invoicetrail.api import AppState, create_app
from invoicetrail.core.clock import ManualClock
from invoicetrail.core.config import Settings
from invoicetrail.einvoicing import service as einvoicing
from invoicetrail.einvoicing.access_point import HttpAccessPoint, SandboxAccessPoint
from invoicetrail.einvoicing.myinvois_api import myinvois_transport
from invoicetrail.einvoicing.pac import SandboxPac
from invoicetrail.einvoicing.transports import Transport
from servers import free_port

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
UBL = {
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
}
SELLER_PEPPOL = "0088:7300010000001"
BUYER_PEPPOL = "0088:4000001000005"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def einvoice_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    # A database of its own: the queue job takes every due document, so no other test's
    # documents may be in it.
    if request.param == "sqlite":
        return prepare_sqlite_database(tmp_path_factory.mktemp("einvoicing"))
    return prepare_postgres_database(PG_TEST_DB + "_einv")


@dataclass
class Flow:
    api: Api
    clock: ManualClock
    settings: Settings
    state: AppState
    transports: dict[str, Transport] = field(default_factory=dict)

    def run_worker(self) -> int:
        return einvoicing.process_due(
            self.state.sessions, self.clock, self.settings, self.transports
        )

    def entity(self, **fields: Any) -> dict[str, Any]:
        return self.api.ok(self.api.post("/v1/legal_entities", fields))

    def einvoices(self, invoice_id: str) -> list[dict[str, Any]]:
        listed = self.api.ok(self.api.get("/v1/einvoices", {"invoice": invoice_id, "limit": 100}))
        return list(reversed(listed["data"]))

    def einvoice(self, einvoice_id: str) -> dict[str, Any]:
        return self.api.ok(self.api.get(f"/v1/einvoices/{einvoice_id}"))

    def finalize(self, invoice: dict[str, Any]) -> httpx.Response:
        return self.api.post(f"/v1/invoices/{invoice['id']}/finalize")

    def items(self, invoice_id: str, kind: str) -> list[dict[str, Any]]:
        params = {"invoice": invoice_id, "kind": kind, "limit": 100}
        return self.api.ok(self.api.get("/v1/exception_items", params))["data"]


@pytest.fixture
def flow(einvoice_db_url: str) -> Iterator[Flow]:
    clock = ManualClock(START)
    settings = make_settings(einvoice_db_url)
    with TestClient(create_app(settings, clock), base_url="http://testserver") as client:
        state: AppState = client.app.state.invoicetrail  # type: ignore[attr-defined]
        account_id, secret_key = create_account(state)
        made = Flow(Api(client, account_id, secret_key), clock, settings, state)
        made.transports = {
            "peppol": SandboxAccessPoint(),
            "cfdi": SandboxPac(),
            "myinvois": myinvois_transport(settings),  # unconfigured: the sandbox
        }
        yield made
        # Nothing of this test stays due for the next one.
        made.clock.advance(timedelta(days=400))
        made.transports = {r: SandboxAccessPoint() for r in ("peppol",)} | {
            "cfdi": SandboxPac(),
            "myinvois": myinvois_transport(settings),
        }
        made.run_worker()


# --- builders ---------------------------------------------------------------------------


def peppol_parties(flow: Flow) -> tuple[dict[str, Any], dict[str, Any]]:
    seller = flow.entity(
        name="Seller GmbH",
        country="DE",
        address={"line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        tax_ids=[{"type": "eu_vat", "value": "DE136695976"}],
        peppol_id=SELLER_PEPPOL,
        registration_id="HRB 12345",
        bank_account={"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
        number_prefix="DE" + uuid.uuid4().hex[:4].upper(),
    )
    buyer = flow.api.customer(
        name="Buyer BV",
        address={"line1": "Dam 1", "city": "Amsterdam", "postal_code": "1012", "country": "NL"},
        tax_ids=[{"type": "eu_vat", "value": "NL004495445B01"}],
        peppol_id=BUYER_PEPPOL,
        email="ap@buyer.example",
    )
    return seller, buyer


def peppol_draft(flow: Flow, **fields: Any) -> dict[str, Any]:
    seller, buyer = peppol_parties(flow)
    body: dict[str, Any] = {
        "customer_id": buyer["id"],
        "legal_entity": seller["id"],
        "collection_method": "send_invoice",
        "due_date": "2026-12-02",
        "buyer_reference": "PO-REF-1",
        **fields,
    }
    return flow.api.draft(**body)


def mx_parties(flow: Flow, *, rfc: str = "EKU9003173C9") -> tuple[dict[str, Any], dict[str, Any]]:
    seller = flow.entity(
        name="ESCUELA KEMPER URGATE",
        country="MX",
        address={"line1": "Av. Reforma 1", "city": "CDMX", "postal_code": "06600", "country": "MX"},
        tax_ids=[{"type": "mx_rfc", "value": "EKU9003173C9"}],
        cfdi={"fiscal_regime": "601", "expedition_postal_code": "06600"},
        number_prefix="MX" + uuid.uuid4().hex[:4].upper(),
    )
    buyer = flow.api.customer(
        name="DAVID GONZALEZ",
        address={"line1": "Calle 2", "city": "Monterrey", "postal_code": "64000", "country": "MX"},
        tax_ids=[{"type": "mx_rfc", "value": "GODE561231GR8"}],
        cfdi={"fiscal_regime": "612", "cfdi_use": "G03"},
    )
    return seller, buyer


def mx_draft(flow: Flow) -> dict[str, Any]:
    seller, buyer = mx_parties(flow)
    return flow.api.draft(
        customer_id=buyer["id"],
        legal_entity=seller["id"],
        currency="mxn",
        collection_method="send_invoice",
        due_date="2026-12-02",
        lines=[
            {"description": "Consultoría", "quantity": "1", "unit_amount": 100000, "tax_rate": "16"}
        ],
    )


def my_draft(flow: Flow) -> dict[str, Any]:
    seller = flow.entity(
        name="Supplier Sdn Bhd",
        country="MY",
        address={
            "line1": "Lot 66",
            "city": "Kuala Lumpur",
            "postal_code": "50480",
            "state": "14",
            "country": "MY",
        },
        tax_ids=[{"type": "my_tin", "value": "C25845632020"}, {"type": "my_sst", "value": "NA"}],
        registration_id="202001234567",
        myinvois={"msic_code": "62010", "business_activity": "Software", "phone": "+60123456789"},
        number_prefix="MY" + uuid.uuid4().hex[:4].upper(),
    )
    buyer = flow.api.customer(
        name="Buyer Sdn Bhd",
        email="buyer@example.my",
        address={
            "line1": "Jalan 1",
            "city": "Kuala Lumpur",
            "postal_code": "50480",
            "state": "14",
            "country": "MY",
        },
        tax_ids=[
            {"type": "my_tin", "value": "C2584563200"},
            {"type": "my_brn", "value": "201901234567"},
        ],
        myinvois={"phone": "+60198765432"},
    )
    return flow.api.draft(
        customer_id=buyer["id"],
        legal_entity=seller["id"],
        currency="myr",
        collection_method="send_invoice",
        due_date="2026-12-02",
        lines=[
            {"description": "Subscription", "quantity": "1", "unit_amount": 10000, "tax_rate": "8"}
        ],
    )


# --- a local access point that refuses the first document it sees -------------------------


class AccessPoint:
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.reject_next = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.received.append(body)
                if owner.reject_next:
                    owner.reject_next -= 1
                    payload = {"errors": [{"code": "BUYER-UNKNOWN", "message": "no such buyer"}]}
                    self._answer(422, payload)
                    return
                self._answer(202, {"id": f"ap-{len(owner.received)}"})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/peppol/outbound"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def access_point() -> Iterator[AccessPoint]:
    server = AccessPoint()
    yield server
    server.stop()


# --- tests ----------------------------------------------------------------------------------


def test_peppol_invoice_is_generated_at_finalize_and_accepted_by_the_next_worker_pass(
    flow: Flow,
) -> None:
    invoice = flow.api.ok(flow.finalize(peppol_draft(flow, purchase_order="PO-9")))
    [submission] = flow.einvoices(invoice["id"])
    assert submission["object"] == "einvoice"
    assert (submission["regime"], submission["document_type"]) == ("peppol", "invoice")
    assert (submission["invoice"], submission["credit_note"], submission["status"]) == (
        invoice["id"],
        None,
        "pending",
    )
    document = flow.api.get(f"/v1/einvoices/{submission['id']}/document")
    assert document.status_code == 200
    assert document.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(document.content)
    assert root.findtext("cbc:ID", namespaces=UBL) == invoice["number"]
    assert root.findtext("cbc:BuyerReference", namespaces=UBL) == "PO-REF-1"
    assert root.findtext("cac:OrderReference/cbc:ID", namespaces=UBL) == "PO-9"
    payable = root.findtext("cac:LegalMonetaryTotal/cbc:PayableAmount", namespaces=UBL)
    assert payable == f"{invoice['total'] // 100}.{invoice['total'] % 100:02d}"

    assert flow.run_worker() == 1
    accepted = flow.einvoice(submission["id"])
    assert accepted["status"] == "accepted"
    assert accepted["findings"] is not None
    assert not [f for f in accepted["findings"] if f["flag"] == "fatal"]
    assert accepted["external_id"]
    # The document never changes, whatever the submission state.
    assert flow.api.get(f"/v1/einvoices/{submission['id']}/document").content == document.content

    trace = flow.api.ok(flow.api.get(f"/v1/invoices/{invoice['id']}/trace"))
    assert [s["id"] for s in trace["einvoice_submissions"]] == [submission["id"]]
    assert trace["einvoice_submissions"][0]["status"] == "accepted"


def test_an_invoice_without_a_branch_has_no_submission(flow: Flow) -> None:
    invoice = flow.api.open_invoice()  # a US account: no regime
    assert flow.einvoices(invoice["id"]) == []


def test_finalize_refuses_what_the_regime_would_reject_and_writes_nothing(flow: Flow) -> None:
    draft = peppol_draft(flow, buyer_reference=None)
    refused = flow.finalize(draft)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["param"], error["regime"], error["retryable"]) == (
        "buyer_reference",
        "peppol",
        False,
    )
    after = flow.api.ok(flow.api.get(f"/v1/invoices/{draft['id']}"))
    assert (after["status"], after["number"]) == ("draft", None)
    assert flow.einvoices(draft["id"]) == []

    exempt = peppol_draft(
        flow,
        lines=[
            {
                "description": "Course",
                "quantity": "1",
                "unit_amount": 5000,
                "tax_rate": "0",
                "tax_category": "E",
            }
        ],
    )
    refused = flow.finalize(exempt)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "lines[0].tax_exemption_reason"


def test_a_bad_rfc_check_digit_refuses_finalize_naming_the_customer_field(flow: Flow) -> None:
    seller, _ = mx_parties(flow)
    # Created before the RFC rule existed for it (an import): the field is checked again at
    # finalize. Here the customer is created with a valid RFC and then the RFC is broken.
    buyer = flow.api.customer(
        name="DAVID GONZALEZ",
        address={"country": "MX", "postal_code": "64000"},
        tax_ids=[{"type": "mx_rfc", "value": "GODE561231GR8"}],
        cfdi={"fiscal_regime": "612", "cfdi_use": "G03"},
    )
    refused_at_create = flow.api.post(
        "/v1/customers",
        {
            "name": "X",
            "address": {"country": "MX"},
            "tax_ids": [{"type": "mx_rfc", "value": "GODE561231GR9"}],
        },
    )
    assert refused_at_create.status_code == 400
    assert refused_at_create.json()["error"]["code"] == "invalid_tax_id"
    assert refused_at_create.json()["error"]["param"] == "tax_ids[0].value"
    draft = flow.api.draft(
        customer_id=buyer["id"],
        legal_entity=seller["id"],
        currency="usd",
        collection_method="charge_automatically",
        lines=[{"description": "x", "quantity": "1", "unit_amount": 100, "tax_rate": "16"}],
    )
    refused = flow.finalize(draft)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "currency"
    assert refused.json()["error"]["regime"] == "cfdi"


def test_cfdi_and_myinvois_invoices_are_generated_validated_and_accepted(flow: Flow) -> None:
    mx = flow.api.ok(flow.finalize(mx_draft(flow)))
    my = flow.api.ok(flow.finalize(my_draft(flow)))
    assert flow.run_worker() == 2
    [cfdi] = flow.einvoices(mx["id"])
    [myinvois] = flow.einvoices(my["id"])
    assert (cfdi["regime"], cfdi["status"], cfdi["test"]) == ("cfdi", "accepted", True)
    assert (myinvois["regime"], myinvois["status"]) == ("myinvois", "accepted")
    xml = flow.api.get(f"/v1/einvoices/{cfdi['id']}/document")
    root = etree.fromstring(xml.content)
    assert root.tag == "{http://www.sat.gob.mx/cfd/4}Comprobante"
    assert root.get("TipoDeComprobante") == "I"
    assert len(root.get("NoCertificado") or "") == 20
    document = flow.api.get(f"/v1/einvoices/{myinvois['id']}/document")
    assert document.headers["content-type"].startswith("application/json")
    assert "Invoice" in document.json()
    assert myinvois["cancellation_deadline"] is not None


def test_one_markets_outage_holds_back_no_other_market(flow: Flow) -> None:
    flow.transports["myinvois"] = myinvois_transport(
        flow.settings.model_copy(
            update={
                "myinvois_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
                "myinvois_client_id": "client",
                "myinvois_client_secret": "secret",
                "einvoice_timeout_seconds": 2.0,
            }
        )
    )
    my = flow.api.ok(flow.finalize(my_draft(flow)))  # finalize never waits for a market
    de = flow.api.ok(flow.finalize(peppol_draft(flow)))
    mx = flow.api.ok(flow.finalize(mx_draft(flow)))
    flow.run_worker()
    [waiting] = flow.einvoices(my["id"])
    assert waiting["status"] == "pending"
    assert waiting["failure"]["class"] == "retryable"
    assert flow.einvoices(de["id"])[0]["status"] == "accepted"
    assert flow.einvoices(mx["id"])[0]["status"] == "accepted"
    # Backed off: nothing is tried again before its time …
    assert flow.run_worker() == 0
    # … and once the market is back, the waiting document goes.
    flow.transports["myinvois"] = myinvois_transport(flow.settings)
    flow.clock.advance(timedelta(minutes=2))
    assert flow.run_worker() == 1
    assert flow.einvoice(waiting["id"])["status"] == "accepted"


def test_a_rejected_document_is_corrected_and_goes_only_after_a_second_persons_approval(
    flow: Flow, access_point: AccessPoint
) -> None:
    flow.transports["peppol"] = HttpAccessPoint(access_point.url, "token", 5.0)
    access_point.reject_next = 1
    invoice = flow.api.ok(flow.finalize(peppol_draft(flow)))
    flow.run_worker()
    [rejected] = flow.einvoices(invoice["id"])
    assert rejected["status"] == "rejected"
    assert rejected["failure"]["class"] == "needs_correction"
    assert [r["rule"] for r in rejected["failure"]["rules"]] == ["BUYER-UNKNOWN"]
    [item] = flow.items(invoice["id"], "einvoice_needs_correction")
    assert item["refs"]["einvoice"] == rejected["id"]
    assert item["owner"] and item["due_at"]

    corrected = flow.api.ok(
        flow.api.post(f"/v1/einvoices/{rejected['id']}/correct", {"note": "buyer re-registered"})
    )
    assert corrected["status"] == "awaiting_approval"
    assert corrected["supersedes"] == rejected["id"]
    assert flow.einvoice(rejected["id"])["superseded_by"] == corrected["id"]
    assert flow.run_worker() == 0  # not approved: nothing goes

    same_person = flow.api.post(f"/v1/einvoices/{corrected['id']}/approve", {})
    assert same_person.status_code == 409
    assert same_person.json()["error"]["code"] == "second_approval_required"

    rotated = flow.api.ok(
        flow.api.post("/v1/api_keys/rotate", {"expire_previous_after_seconds": 3600})
    )
    second = Api(flow.api.client, flow.api.account_id, rotated["secret_key"])
    approved = second.ok(second.post(f"/v1/einvoices/{corrected['id']}/approve", {"note": "ok"}))
    assert approved["status"] == "pending"
    assert approved["approved_by"] != approved["correction_requested_by"]
    assert flow.run_worker() == 1
    assert flow.einvoice(corrected["id"])["status"] == "accepted"
    assert len(access_point.received) == 2
    resolved = flow.api.ok(flow.api.get(f"/v1/exception_items/{item['id']}"))
    assert resolved["status"] == "resolved"
    actions = [entry["action"] for entry in resolved["history"]]
    assert actions[-2:] == ["correction_prepared", "resolved"]
    assert approved["approved_by"] in resolved["history"][-1]["actor"]


def test_myinvois_cancellation_within_72_hours_and_a_credit_note_after(flow: Flow) -> None:
    inside = flow.api.ok(flow.finalize(my_draft(flow)))
    outside = flow.api.ok(flow.finalize(my_draft(flow)))
    flow.run_worker()
    [inside_doc] = flow.einvoices(inside["id"])
    [outside_doc] = flow.einvoices(outside["id"])
    deadline = datetime.fromisoformat(inside_doc["cancellation_deadline"])
    assert deadline == flow.clock.now() + timedelta(hours=72)

    flow.clock.advance(timedelta(hours=71))
    voided = flow.api.ok(flow.api.post(f"/v1/invoices/{inside['id']}/void"))
    assert voided["status"] == "void"
    flow.run_worker()
    assert flow.einvoice(inside_doc["id"])["status"] == "cancelled"

    flow.clock.advance(timedelta(hours=2))  # 73 h after validation
    refused = flow.api.post(f"/v1/einvoices/{outside_doc['id']}/cancel", {"reason": "wrong"})
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "cancellation_window_closed"
    assert "credit note" in error["message"]
    refused_void = flow.api.post(f"/v1/invoices/{outside['id']}/void")
    assert refused_void.status_code == 409
    assert refused_void.json()["error"]["code"] == "cancellation_window_closed"
    assert flow.api.ok(flow.api.get(f"/v1/invoices/{outside['id']}"))["status"] == "open"

    note = flow.api.ok(
        flow.api.post(
            "/v1/credit_notes", {"invoice": outside["id"], "amount": 5000, "reason": "refund"}
        )
    )
    documents = flow.einvoices(outside["id"])
    assert [d["document_type"] for d in documents] == ["invoice", "credit_note"]
    assert documents[1]["credit_note"] == note["id"]
    only_note = flow.api.ok(flow.api.get("/v1/einvoices", {"credit_note": note["id"]}))["data"]
    assert [d["id"] for d in only_note] == [documents[1]["id"]]
    flow.run_worker()
    assert flow.einvoice(documents[1]["id"])["status"] == "accepted"


def test_peppol_credit_note_names_the_credited_invoice(flow: Flow) -> None:
    invoice = flow.api.ok(flow.finalize(peppol_draft(flow)))
    line = {"description": "Widget", "quantity": "1", "unit_amount": 1050, "tax_rate": "19"}
    note = flow.api.ok(
        flow.api.post(
            "/v1/credit_notes", {"invoice": invoice["id"], "lines": [line], "reason": "damaged"}
        )
    )
    [_, credit] = flow.einvoices(invoice["id"])
    root = etree.fromstring(flow.api.get(f"/v1/einvoices/{credit['id']}/document").content)
    assert etree.QName(root).localname == "CreditNote"
    assert root.findtext("cbc:ID", namespaces=UBL) == note["number"]
    path = "cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID"
    assert root.findtext(path, namespaces=UBL) == invoice["number"]
    assert flow.run_worker() == 2
    assert all(d["status"] == "accepted" for d in flow.einvoices(invoice["id"]))


def test_another_accounts_einvoice_is_not_found(flow: Flow) -> None:
    invoice = flow.api.ok(flow.finalize(peppol_draft(flow)))
    [submission] = flow.einvoices(invoice["id"])
    stranger = Api(flow.api.client, *_account(flow))
    for path in (f"/v1/einvoices/{submission['id']}", f"/v1/einvoices/{submission['id']}/document"):
        assert stranger.get(path).status_code == 404
    assert stranger.ok(stranger.get("/v1/einvoices", {"invoice": invoice["id"]}))["data"] == []
    assert (
        stranger.post(f"/v1/einvoices/{submission['id']}/cancel", {"reason": "x"}).status_code
        == 404
    )


def _account(flow: Flow) -> tuple[str, str]:
    return create_account(flow.state)


def test_payments_on_a_ppd_cfdi_are_filed_as_pago_complements(flow: Flow) -> None:
    invoice = flow.api.ok(flow.finalize(mx_draft(flow)))  # send_invoice: PPD
    flow.run_worker()  # the invoice is stamped first: the complement names its UUID
    [stamped] = flow.einvoices(invoice["id"])
    half = invoice["total"] // 2
    body = {"reference": "SPEI-1", "amount": half, "method": "bank_transfer"}
    flow.api.ok(flow.api.post(f"/v1/invoices/{invoice['id']}/pay", body))
    rest = {"reference": "SPEI-2", "amount": invoice["total"] - half, "method": "bank_transfer"}
    flow.api.ok(flow.api.post(f"/v1/invoices/{invoice['id']}/pay", rest))
    documents = flow.einvoices(invoice["id"])
    assert [d["document_type"] for d in documents] == ["invoice", "payment", "payment"]
    assert all(d["payment"] for d in documents[1:])
    pago = "{http://www.sat.gob.mx/Pagos20}"
    installments = []
    for document in documents[1:]:
        root = etree.fromstring(flow.api.get(f"/v1/einvoices/{document['id']}/document").content)
        assert root.get("TipoDeComprobante") == "P"
        related = root.find(f".//{pago}DoctoRelacionado")
        assert related is not None
        assert related.get("IdDocumento") == stamped["external_id"]
        installments.append((related.get("NumParcialidad"), related.get("ImpSaldoInsoluto")))
    assert installments[0][0] == "1" and installments[1] == ("2", "0.00")
    assert flow.run_worker() == 2
    assert all(d["status"] == "accepted" for d in flow.einvoices(invoice["id"]))


def test_german_domestic_invoices_need_the_sellers_contact(flow: Flow) -> None:
    seller = flow.entity(
        name="Seller GmbH",
        country="DE",
        address={"line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        tax_ids=[{"type": "eu_vat", "value": "DE136695976"}],
        peppol_id=SELLER_PEPPOL,
        number_prefix="DD" + uuid.uuid4().hex[:4].upper(),
    )
    buyer = flow.api.customer(
        name="Käufer AG",
        address={"line1": "Markt 2", "city": "München", "postal_code": "80331", "country": "DE"},
        peppol_id=BUYER_PEPPOL,
    )
    draft = flow.api.draft(
        customer_id=buyer["id"], legal_entity=seller["id"], buyer_reference="04011000-12345-34"
    )
    refused = flow.finalize(draft)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "legal_entity.contact.name"

    with_contact = flow.entity(
        name="Seller GmbH",
        country="DE",
        address={"line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        tax_ids=[{"type": "eu_vat", "value": "DE136695976"}],
        peppol_id=SELLER_PEPPOL,
        contact={"name": "AR desk", "email": "ar@seller.example", "phone": "+49 30 123"},
        number_prefix="DC" + uuid.uuid4().hex[:4].upper(),
    )
    draft = flow.api.draft(
        customer_id=buyer["id"], legal_entity=with_contact["id"], buyer_reference="04011000-1"
    )
    invoice = flow.api.ok(flow.finalize(draft))
    assert flow.run_worker() == 1
    [accepted] = flow.einvoices(invoice["id"])
    assert accepted["status"] == "accepted", accepted["failure"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"myinvois": {"phone": None}}, "legal_entity.myinvois.phone"),
        ({"registration_id": None}, "legal_entity.registration_id"),
        ({"currency": "usd"}, "currency"),
        ({"customer_tax_ids": [{"type": "my_tin", "value": "C2584563200"}]}, "customer.tax_ids"),
    ],
)
def test_myinvois_pre_checks_name_the_field(flow: Flow, change: dict[str, Any], param: str) -> None:
    entity: dict[str, Any] = {
        "name": "Supplier Sdn Bhd",
        "country": "MY",
        "address": {"line1": "Lot 66", "city": "Kuala Lumpur", "state": "14", "country": "MY"},
        "tax_ids": [{"type": "my_tin", "value": "C25845632020"}],
        "registration_id": "202001234567",
        "myinvois": {"phone": "+60123456789"},
        "number_prefix": "MQ" + uuid.uuid4().hex[:4].upper(),
    }
    change = dict(change)  # the parameter is shared by both backends' runs
    customer_tax_ids = change.pop(
        "customer_tax_ids",
        [{"type": "my_tin", "value": "C2584563200"}, {"type": "my_brn", "value": "201901234567"}],
    )
    currency = change.pop("currency", "myr")
    for key, value in change.items():
        entity[key] = (
            {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value
        )
    seller = flow.entity(**{k: v for k, v in entity.items() if v is not None})
    buyer = flow.api.customer(
        name="Buyer Sdn Bhd",
        address={"line1": "Jalan 1", "city": "Kuala Lumpur", "country": "MY"},
        tax_ids=customer_tax_ids,
    )
    draft = flow.api.draft(customer_id=buyer["id"], legal_entity=seller["id"], currency=currency)
    refused = flow.finalize(draft)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["param"], error["regime"]) == (param, "myinvois")
    assert flow.einvoices(draft["id"]) == []
