"""Control: the owned exception queue, ownership, launch gates (KYB) and the go-live check,
through the API and the `invoicetrail exceptions | ownership | gates | golive-check` commands."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.testclient import TestClient
from typer.testing import CliRunner

from conftest import (
    PG_TEST_DB,
    Api,
    create_account,
    make_settings,
    prepare_postgres_database,
    prepare_sqlite_database,
)
from invoicetrail.api import create_app
from invoicetrail.cli import app as cli_app
from invoicetrail.core.clock import ManualClock
from invoicetrail.worker import Worker
from test_payment_evidence import SW_SECRET, Provider, sw_event

CHECKS = [
    "ownership",
    "provider_endpoint",
    "webhook_signature_verification",
    "posting_policy_and_chart",
    "paid_invoices_trace",
    "exceptions_past_due",
    "launch_gates",
]
ALL_AREAS = [
    "invoice_state",
    "payment_evidence",
    "journal_posting",
    "erp_export",
    "exception_queue",
    "disputes.first_responder",
    "disputes.authoritative_record",
]
OWNERSHIP = {
    "invoice_state": "billing_ops",
    "payment_evidence": "ar_team",
    "journal_posting": "gl_accountant",
    "erp_export": "erp_admin",
    "exception_queue": "ar_lead",
    "disputes": {"first_responder": "payments_ops", "authoritative_record": "provider"},
    "compliance_markets": {"US": "us_tax"},
}
US_TAX_GATES = {"tax_forms_w9_w8ben", "form_1099_nec_readiness"}


# --- helpers -------------------------------------------------------------------------------


def put(api: Api, path: str, body: Any, *, key: str | None = None) -> httpx.Response:
    return api.client.put(
        path, json=body, headers={**api.auth, "Idempotency-Key": key or uuid.uuid4().hex}
    )


def items(api: Api, **filters: Any) -> list[dict[str, Any]]:
    return api.ok(api.get("/v1/exception_items", {"limit": 100, **filters}))["data"]


def item_of(api: Api, item_id: str) -> dict[str, Any]:
    return api.ok(api.get(f"/v1/exception_items/{item_id}"))


def stored_items(api: Api) -> int:
    """Rows in the table, whatever their status: the queue never deletes."""
    engine = api.client.app.state.invoicetrail.engine  # type: ignore[attr-defined]
    with engine.connect() as connection:
        count: int = connection.execute(
            text("SELECT COUNT(*) FROM exception_items WHERE account_id = :a"),
            {"a": api.account_id},
        ).scalar_one()
    return count


def unmatched_transfer(api: Api, provider: Provider) -> dict[str, Any]:
    """A transfer whose reference code matches nothing: one `unmatched_transfer` item."""
    reference = f"bt-{uuid.uuid4().hex[:12]}"
    response = provider.send_sw(
        sw_event(
            "transfer.received",
            reference=reference,
            amount=1234,
            method="bank_transfer",
            reference_code="NOPE-" + uuid.uuid4().hex[:6].upper(),
        )
    )
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "unmatched"
    [item] = [
        i
        for i in items(api, kind="unmatched_transfer")
        if i["detail"]["payment_reference"] == reference
    ]
    return item


def refuse_receipt_rows(api: Api, invoice_id: str) -> list[dict[str, Any]]:
    """Exports the invoice's period and has the ERP refuse the receipt entry's rows."""
    entries = api.ok(api.get("/v1/journal_entries", {"invoice": invoice_id, "limit": 100}))["data"]
    [receipt] = [e for e in entries if e["business_key"].startswith("receipt:")]
    batch = api.ok(api.post("/v1/exports", {"format": "csv", "period": receipt["period"]}))
    rows = api.ok(api.get(f"/v1/exports/{batch['id']}/rows", {"limit": 100}))["data"]
    refused = [r for r in rows if r["journal_entry"] == receipt["id"]]
    assert refused
    api.ok(
        api.post(
            f"/v1/exports/{batch['id']}/acknowledge",
            {"rows": [{"id": r["id"], "error": "GL account 1210 is closed"} for r in refused]},
        )
    )
    return refused


def refuse_issue_row(api: Api, invoice_id: str) -> list[dict[str, Any]]:
    """The ERP refuses one row of an open invoice's (issue) entry: an `export_failed` item."""
    entries = api.ok(api.get("/v1/journal_entries", {"invoice": invoice_id}))["data"]
    batch = api.ok(api.post("/v1/exports", {"format": "csv", "period": entries[0]["period"]}))
    rows = api.ok(api.get(f"/v1/exports/{batch['id']}/rows", {"limit": 100}))["data"]
    refused = [r for r in rows if r["invoice"] == invoice_id][:1]
    api.ok(
        api.post(
            f"/v1/exports/{batch['id']}/acknowledge",
            {"rows": [{"id": r["id"], "error": "period closed in ERP"} for r in refused]},
        )
    )
    return refused


