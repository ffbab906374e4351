"""The invoice lifecycle through the real API: drafts, finalize, send, pay, void, uncollectible."""

from __future__ import annotations

import re
from typing import Any

import pytest
from stdnum.iso7064 import mod_37_36

from conftest import Api, row_counts

NUMBER = re.compile(r"^INV-(\d{4})-(\d{6})$")
REFERENCE = re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z*]$")

# From SPEC, written out here rather than imported: which statuses each action accepts.
ALLOWED_FROM = {
    "finalize": {"draft"},
    "void": {"open"},
    "mark_uncollectible": {"open"},
    "pay": {"open", "uncollectible"},
    "send": {"open", "paid", "uncollectible"},
}
STATUSES = ("draft", "open", "paid", "void", "uncollectible")


def invoice_in(api: Api, status: str) -> dict[str, Any]:
    invoice = api.draft()
    if status == "draft":
        return invoice
    invoice = api.ok(api.post(f"/v1/invoices/{invoice['id']}/finalize"))
    actions = {
        "paid": ("pay", {"reference": "setup-payment"}),
        "void": ("void", None),
        "uncollectible": ("mark_uncollectible", None),
    }
    if status in actions:
        action, body = actions[status]
        invoice = api.ok(api.post(f"/v1/invoices/{invoice['id']}/{action}", body))
    assert invoice["status"] == status
    return invoice


def test_draft_has_totals_and_no_number(api: Api) -> None:
    draft = api.draft()
    assert draft["status"] == "draft"
    assert draft["number"] is None
    assert draft["bank_transfer_reference"] is None
    # 2 × 1050 = 2100, tax 19 % = 399; 1.5 × 2000 = 3000, tax 7 % = 210
    assert [line["amount"] for line in draft["lines"]] == [2100, 3000]
    assert [line["tax"] for line in draft["lines"]] == [399, 210]
    assert (draft["subtotal"], draft["tax"], draft["total"]) == (5100, 609, 5709)
    assert draft["amount_paid"] == 0
    assert draft["amount_remaining"] == 5709
    assert all(line["id"].startswith("il_") for line in draft["lines"])


def test_patch_draft_recomputes_and_merges_metadata(api: Api) -> None:
    draft = api.draft(metadata={"order": "A-1", "channel": "web"})
    patched = api.ok(
        api.patch(
            f"/v1/invoices/{draft['id']}",
            {
                "lines": [{"description": "One", "quantity": "1", "unit_amount": 10000}],
                "metadata": {"channel": "", "team": "emea"},
                "due_date": "2031-02-28",
            },
        )
    )
    assert patched["total"] == 10000
    assert patched["tax"] == 0
    assert patched["metadata"] == {"order": "A-1", "team": "emea"}
    assert patched["due_date"] == "2031-02-28"
    assert api.ok(api.get(f"/v1/invoices/{draft['id']}")) == patched


def test_finalize_numbers_are_gapless_and_references_carry_a_check_character(api: Api) -> None:
    numbers = []
    references = set()
    for _ in range(3):
        invoice = api.open_invoice()
        assert invoice["status"] == "open"
        assert invoice["amount_paid"] == 0
        assert invoice["amount_remaining"] == invoice["total"]
        assert invoice["finalized_at"] is not None
        match = NUMBER.match(invoice["number"])
        assert match, invoice["number"]
        numbers.append(int(match.group(2)))
        reference = invoice["bank_transfer_reference"]
        assert REFERENCE.match(reference), reference
        assert mod_37_36.is_valid(reference.replace("-", ""))
        references.add(reference)
    assert numbers == [1, 2, 3]
    assert len(references) == 3


def test_refused_finalize_uses_no_number(api: Api) -> None:
    nowhere = api.customer(address=None)
    draft = api.draft(customer_id=nowhere["id"])
    before = row_counts(api)
    refused = api.post(f"/v1/invoices/{draft['id']}/finalize")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "customer.address.country"
    assert error["object"] == "invoice"
    assert row_counts(api) == before
    assert api.ok(api.get(f"/v1/invoices/{draft['id']}"))["status"] == "draft"

    api.ok(api.patch(f"/v1/customers/{nowhere['id']}", {"address": {"country": "fr"}}))
    finalized = api.ok(api.post(f"/v1/invoices/{draft['id']}/finalize"))
    assert finalized["number"].endswith("-000001")


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", sorted(ALLOWED_FROM))
def test_every_action_from_every_status(api: Api, status: str, action: str) -> None:
    invoice = invoice_in(api, status)
    body = {"reference": "ref-under-test", "amount": 1} if action == "pay" else None
    before = row_counts(api)
    response = api.post(f"/v1/invoices/{invoice['id']}/{action}", body)
    if status in ALLOWED_FROM[action]:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_state_transition"
    assert invoice["id"] in error["message"]
    assert f"is {status}" in error["message"]
    assert action in error["message"]
    assert row_counts(api) == before
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}")) == invoice


@pytest.mark.parametrize("status", ["open", "paid", "void", "uncollectible"])
def test_only_drafts_are_editable(api: Api, status: str) -> None:
    invoice = invoice_in(api, status)
    response = api.patch(f"/v1/invoices/{invoice['id']}", {"metadata": {"x": "y"}})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state_transition"


