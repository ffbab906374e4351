"""The per-invoice trace: request id → idempotency key → invoice → provider event → payment
reference → journal entry → export row → ERP record id, from stored records, each list in
time order; through the API and the `invoicetrail trace` command."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from conftest import Api, create_account, make_settings, prepare_sqlite_database
from invoicetrail.api import create_app
from invoicetrail.cli import app as cli_app
from invoicetrail.core.clock import ManualClock
from test_exports import all_rows
from test_payment_evidence import STRIPE_SECRET, SW_SECRET, Provider, pi_event, sw_event

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PERIOD = "2026-11"
TRACE_KEYS = {
    "invoice",
    "requests",
    "provider_events",
    "payments",
    "journal_entries",
    "export_rows",
    "einvoice_submissions",
    "exceptions",
    "events",
}
# The instant each list is ordered by.
TIME_FIELDS = {
    "requests": "created",
    "provider_events": "received_at",
    "payments": "created",
    "journal_entries": "created",
    "exceptions": "created",
    "events": "created",
}
INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def timed(db_url: str) -> Iterator[tuple[Api, ManualClock]]:
    """An account on an app whose clock only moves when the test says, so every step of the
    chain has its own instant and the order of each list is checked, not assumed."""
    clock = ManualClock(START)
    app = create_app(make_settings(db_url), clock)
    with TestClient(app) as client:
        account_id, key = create_account(app.state.invoicetrail)
        yield Api(client=client, account_id=account_id, secret_key=key), clock


def trace_of(api: Api, invoice_id: str) -> dict[str, Any]:
    found = api.ok(api.get(f"/v1/invoices/{invoice_id}/trace"))
    assert set(found) == TRACE_KEYS
    for name, field in TIME_FIELDS.items():
        instants = [item[field] for item in found[name]]
        assert all(INSTANT.match(at) for at in instants), (name, instants)
        assert instants == sorted(instants), (name, instants)
    return found


def test_a_paid_exported_acknowledged_invoice_traces_every_link(
    timed: tuple[Api, ManualClock],
) -> None:
    api, clock = timed

    def later() -> None:
        clock.advance(timedelta(minutes=1))

    stripe = Provider(api, "stripe", STRIPE_SECRET)
    customer = api.customer()
    later()  # 10:01 create
    key = f"create-{uuid.uuid4().hex}"
    body = {
        "customer": customer["id"],
        "currency": "eur",
        "lines": [{"description": "Plan", "quantity": "1", "unit_amount": 1000, "tax_rate": "19"}],
    }
    created = api.post("/v1/invoices", body, key=key)
    invoice_id = api.ok(created)["id"]
    later()  # 10:02 finalize
    finalized = api.post(f"/v1/invoices/{invoice_id}/finalize")
    invoice = api.ok(finalized)
    assert invoice["total"] == 1190
    later()  # 10:03 the provider's webhook
    pi = f"pi_{uuid.uuid4().hex[:20]}"
    event = pi_event("payment_intent.succeeded", invoice, pi=pi, amount=invoice["total"])
    webhook = stripe.send_stripe(event, at=int(clock.now().timestamp()))
    assert webhook.status_code == 200, webhook.text
    assert webhook.json()["outcome"] == "applied"
    provider_event_id = webhook.json()["provider_event"]
    later()  # 10:04 export
    exported = api.post("/v1/exports", {"format": "csv", "period": PERIOD})
    batch = api.ok(exported)
    rows = all_rows(api, batch["id"])

    before_ack = trace_of(api, invoice_id)
    assert {row["id"] for row in before_ack["export_rows"]} == {row["id"] for row in rows}
    assert {row["status"] for row in before_ack["export_rows"]} == {"exported"}
    assert {row["erp_record_id"] for row in before_ack["export_rows"]} == {None}

    later()  # 10:05 the ERP's answer
    erp_ids = {row["id"]: f"GL-{n}" for n, row in enumerate(rows, start=1)}
    acknowledged = api.post(
        f"/v1/exports/{batch['id']}/acknowledge",
        {"rows": [{"id": row_id, "erp_record_id": erp} for row_id, erp in erp_ids.items()]},
    )
    api.ok(acknowledged)
    later()
    trace = trace_of(api, invoice_id)

    # invoice: the object GET /v1/invoices/{id} answers
    assert trace["invoice"] == api.ok(api.get(f"/v1/invoices/{invoice_id}"))
    assert trace["invoice"]["status"] == "paid"

    # requests: every committed request that touched the invoice, in time order
    assert [(r["method"], r["path"], r["status"]) for r in trace["requests"]] == [
        ("POST", "/v1/invoices", created.status_code),
        ("POST", f"/v1/invoices/{invoice_id}/finalize", finalized.status_code),
        ("POST", stripe.url, 200),
        ("POST", "/v1/exports", exported.status_code),
        ("POST", f"/v1/exports/{batch['id']}/acknowledge", acknowledged.status_code),
    ]
    create, finalize, receipt_request, export_request, ack_request = trace["requests"]
    assert create == {
        "request_id": created.headers["Request-Id"],
        "idempotency_key": key,
        "method": "POST",
        "path": "/v1/invoices",
        "status": created.status_code,
        "created": "2026-11-25T10:01:00.000Z",
        "object_id": invoice_id,
    }
    assert finalize["request_id"] == finalized.headers["Request-Id"]
    assert receipt_request["request_id"] == webhook.headers["Request-Id"]
    assert receipt_request["idempotency_key"] is None
    assert receipt_request["object_id"] == provider_event_id
    assert receipt_request["created"] == "2026-11-25T10:03:00.000Z"
    assert export_request["request_id"] == exported.headers["Request-Id"]
    assert ack_request["request_id"] == acknowledged.headers["Request-Id"]

    # provider event: as GET /v1/provider_events/{id}, verified, the stored body's digest
    [provider_event] = trace["provider_events"]
    assert provider_event == api.ok(api.get(f"/v1/provider_events/{provider_event_id}"))
    assert provider_event["provider_event_id"] == event["id"]
    assert provider_event["verification"] == "verified"
    assert provider_event["request_id"] == receipt_request["request_id"]
    assert provider_event["body_sha256"] == hashlib.sha256(json.dumps(event).encode()).hexdigest()

    # payment reference
    [payment] = trace["payments"]
    assert payment == api.ok(api.get(f"/v1/payments/{payment['id']}"))
    assert provider_event["payment"] == payment["id"]
    assert provider_event["invoice"] == invoice_id
    assert (payment["reference"], payment["status"], payment["amount"]) == (pi, "succeeded", 1190)
    assert payment["provider_event_ids"] == [event["id"]]

    # journal entries: finalize, then the receipt of that reference
    entries = trace["journal_entries"]
    assert [e["business_key"] for e in entries] == [
        f"finalize:{invoice_id}",
        f"receipt:{invoice_id}:{pi}",
    ]
    for entry in entries:
        assert entry == api.ok(api.get(f"/v1/journal_entries/{entry['id']}"))
    finalize_entry, receipt = entries
    assert receipt["payment"] == payment["id"]
    assert receipt["request_id"] == receipt_request["request_id"]
    assert finalize_entry["request_id"] == finalize["request_id"]

    # export rows: one per journal line, as GET /v1/exports/{id}/rows/{exr}, with the ERP's ids
    export_rows = trace["export_rows"]
    assert len(export_rows) == sum(len(e["lines"]) for e in entries) == len(rows)
    for row in export_rows:
        assert row == api.ok(api.get(f"/v1/exports/{batch['id']}/rows/{row['id']}"))
        assert row["status"] == "synced"
        assert row["erp_record_id"] == erp_ids[row["id"]]
        assert row["acknowledged_at"] == "2026-11-25T10:05:00.000Z"
    # same instant: the rows follow the journal lines' order (finalize entry first)
    assert [row["journal_entry"] for row in export_rows] == [
        entry["id"] for entry in entries for _ in entry["lines"]
    ]
    receipt_rows = [row for row in export_rows if row["journal_entry"] == receipt["id"]]
    assert {row["account"] for row in receipt_rows} == {
        "Assets:Clearing:Stripe",
        "Assets:Receivable",
    }

    # the chain, followed link by link from the first request
    assert create["idempotency_key"] == key and create["object_id"] == invoice_id
    linked_event = next(p for p in trace["provider_events"] if p["invoice"] == create["object_id"])
    linked_payment = next(p for p in trace["payments"] if p["id"] == linked_event["payment"])
    linked_entry = next(
        e
        for e in trace["journal_entries"]
        if e["business_key"] == f"receipt:{invoice_id}:{linked_payment['reference']}"
    )
    erp_records = {
        r["erp_record_id"] for r in export_rows if r["journal_entry"] == linked_entry["id"]
    }
    assert erp_records == {erp_ids[r["id"]] for r in receipt_rows} and None not in erp_records

    assert trace["einvoice_submissions"] == []
    assert trace["exceptions"] == []  # a clean chain

    # events: the invoice's, its payment's and its entries' outbox events, in time order
    types = [e["type"] for e in trace["events"]]
    assert types[0] == "invoice.created"
    assert {"invoice.finalized", "invoice.paid", "journal_entry.created"} <= set(types)
    assert types.count("journal_entry.created") == 2
    linked_ids = {invoice_id, payment["id"], *(e["id"] for e in entries)}
    assert {e["data"]["object"]["id"] for e in trace["events"]} == linked_ids
    assert trace["events"] == [api.ok(api.get(f"/v1/events/{e['id']}")) for e in trace["events"]]


def test_another_accounts_invoice_and_an_unknown_id_are_404(api: Api, other_api: Api) -> None:
    invoice = api.open_invoice()
    mine = api.get(f"/v1/invoices/{invoice['id']}/trace")
    assert mine.status_code == 200
    theirs = other_api.get(f"/v1/invoices/{invoice['id']}/trace")
    as_get = other_api.get(f"/v1/invoices/{invoice['id']}")
    assert theirs.status_code == as_get.status_code == 404
    error = theirs.json()["error"]
    assert error["code"] == as_get.json()["error"]["code"] == "resource_missing"
    assert error["message"] == as_get.json()["error"]["message"]
    unknown = api.get("/v1/invoices/in_doesnotexist/trace")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "resource_missing"


def test_exception_items_of_the_invoice_are_in_its_trace(api: Api) -> None:
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    invoice = api.open_invoice()
    bystander = api.open_invoice()  # its items must not leak into the other trace
    requests = []
    for target in (invoice, bystander):
        response = endpoint.send_sw(
            sw_event(
                "payment.succeeded",
                reference=f"usd-{target['id']}",
                amount=400,
                currency="usd",
                invoice=target["id"],
                method="card",
            )
        )
        assert response.status_code == 200, response.text
        requests.append(response.headers["Request-Id"])
    webhook_request, bystander_request = requests

    trace = trace_of(api, invoice["id"])
    [mismatch] = trace["exceptions"]
    assert mismatch["kind"] == "amount_mismatch"
    assert mismatch["refs"]["invoice"] == invoice["id"]
    assert mismatch == api.ok(api.get(f"/v1/exception_items/{mismatch['id']}"))
    assert mismatch["history"][0]["request_id"] == webhook_request
    traced_requests = {r["request_id"] for r in trace["requests"]}
    assert webhook_request in traced_requests
    assert bystander_request not in traced_requests
    assert "exception_item.created" in {e["type"] for e in trace["events"]}

    # An ERP refusal of one of its rows raises export_failed on the same invoice.
    period = trace["journal_entries"][0]["period"]
    batch = api.ok(api.post("/v1/exports", {"format": "csv", "period": period}))
    entry_ids = {e["id"] for e in trace["journal_entries"]}
    row = next(r for r in all_rows(api, batch["id"]) if r["journal_entry"] in entry_ids)
    api.ok(
        api.post(
            f"/v1/exports/{batch['id']}/acknowledge",
            {"rows": [{"id": row["id"], "error": "account 1200 is closed"}]},
        )
    )
    trace = trace_of(api, invoice["id"])
    assert [item["kind"] for item in trace["exceptions"]] == ["amount_mismatch", "export_failed"]
    failed = trace["exceptions"][1]
    assert failed["refs"]["export_row"] == row["id"]
    [failed_row] = [r for r in trace["export_rows"] if r["id"] == row["id"]]
    assert (failed_row["status"], failed_row["error"]) == ("failed", "account 1200 is closed")
    assert {r["status"] for r in trace["export_rows"] if r["id"] != row["id"]} == {"exported"}
    other = trace_of(api, bystander["id"])
    assert [item["kind"] for item in other["exceptions"]] == ["amount_mismatch"]
    assert other["exceptions"][0]["id"] != mismatch["id"]


# --- the command line ----------------------------------------------------------------------

runner = CliRunner()
TIMELINE_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)  (\S+)\s+(.*)$")


def run_trace(database_url: str, *args: str) -> Any:
    return runner.invoke(cli_app, ["trace", *args], env={"INVOICETRAIL_DATABASE_URL": database_url})


def test_cli_prints_the_timeline_and_the_json(api: Api, db_url: str) -> None:
    stripe = Provider(api, "stripe", STRIPE_SECRET)
    invoice = api.open_invoice()
    pi = f"pi_{uuid.uuid4().hex[:20]}"
    event = pi_event("payment_intent.succeeded", invoice, pi=pi, amount=invoice["total"])
    assert stripe.send_stripe(event).status_code == 200
    entries = api.ok(api.get("/v1/journal_entries", {"invoice": invoice["id"]}))["data"]
    [payment] = api.ok(api.get("/v1/payments", {"invoice": invoice["id"]}))["data"]

    result = run_trace(db_url, invoice["id"], "--account", api.account_id)
    assert result.exit_code == 0, result.output
    headline, *lines = result.stdout.splitlines()
    assert headline.startswith(f"invoice {invoice['id']} {invoice['number']} paid total ")
    parsed = [TIMELINE_LINE.match(line) for line in lines]
    assert all(parsed), lines
    instants = [m.group(1) for m in parsed if m]
    assert instants == sorted(instants)
    kinds = [m.group(2) for m in parsed if m]
    assert {"request", "provider_event", "payment", "journal_entry", "event"} <= set(kinds)
    text = result.stdout
    for expected in (invoice["id"], pi, payment["id"], event["id"], *(e["id"] for e in entries)):
        assert expected in text, expected
    [payment_line] = [line for line in lines if "  payment " in line]
    assert f"{payment['id']} {pi} succeeded " in payment_line
    [receipt_line] = [line for line in lines if f"receipt:{invoice['id']}:{pi}" in line]
    assert "Dr Assets:Clearing:Stripe" in receipt_line and "Cr Assets:Receivable" in receipt_line

    as_json = run_trace(db_url, invoice["id"], "--account", api.account_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == api.ok(api.get(f"/v1/invoices/{invoice['id']}/trace"))

    unknown = run_trace(db_url, "in_doesnotexist", "--account", api.account_id)
    assert unknown.exit_code == 1
    assert unknown.stdout == ""
    assert "No such invoice" in unknown.stderr
    # Several accounts share this database: the command will not guess which one.
    ambiguous = run_trace(db_url, invoice["id"])
    assert ambiguous.exit_code == 2
    assert "--account" in ambiguous.stderr


def test_cli_defaults_to_the_only_account(tmp_path: Path) -> None:
    url = prepare_sqlite_database(tmp_path)
    app = create_app(make_settings(url))
    with TestClient(app) as client:
        account_id, key = create_account(app.state.invoicetrail)
        api = Api(client=client, account_id=account_id, secret_key=key)
        invoice = api.open_invoice()
    result = run_trace(url, invoice["id"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"invoice {invoice['id']} ")
    assert f"POST /v1/invoices/{invoice['id']}/finalize (200)" in result.stdout


def test_money_parked_then_applied_is_traced_through_its_payment(api: Api) -> None:
    """An unmatched transfer is parked (no invoice yet), then applied: its provider event,
    unapplied-cash entry and `unmatched_transfer` item are linked by the payment only."""
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    invoice = api.open_invoice()
    transfer = endpoint.send_sw(
        sw_event(
            "transfer.received",
            reference=f"bt-{uuid.uuid4().hex[:8]}",
            amount=invoice["total"],
            method="bank_transfer",
            reference_code="0000-0000-0",
        )
    )
    assert transfer.json()["outcome"] == "unmatched", transfer.text
    [item] = api.ok(api.get("/v1/exception_items", {"kind": "unmatched_transfer"}))["data"]
    parked = item["refs"]["payment"]
    assert trace_of(api, invoice["id"])["exceptions"] == []  # not linked yet
    applied = api.post(f"/v1/payments/{parked}/apply", {"invoice": invoice["id"]})
    api.ok(applied)

    trace = trace_of(api, invoice["id"])
    assert [p["id"] for p in trace["payments"]] == [parked]
    [provider_event] = trace["provider_events"]
    assert provider_event["id"] == transfer.json()["provider_event"]
    assert provider_event["payment"] == parked
    assert [i["id"] for i in trace["exceptions"]] == [item["id"]]
    assert trace["exceptions"][0]["refs"]["payment"] == parked
    assert trace["exceptions"][0]["refs"]["invoice"] is None  # found by its payment ref
    requests = {r["request_id"]: r for r in trace["requests"]}
    assert requests[transfer.headers["Request-Id"]]["path"] == endpoint.url
    assert requests[applied.headers["Request-Id"]]["path"] == f"/v1/payments/{parked}/apply"
    assert any(e["payment"] == parked and e["invoice"] is None for e in trace["journal_entries"])