def sync_rows(api: Api, rows: list[dict[str, Any]]) -> None:
    """Re-exports the period and has the ERP accept the given rows."""
    batch = api.ok(api.post("/v1/exports", {"format": "csv", "period": rows[0]["period"]}))
    api.ok(
        api.post(
            f"/v1/exports/{batch['id']}/acknowledge",
            {"rows": [{"id": r["id"], "erp_record_id": f"GL-{i}"} for i, r in enumerate(rows)]},
        )
    )


def golive(api: Api) -> tuple[bool, dict[str, dict[str, Any]]]:
    response = api.get("/v1/golive_check")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["name"] for c in body["checks"]] == CHECKS
    assert body["ready"] == all(c["ok"] for c in body["checks"])
    return body["ready"], {c["name"]: c for c in body["checks"]}


def failing(api: Api) -> set[str]:
    _ready, checks = golive(api)
    return {name for name, check in checks.items() if not check["ok"]}


def pass_required_gates(api: Api) -> None:
    for gate in api.ok(api.get("/v1/launch_gates"))["data"]:
        if gate["required"]:
            api.ok(
                put(
                    api,
                    f"/v1/launch_gates/{gate['name']}",
                    {"status": "passed", "owner": "compliance", "evidence_reference": "doc-1"},
                )
            )


def make_ready(api: Api) -> Provider:
    """Everything the go-live check asks for; returns the account's provider endpoint."""
    api.ok(put(api, "/v1/ownership", OWNERSHIP))
    provider = Provider(api, "standard_webhooks", SW_SECRET)
    api.ok(api.post("/v1/ledger_settings", {"posting_policy": "accrual"}))
    pass_required_gates(api)
    ready, checks = golive(api)
    assert ready, checks
    return provider


runner = CliRunner()


def cli(database_url: str, *args: str) -> Any:
    return runner.invoke(cli_app, list(args), env={"INVOICETRAIL_DATABASE_URL": database_url})


@dataclass
class Clocked:
    api: Api
    clock: ManualClock
    worker: Worker


@pytest.fixture
def clocked(db_url: str) -> Iterator[Clocked]:
    """An app and a worker on a clock the test moves (no daily reconciliation in the way)."""
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    settings = make_settings(db_url, reconcile_daily=False)
    app = create_app(settings, clock)
    worker = Worker(settings, clock)
    with TestClient(app, base_url="http://testserver") as client:
        account_id, key = create_account(app.state.invoicetrail)
        yield Clocked(Api(client=client, account_id=account_id, secret_key=key), clock, worker)
    worker.close()


# --- 1. the exception queue -----------------------------------------------------------------


