"""The journal: balanced, immutable, one posting per business key, periods that close."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from conftest import Api
from test_payment_evidence import SW_SECRET, Provider, sw_event


def entries(api: Api, invoice_id: str) -> list[dict[str, Any]]:
    listed = api.ok(api.get("/v1/journal_entries", {"invoice": invoice_id, "limit": 100}))
    return list(reversed(listed["data"]))


def net_by_account(found: list[dict[str, Any]]) -> dict[str, int]:
    net: dict[str, int] = defaultdict(int)
    for entry in found:
        for line in entry["lines"]:
            net[line["account"]] += line["debit"] - line["credit"]
    return {k: v for k, v in net.items() if v}


def assert_balanced(entry: dict[str, Any]) -> None:
    assert sum(x["debit"] for x in entry["lines"]) == sum(x["credit"] for x in entry["lines"])
    for line in entry["lines"]:
        assert line["debit"] >= 0 and line["credit"] >= 0
        assert (line["debit"] == 0) != (line["credit"] == 0)
        assert line["currency"] == entry["currency"]


def this_period() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def test_finalize_posts_receivable_revenue_and_tax(api: Api) -> None:
    invoice = api.open_invoice()
    [entry] = entries(api, invoice["id"])
    assert entry["business_key"] == f"finalize:{invoice['id']}"
    assert entry["id"].startswith("je_")
    assert entry["period"] == entry["date"][:7]
    assert_balanced(entry)
    assert net_by_account([entry]) == {
        "Assets:Receivable": invoice["total"],
        "Income:Revenue": -invoice["subtotal"],
        "Liabilities:Tax:Payable": -invoice["tax"],
    }
    assert api.ok(api.get(f"/v1/journal_entries/{entry['id']}")) == entry


def test_one_receipt_per_invoice_and_reference(api: Api) -> None:
    invoice = api.open_invoice()
    body = {"reference": "wire-77", "amount": 1000}
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", body, key="pay-77"))
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", body, key="pay-77"))
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", body))
    receipts = [e for e in entries(api, invoice["id"]) if e["business_key"].startswith("receipt:")]
    assert [e["business_key"] for e in receipts] == [f"receipt:{invoice['id']}:wire-77"]
    assert net_by_account(receipts) == {"Assets:Clearing:Manual": 1000, "Assets:Receivable": -1000}


def test_overpayment_surplus_is_posted_inside_the_receipt(api: Api) -> None:
    invoice = api.open_invoice()
    api.ok(
        api.post(
            f"/v1/invoices/{invoice['id']}/pay",
            {"reference": "over", "amount": invoice["total"] + 500},
        )
    )
    [_, receipt] = entries(api, invoice["id"])
    assert_balanced(receipt)
    assert net_by_account([receipt]) == {
        "Assets:Clearing:Manual": invoice["total"] + 500,
        "Assets:Receivable": -invoice["total"],
        "Liabilities:CustomerCredit": -500,
    }


def test_void_nets_the_invoice_to_zero(api: Api) -> None:
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/void"))
    found = entries(api, invoice["id"])
    assert [e["business_key"].split(":")[0] for e in found] == ["finalize", "void"]
    assert found[1]["reverses"] == found[0]["id"]
    assert net_by_account(found) == {}


def test_void_after_a_partial_payment_gives_the_money_back_as_credit(api: Api) -> None:
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "part", "amount": 700}))
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/void"))
    assert net_by_account(entries(api, invoice["id"])) == {
        "Assets:Clearing:Manual": 700,
        "Liabilities:CustomerCredit": -700,
    }
    customer = api.ok(api.get(f"/v1/customers/{invoice['customer']}"))
    assert customer["credit_balance"] == {"eur": 700}


def test_write_off_then_recovery(api: Api) -> None:
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "p1", "amount": 100}))
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/mark_uncollectible"))
    found = entries(api, invoice["id"])
    write_off = found[-1]
    assert write_off["business_key"] == f"write_off:{invoice['id']}"
    assert net_by_account([write_off]) == {
        "Expenses:BadDebt": invoice["total"] - 100,
        "Assets:Receivable": -(invoice["total"] - 100),
    }
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "late"}))
    total = net_by_account(entries(api, invoice["id"]))
    assert total == {
        "Assets:Clearing:Manual": invoice["total"],
        "Income:Revenue": -invoice["subtotal"],
        "Liabilities:Tax:Payable": -invoice["tax"],
    }


def test_refund_posts_its_own_entry(api: Api) -> None:
    invoice = api.open_invoice()
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    body = {"reference": "card-9", "amount": invoice["total"], "invoice": invoice["id"]}
    endpoint.send_sw(sw_event("payment.succeeded", method="card", **body))
    endpoint.send_sw(sw_event("payment.refunded", method="card", **body))
    endpoint.send_sw(sw_event("payment.refunded", method="card", **body))
    refunds = [e for e in entries(api, invoice["id"]) if e["business_key"].startswith("refund:")]
    assert [e["business_key"] for e in refunds] == [f"refund:{invoice['id']}:card-9"]
    assert net_by_account(refunds) == {
        "Income:Refunds": invoice["total"],
        "Assets:Clearing:StandardWebhooks": -invoice["total"],
    }


def test_unapplied_cash_then_applied(api: Api) -> None:
    invoice = api.open_invoice()
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    endpoint.send_sw(
        sw_event(
            "transfer.received",
            reference="lost-1",
            amount=invoice["total"],
            method="bank_transfer",
            reference_code="NOPE",
        )
    )
    [item] = api.ok(api.get("/v1/exception_items", {"kind": "unmatched_transfer"}))["data"]
    payment_id = item["refs"]["payment"]
    api.ok(api.post(f"/v1/payments/{payment_id}/apply", {"invoice": invoice["id"]}))
    receipts = [e for e in entries(api, invoice["id"]) if e["business_key"].startswith("receipt:")]
    assert net_by_account(receipts) == {
        "Liabilities:UnappliedCash": invoice["total"],
        "Assets:Receivable": -invoice["total"],
    }
    balance = {
        (r["account"], r["currency"]): r["balance"]
        for r in api.ok(api.get("/v1/trial_balance", {"period": this_period()}))["rows"]
    }
    assert balance[("Liabilities:UnappliedCash", "eur")] == 0


def test_trial_balance_balances_and_shows_receivables(api: Api) -> None:
    first = api.open_invoice()
    second = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{second['id']}/pay", {"reference": "x", "amount": 300}))
    trial = api.ok(api.get("/v1/trial_balance", {"period": this_period()}))
    assert trial["object"] == "trial_balance"
    rows = trial["rows"]
    assert sum(r["debit"] for r in rows) == sum(r["credit"] for r in rows)
    receivable = next(r for r in rows if r["account"] == "Assets:Receivable")
    assert receivable["balance"] == first["total"] + second["total"] - 300
    assert api.get("/v1/trial_balance", {"period": "2026-13"}).status_code == 400


def test_closed_period_sends_late_items_to_the_next_one(api: Api) -> None:
    period = this_period()
    invoice = api.open_invoice()
    refused = api.post(f"/v1/periods/{period}/close", {})
    if refused.status_code == 200:
        closed = refused.json()
    else:
        assert refused.status_code == 409
        no_reason = api.post(f"/v1/periods/{period}/close", {"force": True})
        assert no_reason.status_code == 400
        assert no_reason.json()["error"]["param"] == "reason"
        closed = api.ok(
            api.post(f"/v1/periods/{period}/close", {"force": True, "reason": "month end"})
        )
    assert closed["status"] == "closed"
    assert api.post(f"/v1/periods/{period}/close", {}).status_code == 409

    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "late"}))
    receipt = entries(api, invoice["id"])[-1]
    assert receipt["date"][:7] == period
    assert receipt["period"] > period

    reopened = api.ok(api.post(f"/v1/periods/{period}/reopen", {"reason": "audit fix"}))
    assert reopened["status"] == "open"
    assert [h["action"] for h in reopened["history"]] == ["closed", "reopened"]
    assert api.ok(api.get(f"/v1/periods/{period}"))["status"] == "open"


@pytest.mark.parametrize("debit", [100, 0])
def test_the_database_refuses_an_unbalanced_entry(api: Api, debit: int) -> None:
    state = api.client.app.state.invoicetrail  # type: ignore[attr-defined]
    with pytest.raises(IntegrityError), state.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO journal_entries (id, account_id, business_key, entry_date, period, "
                "currency, debit_total_minor, credit_total_minor, description, created_at) "
                "VALUES ('je_bad', :a, 'bad', '2026-01-01', '2026-01', 'eur', :d, 90, 'x', "
                "'2026-01-01T00:00:00')"
            ),
            {"a": api.account_id, "d": debit},
        )


def test_ar_balance_per_customer_is_open_amounts_minus_credit(api: Api) -> None:
    customer = api.customer()
    first = api.open_invoice(customer=customer["id"])
    second = api.open_invoice(customer=customer["id"])
    api.ok(api.post(f"/v1/invoices/{first['id']}/pay", {"reference": "a", "amount": 400}))
    api.ok(
        api.post(
            f"/v1/invoices/{second['id']}/pay",
            {"reference": "b", "amount": second["total"] + 90},
        )
    )
    rows = api.ok(api.get("/v1/ar_balances", {"period": this_period()}))["rows"]
    [row] = [r for r in rows if r["customer"] == customer["id"]]
    assert row["receivable"] == first["total"] - 400
    assert row["customer_credit"] == 90
    assert row["net"] == first["total"] - 400 - 90
    credit_balance = api.ok(api.get(f"/v1/customers/{customer['id']}"))["credit_balance"]
    assert credit_balance == {"eur": row["customer_credit"]}


def test_replaying_a_whole_scenario_leaves_the_journal_byte_identical(api: Api) -> None:
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    customer = api.ok(
        api.post("/v1/customers", {"name": "R", "address": {"country": "FR"}}, key="c")
    )
    writes: list[tuple[str, dict[str, Any] | None, str]] = [
        (
            "/v1/invoices",
            {
                "customer": customer["id"],
                "currency": "eur",
                "lines": [
                    {"description": "A", "quantity": "3", "unit_amount": 1999, "tax_rate": "20"}
                ],
            },
            "i1",
        ),
    ]
    invoice = api.ok(api.post(*writes[0][:2], key=writes[0][2]))
    writes += [
        (f"/v1/invoices/{invoice['id']}/finalize", None, "f1"),
        (f"/v1/invoices/{invoice['id']}/pay", {"reference": "chk-1", "amount": 1000}, "p1"),
    ]
    events = [
        (
            "msg_r1",
            sw_event(
                "payment.succeeded",
                reference="card-1",
                amount=5000,
                invoice=invoice["id"],
                method="card",
            ),
        ),
        (
            "msg_r2",
            sw_event(
                "payment.refunded",
                reference="card-1",
                amount=5000,
                invoice=invoice["id"],
                method="card",
            ),
        ),
    ]

    def play() -> None:
        for path, body, key in writes:
            assert api.post(path, body, key=key).status_code == 200
        for msg_id, event in events:
            assert endpoint.send_sw(event, msg_id=msg_id).status_code == 200

    play()
    journal = api.get("/v1/journal_entries", {"limit": 100}).content
    trial = api.get("/v1/trial_balance", {"period": this_period()}).content
    play()
    assert api.get("/v1/journal_entries", {"limit": 100}).content == journal
    assert api.get("/v1/trial_balance", {"period": this_period()}).content == trial
    keys = [
        e["business_key"] for e in api.ok(api.get("/v1/journal_entries", {"limit": 100}))["data"]
    ]
    assert len(keys) == len(set(keys)) == 4


def test_cash_policy_recognises_revenue_when_money_arrives(api: Api) -> None:
    settings = api.ok(api.post("/v1/ledger_settings", {"posting_policy": "cash"}))
    assert settings["posting_policy"] == "cash"
    invoice = api.open_invoice()
    assert entries(api, invoice["id"]) == []
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "c1", "amount": 1000}))
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "c2"}))
    found = entries(api, invoice["id"])
    assert [e["business_key"].split(":")[0] for e in found] == ["receipt", "receipt"]
    for entry in found:
        assert_balanced(entry)
    assert net_by_account(found) == {
        "Assets:Clearing:Manual": invoice["total"],
        "Income:Revenue": -invoice["subtotal"],
        "Liabilities:Tax:Payable": -invoice["tax"],
    }
    voided = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{voided['id']}/void"))
    assert entries(api, voided["id"]) == []
    changed = api.post("/v1/ledger_settings", {"posting_policy": "accrual"})
    assert changed.status_code == 409
    assert changed.json()["error"]["param"] == "posting_policy"


def test_chart_accounts_can_be_renamed(api: Api) -> None:
    renamed = api.ok(
        api.post(
            "/v1/ledger_settings",
            {"accounts": {"receivable": "Assets:AR:Trade", "revenue": "Income:Sales"}},
        )
    )
    assert renamed["accounts"]["receivable"] == "Assets:AR:Trade"
    assert renamed["accounts"]["tax_payable"] == "Liabilities:Tax:Payable"
    invoice = api.open_invoice()
    [entry] = entries(api, invoice["id"])
    assert {line["account"] for line in entry["lines"]} == {
        "Assets:AR:Trade",
        "Income:Sales",
        "Liabilities:Tax:Payable",
    }
    bad_role = api.post("/v1/ledger_settings", {"accounts": {"nope": "Assets:X"}})
    assert bad_role.status_code == 400
    assert bad_role.json()["error"]["param"] == "accounts.nope"
    bad_name = api.post("/v1/ledger_settings", {"accounts": {"revenue": "sales income"}})
    assert bad_name.status_code == 400