def test_send_records_delivery(api: Api) -> None:
    invoice = api.open_invoice()
    sent = api.ok(api.post(f"/v1/invoices/{invoice['id']}/send"))
    assert sent["delivered_at"] is not None
    again = api.ok(api.post(f"/v1/invoices/{invoice['id']}/send"))
    assert again["delivered_at"] == sent["delivered_at"]


def test_partial_then_full_payment(api: Api) -> None:
    invoice = api.open_invoice()
    total = invoice["total"]
    partial = api.ok(
        api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "chk-1", "amount": 1000})
    )
    assert partial["status"] == "open"
    assert (partial["amount_paid"], partial["amount_remaining"]) == (1000, total - 1000)
    assert partial["paid_at"] is None

    paid = api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "chk-2"}))
    assert paid["status"] == "paid"
    assert (paid["amount_paid"], paid["amount_remaining"]) == (total, 0)
    assert paid["paid_at"] is not None
    payments = api.ok(api.get("/v1/payments", {"invoice": invoice["id"]}))["data"]
    assert sorted((p["reference"], p["amount"]) for p in payments) == [
        ("chk-1", 1000),
        ("chk-2", total - 1000),
    ]
    assert all(
        p["status"] == "succeeded" and p["provider"] == "manual" and p["id"].startswith("pay_")
        for p in payments
    )


def test_same_reference_is_one_payment(api: Api) -> None:
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "wire-9", "amount": 500}))
    again = api.ok(
        api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "wire-9", "amount": 500})
    )
    assert again["amount_paid"] == 500
    payments = api.ok(api.get("/v1/payments", {"invoice": invoice["id"]}))["data"]
    assert len(payments) == 1


def test_overpayment_becomes_customer_credit(api: Api) -> None:
    invoice = api.open_invoice()
    paid = api.ok(
        api.post(
            f"/v1/invoices/{invoice['id']}/pay",
            {"reference": "over-1", "amount": invoice["total"] + 250, "method": "bank_transfer"},
        )
    )
    assert paid["status"] == "paid"
    assert paid["amount_paid"] == invoice["total"]
    customer = api.ok(api.get(f"/v1/customers/{invoice['customer']}"))
    assert customer["credit_balance"] == {"eur": 250}


def test_uncollectible_can_still_be_paid(api: Api) -> None:
    invoice = invoice_in(api, "uncollectible")
    assert invoice["marked_uncollectible_at"] is not None
    paid = api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "late"}))
    assert paid["status"] == "paid"


def test_void_keeps_its_number(api: Api) -> None:
    invoice = invoice_in(api, "void")
    assert invoice["number"] is not None
    assert invoice["voided_at"] is not None
    follower = api.open_invoice()
    assert int(follower["number"][-6:]) == int(invoice["number"][-6:]) + 1


def test_every_change_writes_its_event(api: Api) -> None:
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/send"))
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "evt-pay"}))
    events = api.ok(api.get("/v1/events", {"object": invoice["id"], "limit": 100}))["data"]
    types = [event["type"] for event in reversed(events)]
    assert types == ["invoice.created", "invoice.finalized", "invoice.sent", "invoice.paid"]
    paid_event = events[0]
    assert paid_event["data"]["object"]["status"] == "paid"
    assert paid_event["request_id"].startswith("req_")
    assert api.ok(api.get(f"/v1/events/{paid_event['id']}")) == paid_event
    payment_events = api.ok(api.get("/v1/events", {"type": "payment.succeeded"}))["data"]
    assert payment_events[0]["data"]["object"]["invoice"] == invoice["id"]


def test_legal_entities_number_independently(api: Api) -> None:
    entity = api.ok(
        api.post(
            "/v1/legal_entities", {"name": "Second Co", "country": "FR", "number_prefix": "FR"}
        )
    )
    assert entity["address"] == {"country": "FR"}
    on_default = api.open_invoice()
    on_second = api.open_invoice(legal_entity=entity["id"])
    assert on_default["number"].startswith("INV-")
    assert on_second["number"].startswith("FR-")
    assert on_second["number"].endswith("-000001")
    assert on_second["legal_entity"] == entity["id"]


def test_zero_decimal_and_three_decimal_currencies(api: Api) -> None:
    customer = api.customer()["id"]
    line = {"description": "x", "quantity": "1", "unit_amount": 1500, "tax_rate": "10"}
    jpy = api.ok(
        api.post("/v1/invoices", {"customer": customer, "currency": "JPY", "lines": [line]})
    )
    kwd = api.ok(
        api.post("/v1/invoices", {"customer": customer, "currency": "kwd", "lines": [line]})
    )
    assert (jpy["currency"], jpy["total"]) == ("jpy", 1650)
    assert (kwd["currency"], kwd["total"]) == ("kwd", 1650)


def test_rotated_keys_overlap(api: Api) -> None:
    rotated = api.ok(api.post("/v1/api_keys/rotate", {}))
    new_key = rotated["secret_key"]
    assert re.match(r"^sk_[A-Za-z0-9_]{24,}$", new_key)
    assert rotated["previous_key_expires_at"] is not None
    assert api.get("/v1/invoices").status_code == 200
    assert (
        api.client.get("/v1/invoices", headers={"Authorization": f"Bearer {new_key}"}).status_code
        == 200
    )