def test_queue_filters_overdue_and_snooze_wakes_via_the_worker(clocked: Clocked) -> None:
    api, clock = clocked.api, clocked.clock
    provider = Provider(api, "standard_webhooks", SW_SECRET)
    transfer = unmatched_transfer(api, provider)
    invoice = api.open_invoice()
    refused = refuse_issue_row(api, invoice["id"])
    [export_item] = items(api, kind="export_failed")
    seen = stored_items(api)
    assert seen == 2

    assert transfer["owner"] == "accounts_receivable"  # default role: no ownership config
    assert export_item["owner"] == "accounting"
    assert export_item["refs"]["export_row"] in {r["id"] for r in refused}
    ids = {transfer["id"], export_item["id"]}

    def listed(**filters: Any) -> set[str]:
        return {i["id"] for i in items(api, **filters)}

    assert listed() == ids
    assert listed(kind="unmatched_transfer") == {transfer["id"]}
    assert listed(kind="export_failed") == {export_item["id"]}
    assert listed(kind="not_delivered") == set()
    assert listed(owner="accounts_receivable") == {transfer["id"]}
    assert listed(owner="accounting") == {export_item["id"]}
    assert listed(owner="nobody") == set()
    assert listed(invoice=invoice["id"]) == {export_item["id"]}
    assert listed(status="open") == ids
    assert listed(status="resolved") == set()
    assert listed(overdue="true") == set()
    assert listed(overdue="false") == ids

    clock.advance(timedelta(hours=25))  # both were due 24 h after they were raised
    assert listed(overdue="true") == ids
    assert listed(overdue="false") == set()
    api.ok(api.post(f"/v1/exception_items/{export_item['id']}/resolve", {"note": "reposted"}))
    assert listed(status="resolved") == {export_item["id"]}
    assert listed(status="open") == {transfer["id"]}
    assert listed(overdue="true") == {transfer["id"]}

    until = clock.now() + timedelta(hours=2)
    snoozed = api.ok(
        api.post(
            f"/v1/exception_items/{transfer['id']}/snooze",
            {"until": until.isoformat().replace("+00:00", "Z"), "note": "bank answers tomorrow"},
        )
    )
    assert snoozed["status"] == "snoozed"
    assert listed(status="snoozed") == {transfer["id"]}
    assert listed(overdue="true") == set()  # snoozing moves the deadline with it

    clock.advance(timedelta(hours=1))
    clocked.worker.run_once()
    assert item_of(api, transfer["id"])["status"] == "snoozed"  # not yet
    clock.advance(timedelta(hours=1, seconds=1))
    assert clocked.worker.run_once().snoozed_items_woken >= 1
    woken = item_of(api, transfer["id"])
    assert woken["status"] == "open"
    assert woken["snoozed_until"] is None
    last = woken["history"][-1]
    assert (last["action"], last["actor"]) == ("reopened", "worker")
    assert [h["action"] for h in woken["history"]] == ["created", "snoozed", "reopened"]
    assert listed(status="open") == {transfer["id"]}
    assert stored_items(api) == seen


