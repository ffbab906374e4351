"""`GET /v1/invoices/{id}/pdf`: what the PDF says (read back with pypdf), that the same invoice
always gives the same bytes, and who may not have one."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pypdf import PdfReader

from conftest import Api
from invoicetrail.core.config import Settings
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import read_session
from invoicetrail.core.http import AppState
from invoicetrail.invoices.pdf import render_invoice_pdf

SELLER = "Müller & Søn GmbH"
BUYER = "Zakład Łódź Sp. z o.o."
IBAN = "DE89370400440532013000"
BIC = "COBADEFFXXX"


def seller(api: Api, **fields: Any) -> dict[str, Any]:
    body = {
        "name": SELLER,
        "country": "DE",
        "address": {
            "line1": "Hauptstraße 5",
            "postal_code": "10115",
            "city": "Berlin",
            "country": "DE",
        },
        "tax_ids": [{"type": "eu_vat", "value": "DE123456789"}],
        "registration_id": "HRB 12345 B",
        "bank_account": {"iban": IBAN, "bic": BIC},
        "number_prefix": "MS",
        **fields,
    }
    return api.ok(api.post("/v1/legal_entities", body))


def buyer(api: Api) -> dict[str, Any]:
    return api.customer(
        name=BUYER,
        email="faktury@zaklad.example",
        address={
            "line1": "ul. Piotrkowska 1",
            "postal_code": "90-001",
            "city": "Łódź",
            "country": "PL",
        },
        tax_ids=[{"type": "eu_vat", "value": "PL5260250274"}],
    )


def demo_invoice(api: Api) -> dict[str, Any]:
    """Three lines at two tax rates, partly paid, from a seller with a bank account."""
    entity = seller(api)
    draft = api.draft(
        customer_id=buyer(api)["id"],
        legal_entity=entity["id"],
        collection_method="send_invoice",
        due_date="2031-03-31",
        lines=[
            {
                "description": "Consulting (März)",
                "quantity": "8",
                "unit_amount": 12000,
                "tax_rate": "19",
            },
            {"description": "Hosting", "quantity": "1", "unit_amount": 4900, "tax_rate": "19"},
            {"description": "Handbook", "quantity": "2", "unit_amount": 1500, "tax_rate": "7"},
        ],
    )
    invoice = api.ok(api.post(f"/v1/invoices/{draft['id']}/finalize"))
    return api.ok(
        api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "wire-1", "amount": 50000})
    )


def pdf_of(api: Api, invoice_id: str) -> httpx.Response:
    response = api.get(f"/v1/invoices/{invoice_id}/pdf")
    assert response.status_code == 200, response.text
    return response


def text_of(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def flat(text: str) -> str:
    """One space between words, whatever line breaks the table layout put in."""
    return re.sub(r"\s+", " ", text)


def test_pdf_shows_parties_lines_tax_breakdown_totals_and_payment(api: Api) -> None:
    invoice = demo_invoice(api)
    response = pdf_of(api, invoice["id"])
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == f'inline; filename="{invoice["number"]}.pdf"'
    assert re.fullmatch(r"MS-\d{4}-000001", invoice["number"])
    assert response.headers["Request-Id"].startswith("req_")
    assert response.content.startswith(b"%PDF-")

    text = flat(text_of(response.content))
    # 8 × 120.00 = 960.00 and 49.00 at 19 % (tax 182.40 + 9.31); 2 × 15.00 = 30.00 at 7 % (2.10)
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (103900, 19381, 123281)
    for expected in (
        invoice["number"],
        SELLER,
        "Hauptstraße 5",
        "VAT ID: DE123456789",
        "Registration: HRB 12345 B",
        BUYER,
        "90-001 Łódź",
        "Poland",
        "faktury@zaklad.example",
        "VAT ID: PL5260250274",
        invoice["finalized_at"][:10],
        "2031-03-31",
        "Consulting (März)",
        "120.00 EUR",
        "960.00 EUR",
        "19% 1,009.00 EUR 191.71 EUR",
        "7% 30.00 EUR 2.10 EUR",
        "Subtotal 1,039.00 EUR",
        "Tax 193.81 EUR",
        "Total 1,232.81 EUR",
        "Amount paid 500.00 EUR",
        "Amount remaining 732.81 EUR",
        "Please pay 732.81 EUR by 2031-03-31.",
        f"Bank transfer reference: {invoice['bank_transfer_reference']}",
        f"IBAN: {IBAN}",
        f"BIC: {BIC}",
        "Open",
    ):
        assert expected in text, (expected, text)


def test_same_invoice_same_bytes_whatever_happens_elsewhere(api: Api) -> None:
    invoice = api.open_invoice()
    first = pdf_of(api, invoice["id"]).content
    assert pdf_of(api, invoice["id"]).content == first

    # Unrelated changes: another invoice finalized and paid, another customer.
    other = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{other['id']}/pay", {"reference": "elsewhere"}))
    api.customer(name="Someone else")
    assert pdf_of(api, invoice["id"]).content == first

    # The metadata is the invoice's, never the request's: no clock, fixed producer.
    finalized_at = datetime.fromisoformat(invoice["finalized_at"].replace("Z", "+00:00"))
    assert f"/CreationDate (D:{finalized_at:%Y%m%d%H%M%S}Z".encode() in first
    assert b"/Producer (invoicetrail)" in first
    assert b"/ModDate" not in first
    assert b"xpacket" not in first  # no XMP packet, which would carry the current time


def test_parties_are_those_at_finalize(api: Api) -> None:
    """An issued invoice keeps its parties: later edits of the customer change no byte."""
    invoice = api.open_invoice()
    first = pdf_of(api, invoice["id"]).content
    renamed = api.patch(
        f"/v1/customers/{invoice['customer']}",
        {"name": "Renamed Buyer Ltd", "address": {"country": "FR", "city": "Lyon"}},
    )
    assert renamed.status_code == 200, renamed.text
    assert pdf_of(api, invoice["id"]).content == first
    assert "Renamed Buyer" not in text_of(first)
    # A new invoice for the same customer shows the new name.
    later = api.open_invoice(customer_id=invoice["customer"])
    assert "Renamed Buyer Ltd" in flat(text_of(pdf_of(api, later["id"]).content))


def test_render_function_ignores_the_time_of_rendering(api: Api) -> None:
    """What the e-mail sender calls: (filename, bytes), the same at any `now`."""
    invoice = api.open_invoice()
    state: AppState = api.client.app.state.invoicetrail  # type: ignore[attr-defined]
    later = datetime.now(UTC) + timedelta(days=400)
    with read_session(state.sessions) as session:
        ctx = Ctx(session, api.account_id, "req_test", later, state.settings)
        filename, content = render_invoice_pdf(ctx, invoice["id"])
    assert filename == f"{invoice['number']}.pdf"
    assert content == pdf_of(api, invoice["id"]).content


def test_payment_changes_the_pdf(api: Api) -> None:
    invoice = api.open_invoice()
    before = pdf_of(api, invoice["id"]).content
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "full"}))
    after = pdf_of(api, invoice["id"]).content
    assert after != before
    text = flat(text_of(after))
    assert "Paid in full" in text
    assert "Amount remaining 0.00 EUR" in text


def test_draft_has_no_pdf(api: Api) -> None:
    draft = api.draft()
    response = api.get(f"/v1/invoices/{draft['id']}/pdf")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "invalid_state_transition"
    assert error["object"] == "invoice"
    assert "finalize it first" in error["message"]
    assert error["request_id"] == response.headers["Request-Id"]


def test_another_accounts_invoice_is_not_found(api: Api, other_api: Api) -> None:
    invoice = api.open_invoice()
    response = other_api.get(f"/v1/invoices/{invoice['id']}/pdf")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "resource_missing"
    assert api.get("/v1/invoices/in_nothing/pdf").status_code == 404


def test_zero_and_three_decimal_currencies(api: Api) -> None:
    yen = api.open_invoice(
        currency="jpy",
        lines=[{"description": "Tea", "quantity": "3", "unit_amount": 1500, "tax_rate": "10"}],
    )
    text = flat(text_of(pdf_of(api, yen["id"]).content))
    for expected in ("1,500 JPY", "4,500 JPY", "10% 4,500 JPY 450 JPY", "Total 4,950 JPY"):
        assert expected in text, (expected, text)
    assert not re.search(r"\d\.\d+ JPY", text), text

    dinar = api.open_invoice(
        currency="kwd",
        lines=[{"description": "Dates", "quantity": "2", "unit_amount": 1234567, "tax_rate": "5"}],
    )
    text = flat(text_of(pdf_of(api, dinar["id"]).content))
    # 2 × 1,234.567 = 2,469.134; 5 % = 123.4567 → 123.457 (half up, per line)
    for expected in ("1,234.567 KWD", "5% 2,469.134 KWD 123.457 KWD", "Total 2,592.591 KWD"):
        assert expected in text, (expected, text)


def test_without_the_unicode_font_latin1_text_survives(api: Api, tmp_path: Path) -> None:
    invoice = demo_invoice(api)
    state: AppState = api.client.app.state.invoicetrail  # type: ignore[attr-defined]
    settings = Settings(database_url=state.settings.database_url, pdf_font_dir=str(tmp_path))
    with read_session(state.sessions) as session:
        ctx = Ctx(session, api.account_id, "req_test", datetime.now(UTC), settings)
        _, content = render_invoice_pdf(ctx, invoice["id"])
    assert b"DejaVu" not in content
    text = flat(text_of(content))
    assert SELLER in text  # ü, ø and & are Latin-1
    assert "?ód?" in text  # Ł and ź are not: replaced, never an error
    assert "Total 1,232.81 EUR" in text


def test_openapi_documents_the_pdf(api: Api) -> None:
    operation = api.client.get("/openapi.json").json()["paths"]["/v1/invoices/{invoice_id}/pdf"]
    responses = operation["get"]["responses"]
    assert "application/pdf" in responses["200"]["content"]
    for status in ("401", "404", "409"):
        ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorOut"
