"""Credit notes: their own numbers and entries; the invoice keeps its status."""

from __future__ import annotations

from typing import Any

from conftest import Api, row_counts
from test_ledger import assert_balanced, entries, net_by_account


def credit(api: Api, invoice: dict[str, Any], **body: Any) -> Any:
    return api.post(
        "/v1/credit_notes", {"invoice": invoice["id"], "reason": "order_change", **body}
    )


def test_credit_on_an_open_invoice_reduces_what_is_owed(api: Api) -> None:
    invoice = api.open_invoice()
    note = api.ok(credit(api, invoice, amount=1000))
    assert note["id"].startswith("cn_")
    assert note["number"].startswith("CN-") and note["number"].endswith("-000001")
    assert (note["total"], note["applied_to_invoice"], note["customer_credit"]) == (1000, 1000, 0)
    assert note["subtotal"] + note["tax"] == 1000
    after = api.ok(api.get(f"/v1/invoices/{invoice['id']}"))
    assert after["status"] == "open"
    assert after["amount_remaining"] == invoice["total"] - 1000
    assert (
        after["amount_paid"] + after["amount_credited"] + after["amount_remaining"]
        == after["total"]
    )
    [entry] = [
        e for e in entries(api, invoice["id"]) if e["business_key"].startswith("credit_note:")
    ]
    assert entry["business_key"] == f"credit_note:{note['id']}"
    assert_balanced(entry)
    assert net_by_account([entry])["Assets:Receivable"] == -1000

    second = api.ok(credit(api, invoice, amount=10))
    assert second["number"].endswith("-000002")
    paid = api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "rest"}))
    assert paid["status"] == "paid"
    assert paid["amount_paid"] == invoice["total"] - 1010


def test_credit_on_a_paid_invoice_becomes_customer_credit(api: Api) -> None:
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "all"}))
    note = api.ok(
        credit(
            api,
            invoice,
            lines=[
                {
                    "description": "Returned widget",
                    "quantity": "1",
                    "unit_amount": 1050,
                    "tax_rate": "19",
                }
            ],
        )
    )
    assert (note["subtotal"], note["tax"], note["total"]) == (1050, 200, 1250)
    assert note["customer_credit"] == 1250
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["status"] == "paid"
    customer = api.ok(api.get(f"/v1/customers/{invoice['customer']}"))
    assert customer["credit_balance"] == {"eur": 1250}
    [entry] = [
        e for e in entries(api, invoice["id"]) if e["business_key"].startswith("credit_note:")
    ]
    assert net_by_account([entry]) == {
        "Income:Revenue": 1050,
        "Liabilities:Tax:Payable": 200,
        "Liabilities:CustomerCredit": -1250,
    }
    listed = api.ok(api.get("/v1/credit_notes", {"invoice": invoice["id"]}))["data"]
    assert [n["id"] for n in listed] == [note["id"]]
    assert api.ok(api.get(f"/v1/credit_notes/{note['id']}")) == note


def test_cannot_credit_more_than_is_left(api: Api) -> None:
    invoice = api.open_invoice()
    api.ok(credit(api, invoice, amount=invoice["total"] - 5))
    before = row_counts(api)
    too_much = credit(api, invoice, amount=6)
    assert too_much.status_code == 400
    assert too_much.json()["error"]["param"] == "amount"
    assert too_much.json()["error"]["object"] == "credit_note"
    assert row_counts(api) == before
    api.ok(credit(api, invoice, amount=5))


def test_refusals(api: Api) -> None:
    draft = api.draft()
    refused = credit(api, draft, amount=1)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "invalid_state_transition"
    invoice = api.open_invoice()
    both = credit(
        api, invoice, amount=1, lines=[{"description": "x", "quantity": "1", "unit_amount": 1}]
    )
    assert both.status_code == 400
    neither = credit(api, invoice)
    assert neither.status_code == 400
    no_reason = api.post("/v1/credit_notes", {"invoice": invoice["id"], "amount": 1})
    assert no_reason.status_code == 400
    assert no_reason.json()["error"]["param"] == "reason"
    unknown = api.post("/v1/credit_notes", {"invoice": "in_nope", "reason": "x", "amount": 1})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "invoice"


def test_an_invoice_with_credit_notes_is_not_voided(api: Api) -> None:
    invoice = api.open_invoice()
    api.ok(credit(api, invoice, amount=100))
    refused = api.post(f"/v1/invoices/{invoice['id']}/void")
    assert refused.status_code == 409
    events = api.ok(api.get("/v1/events", {"type": "credit_note.created"}))["data"]
    assert events[0]["data"]["object"]["invoice"] == invoice["id"]