def test_queue_actions_are_idempotent_and_recorded_in_history(api: Api) -> None:
    provider = Provider(api, "standard_webhooks", SW_SECRET)
    item = unmatched_transfer(api, provider)
    path = f"/v1/exception_items/{item['id']}"
    counts = [stored_items(api)]
    assert item["status"] == "open" and item["next_action"]
    assert [h["action"] for h in item["history"]] == ["created"]

    def act(action: str, body: Any, key: str) -> httpx.Response:
        response = api.post(f"{path}/{action}", body, key=key)
        assert response.status_code == 200, response.text
        return response

    # assign: answer, history entry with actor + request id, replay answers the same
    assigned = act("assign", {"owner": "treasury", "note": "bank statement needed"}, "k-assign")
    body = assigned.json()
    assert (body["owner"], body["status"]) == ("treasury", "open")
    entry = body["history"][-1]
    assert entry["action"] == "assigned" and entry["owner"] == "treasury"
    assert entry["note"] == "bank statement needed"
    assert entry["request_id"] == assigned.headers["request-id"]
    assert entry["actor"].startswith("api")  # an API caller, not cli or worker
    replay = act("assign", {"owner": "treasury", "note": "bank statement needed"}, "k-assign")
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.content == assigned.content
    assert len(item_of(api, item["id"])["history"]) == 2
    counts.append(stored_items(api))

    # snooze: in the past → 400 param until, nothing written; in the future → snoozed
    past = api.post(f"{path}/snooze", {"until": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400
    assert past.json()["error"]["param"] == "until"
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    snoozed = act("snooze", {"until": until.isoformat()}, "k-snooze")
    assert snoozed.json()["status"] == "snoozed"
    assert snoozed.json()["snoozed_until"].startswith(until.strftime("%Y-%m-%dT%H:%M:%S"))
    entry = snoozed.json()["history"][-1]
    assert entry["action"] == "snoozed"
    assert entry["request_id"] == snoozed.headers["request-id"]
    assert act("snooze", {"until": until.isoformat()}, "k-snooze").content == snoozed.content
    assert len(item_of(api, item["id"])["history"]) == 3

    # resolve: a note is required, blank counts as missing
    for body_sent in (None, {}, {"note": "   "}, {"note": ""}):
        missing = api.post(f"{path}/resolve", body_sent)
        assert missing.status_code == 400, (body_sent, missing.text)
        error = missing.json()["error"]
        assert (error["code"], error["param"]) == ("parameter_missing", "note"), body_sent
    assert item_of(api, item["id"])["status"] == "snoozed"
    assert len(item_of(api, item["id"])["history"]) == 3
    resolved = act("resolve", {"note": "applied by hand to in_x"}, "k-resolve")
    assert resolved.json()["status"] == "resolved"
    entry = resolved.json()["history"][-1]
    assert (entry["action"], entry["note"]) == ("resolved", "applied by hand to in_x")
    assert entry["request_id"] == resolved.headers["request-id"]
    replay = act("resolve", {"note": "applied by hand to in_x"}, "k-resolve")
    assert replay.content == resolved.content
    history = item_of(api, item["id"])["history"]
    assert [h["action"] for h in history] == ["created", "assigned", "snoozed", "resolved"]
    assert len({h["request_id"] for h in history}) == 4
    counts.append(stored_items(api))

    # a resolved item refuses every further action, and stays resolved
    for action, body_sent in (
        ("assign", {"owner": "someone"}),
        ("snooze", {"until": until.isoformat()}),
        ("resolve", {"note": "again"}),
    ):
        refused = api.post(f"{path}/{action}", body_sent)
        assert refused.status_code == 409, (action, refused.text)
        assert refused.json()["error"]["code"] == "invalid_state_transition"
    final = item_of(api, item["id"])
    assert final["status"] == "resolved" and final["history"] == history
    assert item["id"] in {i["id"] for i in items(api, status="resolved")}
    counts.append(stored_items(api))
    assert counts == sorted(counts) and counts[-1] >= 1


def test_another_account_cannot_see_or_work_an_item(api: Api, other_api: Api) -> None:
    provider = Provider(api, "standard_webhooks", SW_SECRET)
    item = unmatched_transfer(api, provider)
    path = f"/v1/exception_items/{item['id']}"
    before = api.get(path).content
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert other_api.get(path).status_code == 404
    for action, body in (
        ("assign", {"owner": "intruder"}),
        ("snooze", {"until": until}),
        ("resolve", {"note": "not mine"}),
    ):
        response = other_api.post(f"{path}/{action}", body)
        assert response.status_code == 404, (action, response.text)
        assert response.json()["error"]["code"] == "resource_missing"
    assert items(other_api) == []
    assert api.get(path).content == before


# --- 2. ownership ------------------------------------------------------------------------


def test_ownership_config_routes_items_and_follows_markets(api: Api, other_api: Api) -> None:
    fresh = api.ok(api.get("/v1/ownership"))
    assert fresh["unassigned"] == [*ALL_AREAS, "compliance_markets.US"]
    assert fresh["markets"] == ["US"]
    assert fresh["payment_evidence"] is None and fresh["history"] == []

    put_response = put(api, "/v1/ownership", OWNERSHIP)
    stored = api.ok(put_response)
    got = api.ok(api.get("/v1/ownership"))
    assert got == stored
    for area, owner in OWNERSHIP.items():
        assert got[area] == owner, area
    assert got["unassigned"] == []
    assert got["history"][-1]["request_id"] == put_response.headers["request-id"]

    # items are routed to the configured owner; another account falls back to a default role
    mine = unmatched_transfer(api, Provider(api, "standard_webhooks", SW_SECRET))
    assert mine["owner"] == "ar_team"
    assert mine["history"][0]["owner"] == "ar_team"
    theirs = unmatched_transfer(other_api, Provider(other_api, "standard_webhooks", SW_SECRET))
    assert theirs["owner"] == "accounts_receivable"

    # PUT replaces the whole config: what is left out is unassigned again, and the queue's
    # owner answers for an area without one
    replaced = api.ok(put(api, "/v1/ownership", {"exception_queue": "ops_desk"}))
    assert replaced["payment_evidence"] is None
    assert replaced["unassigned"] == [a for a in ALL_AREAS if a != "exception_queue"] + [
        "compliance_markets.US"
    ]
    assert len(replaced["history"]) == 2
    routed = unmatched_transfer(api, Provider(api, "standard_webhooks", SW_SECRET))
    assert routed["owner"] == "ops_desk"

    # compliance markets follow the legal entities' countries
    api.ok(put(api, "/v1/ownership", OWNERSHIP))
    api.ok(api.post("/v1/legal_entities", {"name": "Trail GmbH", "country": "DE"}))
    with_de = api.ok(api.get("/v1/ownership"))
    assert with_de["markets"] == ["DE", "US"]
    assert with_de["unassigned"] == ["compliance_markets.DE"]
    config = {**OWNERSHIP, "compliance_markets": {"US": "us_tax", "DE": "de_tax"}}
    assert api.ok(put(api, "/v1/ownership", config))["unassigned"] == []

    # bad bodies name the field and change nothing
    before = api.get("/v1/ownership").json()
    for body, param in (
        ({**OWNERSHIP, "owners": {"x": "y"}}, "owners"),
        ({**OWNERSHIP, "compliance_markets": {"ZZ": "x"}}, "compliance_markets"),
        ({**OWNERSHIP, "compliance_markets": {"germany": "x"}}, "compliance_markets"),
        (
            {**OWNERSHIP, "disputes": {"first_responder": "a", "authoritative_record": "sap"}},
            "disputes.authoritative_record",
        ),
        ({**OWNERSHIP, "payment_evidence": ""}, "payment_evidence"),
    ):
        response = put(api, "/v1/ownership", body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["param"] is not None and error["param"].startswith(param), (param, error)
    assert api.get("/v1/ownership").json() == before


def test_ownership_apply_from_a_toml_file(api: Api, db_url: str, tmp_path: Path) -> None:
    toml = tmp_path / "invoicetrail.toml"
    toml.write_text(
        """
[ownership]
invoice_state = "billing_ops"
payment_evidence = "ar_team"
journal_posting = "gl_accountant"
erp_export = "erp_admin"
exception_queue = "ar_lead"

[ownership.disputes]
first_responder = "payments_ops"
authoritative_record = "provider"

[ownership.compliance_markets]
US = "us_tax"
""",
        encoding="utf-8",
    )
    result = cli(db_url, "ownership", "apply", str(toml), "--account", api.account_id)
    assert result.exit_code == 0, result.output
    got = api.ok(api.get("/v1/ownership"))
    for area, owner in OWNERSHIP.items():
        assert got[area] == owner, area
    assert got["unassigned"] == []
    assert got["history"][-1]["actor"] == "cli"
    assert json.loads(result.stdout)["unassigned"] == []

    bad = tmp_path / "bad.toml"
    bad.write_text('[ownership.disputes]\nauthoritative_record = "sap"\n', encoding="utf-8")
    refused = cli(db_url, "ownership", "apply", str(bad), "--account", api.account_id)
    assert refused.exit_code == 2
    assert "authoritative_record" in refused.stderr
    assert api.ok(api.get("/v1/ownership")) == got


# --- 3. launch gates and KYB ----------------------------------------------------------------


def test_live_collection_waits_for_the_kyb_gate(api: Api) -> None:
    live = {"provider": "stripe", "secret": "whsec_live_secret", "livemode": True}
    refused = api.post("/v1/provider_endpoints", live)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "launch_gate_not_passed"
    assert error["gate"] == "kyb" and "kyb" in error["message"]
    assert api.ok(api.get("/v1/provider_endpoints"))["data"] == []

    test_mode = api.ok(api.post("/v1/provider_endpoints", {**live, "livemode": False}))
    assert test_mode["livemode"] is False
    simulated = api.post(
        "/v1/provider_endpoints", {"provider": "simulated", "livemode": True, "secret": SW_SECRET}
    )
    assert simulated.status_code == 400
    assert simulated.json()["error"]["param"] == "livemode"

    no_evidence = put(api, "/v1/launch_gates/kyb", {"status": "passed", "owner": "compliance"})
    assert no_evidence.status_code == 400
    error = no_evidence.json()["error"]
    assert (error["code"], error["param"]) == ("parameter_missing", "evidence_reference")
    gate = api.ok(api.get("/v1/launch_gates/kyb"))
    assert (gate["status"], gate["history"]) == ("pending", [])
    assert api.post("/v1/provider_endpoints", live).status_code == 409

    api.ok(
        put(
            api,
            "/v1/launch_gates/kyb",
            {"status": "passed", "owner": "compliance", "evidence_reference": "stripe-acct-v-1"},
        )
    )
    allowed = api.ok(api.post("/v1/provider_endpoints", live))
    assert allowed["livemode"] is True and allowed["provider"] == "stripe"


def test_gates_per_market_and_their_history(api: Api, client: TestClient) -> None:
    gates = {g["name"]: g for g in api.ok(api.get("/v1/launch_gates"))["data"]}
    assert {"kyb", "aml_screening", *US_TAX_GATES} <= set(gates)
    assert all(gates[name]["required"] for name in ("kyb", "aml_screening", *US_TAX_GATES))
    assert all(g["status"] == "pending" for g in gates.values())
    assert "fbar" not in gates

    de_id, de_key = create_account(client.app.state.invoicetrail, country="DE")  # type: ignore[attr-defined]
    de = Api(client=client, account_id=de_id, secret_key=de_key)
    de_gates = {g["name"] for g in de.ok(de.get("/v1/launch_gates"))["data"]}
    assert {"kyb", "aml_screening"} <= de_gates
    assert not de_gates & US_TAX_GATES

    # a foreign bank account next to a US entity brings the FBAR in
    api.ok(
        api.post(
            "/v1/legal_entities",
            {
                "name": "Trail GmbH",
                "country": "DE",
                "bank_account": {"iban": "DE89370400440532013000"},
            },
        )
    )
    names = [g["name"] for g in api.ok(api.get("/v1/launch_gates"))["data"]]
    assert "fbar" in names

    changes = [
        {"status": "pending", "owner": "us_tax", "note": "requested from payees"},
        {"status": "failed", "owner": "us_tax", "note": "two payees missing"},
        {"status": "passed", "owner": "us_tax", "evidence_reference": "dms-4711"},
    ]
    request_ids = []
    for change in changes:
        response = put(api, "/v1/launch_gates/tax_forms_w9_w8ben", change)
        api.ok(response)
        request_ids.append(response.headers["request-id"])
    gate = api.ok(api.get("/v1/launch_gates/tax_forms_w9_w8ben"))
    assert (gate["status"], gate["evidence_reference"], gate["required"]) == (
        "passed",
        "dms-4711",
        True,
    )
    assert [h["status"] for h in gate["history"]] == ["pending", "failed", "passed"]
    assert [h["request_id"] for h in gate["history"]] == request_ids
    assert gate["history"][1]["note"] == "two payees missing"


# --- 4. the go-live check -------------------------------------------------------------------


def test_golive_fails_on_each_missing_precondition_then_passes(api: Api, db_url: str) -> None:
    ready, checks = golive(api)
    assert not ready
    assert failing(api) == {
        "ownership",
        "provider_endpoint",
        "webhook_signature_verification",
        "posting_policy_and_chart",
        "launch_gates",
    }
    for area in [*ALL_AREAS, "compliance_markets.US"]:
        assert area in checks["ownership"]["detail"], area
    assert "/v1/provider_endpoints" in checks["provider_endpoint"]["detail"]
    assert "/v1/ledger_settings" in checks["posting_policy_and_chart"]["detail"]
    for gate in ("kyb", "aml_screening", *US_TAX_GATES):
        assert gate in checks["launch_gates"]["detail"], gate

    not_ready = cli(db_url, "golive-check", "--account", api.account_id)
    assert not_ready.exit_code == 1, not_ready.output
    for name in CHECKS:
        assert name in not_ready.stdout, name
    assert "FAIL" in not_ready.stdout and "NOT READY" in not_ready.stdout

    partial = {**OWNERSHIP, "compliance_markets": {}}
    api.ok(put(api, "/v1/ownership", partial))
    _ready, checks = golive(api)
    assert not checks["ownership"]["ok"]
    assert "compliance_markets.US" in checks["ownership"]["detail"]
    assert "payment_evidence" not in checks["ownership"]["detail"]
    api.ok(put(api, "/v1/ownership", OWNERSHIP))
    assert "ownership" not in failing(api)

    api.ok(
        api.post("/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": SW_SECRET})
    )
    assert failing(api) == {"posting_policy_and_chart", "launch_gates"}

    api.ok(api.post("/v1/ledger_settings", {"posting_policy": "accrual"}))
    assert failing(api) == {"launch_gates"}

    api.ok(put(api, "/v1/launch_gates/kyb", {"status": "passed", "evidence_reference": "v-1"}))
    _ready, checks = golive(api)
    assert "kyb" not in checks["launch_gates"]["detail"]
    assert "aml_screening" in checks["launch_gates"]["detail"]
    pass_required_gates(api)
    ready, checks = golive(api)
    assert ready, checks

    # a cleanly paid invoice keeps it ready
    clean = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{clean['id']}/pay", {"reference": "clean-1"}))
    ready, checks = golive(api)
    assert ready, checks
    assert "1 invoice(s)" in checks["paid_invoices_trace"]["detail"]

    as_json = cli(db_url, "golive-check", "--account", api.account_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    printed, answered = json.loads(as_json.stdout), api.ok(api.get("/v1/golive_check"))
    assert (printed["ready"], printed["checks"]) == (answered["ready"], answered["checks"])
    text_out = cli(db_url, "golive-check", "--account", api.account_id)
    assert text_out.exit_code == 0, text_out.output
    lines = text_out.stdout.splitlines()
    assert lines[-1] == "ready"
    for name in CHECKS:
        [line] = [row for row in lines if f" {name} " in row]
        assert line.startswith("ok"), line

    # a paid invoice with two payment references fails the trace check, naming it
    split = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{split['id']}/pay", {"reference": "part-a", "amount": 100}))
    api.ok(api.post(f"/v1/invoices/{split['id']}/pay", {"reference": "part-b"}))
    assert api.ok(api.get(f"/v1/invoices/{split['id']}"))["status"] == "paid"
    ready, checks = golive(api)
    assert not ready
    assert failing(api) == {"paid_invoices_trace"}
    detail = checks["paid_invoices_trace"]["detail"]
    assert split["id"] in detail and "2 payment reference(s)" in detail
    assert clean["id"] not in detail
    again = cli(db_url, "golive-check", "--account", api.account_id)
    assert again.exit_code == 1
    assert split["id"] in again.stdout


def test_golive_fails_when_the_erp_refuses_a_receipt_row(api: Api) -> None:
    make_ready(api)
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "wire-77"}))
    assert "paid_invoices_trace" not in failing(api)

    refused = refuse_receipt_rows(api, invoice["id"])
    _ready, checks = golive(api)
    assert failing(api) == {"paid_invoices_trace"}
    detail = checks["paid_invoices_trace"]["detail"]
    assert invoice["id"] in detail and "refused by the ERP" in detail

    sync_rows(api, refused)
    ready, checks = golive(api)
    assert ready, checks


def test_golive_fails_on_an_overdue_open_exception(clocked: Clocked) -> None:
    api, clock = clocked.api, clocked.clock
    provider = make_ready(api)
    item = unmatched_transfer(api, provider)
    assert golive(api)[0]  # raised, but not yet past due

    clock.advance(timedelta(hours=25))
    ready, checks = golive(api)
    assert not ready
    assert failing(api) == {"exceptions_past_due"}
    assert "1 open exception item(s) past due" in checks["exceptions_past_due"]["detail"]

    api.ok(api.post(f"/v1/exception_items/{item['id']}/resolve", {"note": "refunded sender"}))
    ready, checks = golive(api)
    assert ready, checks


# --- 5. the demo ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_demo_data_passes_the_golive_check(backend: str, tmp_path: Path) -> None:
    url = (
        prepare_sqlite_database(tmp_path)
        if backend == "sqlite"
        else prepare_postgres_database(PG_TEST_DB + "_demo")
    )
    demo = cli(url, "demo")
    assert demo.exit_code == 0, demo.output
    assert demo.stdout.strip().startswith("sk_")
    worker = cli(url, "worker", "--once")
    assert worker.exit_code == 0, worker.output
    check = cli(url, "golive-check")
    assert check.exit_code == 0, check.output
    lines = check.stdout.splitlines()
    assert lines[-1] == "ready"
    for name in CHECKS:
        assert any(line.startswith("ok") and f" {name} " in line for line in lines), name
    # the card payment the worker delivered is among the paid invoices that trace cleanly
    checks = {c["name"]: c for c in json.loads(cli(url, "golive-check", "--json").stdout)["checks"]}
    assert "each of the 2 invoice(s)" in checks["paid_invoices_trace"]["detail"]


# --- 6. the exceptions command ---------------------------------------------------------


def test_cli_works_the_queue_with_actor_cli(api: Api, other_api: Api, db_url: str) -> None:
    item = unmatched_transfer(api, Provider(api, "standard_webhooks", SW_SECRET))
    account = ("--account", api.account_id)

    listed = cli(db_url, "exceptions", "list", *account, "--json")
    assert listed.exit_code == 0, listed.output
    assert [i["id"] for i in json.loads(listed.stdout)] == [item["id"]]
    text_list = cli(db_url, "exceptions", "list", *account, "--status", "open")
    assert item["id"] in text_list.stdout and "unmatched_transfer" in text_list.stdout
    assert cli(db_url, "exceptions", "list", *account, "--kind", "export_failed").stdout == ""
    assert cli(db_url, "exceptions", "list", *account, "--owner", "treasury").stdout == ""

    assigned = cli(db_url, "exceptions", "assign", item["id"], "--owner", "treasury", *account)
    assert assigned.exit_code == 0, assigned.output
    by_owner = cli(db_url, "exceptions", "list", *account, "--owner", "treasury", "--json")
    assert [i["id"] for i in json.loads(by_owner.stdout)] == [item["id"]]

    no_note = cli(db_url, "exceptions", "resolve", item["id"], "--note", " ", *account)
    assert no_note.exit_code == 1
    assert "parameter_missing" in no_note.stderr
    resolved = cli(
        db_url, "exceptions", "resolve", item["id"], "--note", "applied to in_123", *account
    )
    assert resolved.exit_code == 0, resolved.output

    shown = cli(db_url, "exceptions", "show", item["id"], *account)
    assert shown.exit_code == 0, shown.output
    assert "assigned  by cli" in shown.stdout and "resolved  by cli" in shown.stdout
    history = item_of(api, item["id"])["history"]
    assert [(h["action"], h["actor"]) for h in history[1:]] == [
        ("assigned", "cli"),
        ("resolved", "cli"),
    ]
    assert history[1]["owner"] == "treasury" and history[2]["note"] == "applied to in_123"
    assert all(h["request_id"].startswith("req_") for h in history)
    assert history[1]["request_id"] != history[2]["request_id"]

    again = cli(db_url, "exceptions", "resolve", item["id"], "--note", "twice", *account)
    assert again.exit_code == 1
    assert "invalid_state_transition" in again.stderr
    foreign = cli(db_url, "exceptions", "show", item["id"], "--account", other_api.account_id)
    assert foreign.exit_code == 1 and foreign.stdout == ""
    assert item_of(api, item["id"])["history"] == history
