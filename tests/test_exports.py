"""ERP exports: every journal line becomes an export row per format; batches are idempotent
by their rows; acknowledgements make rows synced or failed; the files pass the real tools
(hledger, ledger-cli, bean-check) and match the golden files."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from conftest import IN_CI, Api, create_account
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import write_transaction
from invoicetrail.core.money import format_major
from invoicetrail.exports import service
from invoicetrail.exports.formats import FORMATS, AccountUse, ExportLine, FileFacts
from invoicetrail.exports.formats.rows import major_units, one_line
from test_payment_evidence import SW_SECRET, Provider, sw_event

FORMAT_NAMES = ("csv", "jsonl", "netsuite", "quickbooks", "xero", "hledger", "beancount")
GOLDEN_DIR = Path(__file__).parent / "golden" / "exports"


# --- the real tools --------------------------------------------------------------------------


def tool(name: str) -> str:
    """The tool's path; a missing tool skips outside CI and fails in CI."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    if IN_CI:
        pytest.fail(f"{name} is required in CI (.ci/run installs it) and is not installed")
    pytest.skip(f"{name} is not installed (CI not set)")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def check_ledger_text(path: Path) -> None:
    """hledger check (also strict: accounts and commodities declared), hledger and
    ledger-cli balances total 0 in every commodity."""
    hledger = tool("hledger")
    for args in (["check"], ["check", "-s"]):
        checked = run(hledger, "-f", str(path), *args)
        assert checked.returncode == 0, checked.stderr
    balance = run(hledger, "-f", str(path), "bal")
    assert balance.returncode == 0, balance.stderr
    assert balance.stdout.strip().splitlines()[-1].strip() == "0", balance.stdout
    ledger = tool("ledger")
    ledger_balance = run(ledger, "-f", str(path), "--pedantic", "bal")
    assert ledger_balance.returncode == 0, ledger_balance.stderr
    assert ledger_balance.stderr == ""
    lines = ledger_balance.stdout.strip().splitlines()
    assert not lines or lines[-1].strip() == "0", ledger_balance.stdout


def check_beancount(path: Path) -> None:
    checked = run(tool("bean-check"), str(path))
    assert checked.returncode == 0 and checked.stdout == "" and checked.stderr == "", (
        checked.stdout + checked.stderr
    )


# --- API helpers ---------------------------------------------------------------------------


def export(api: Api, format_name: str, period: str, *, key: str | None = None) -> dict[str, Any]:
    return api.ok(api.post("/v1/exports", {"format": format_name, "period": period}, key=key))


def file_bytes(api: Api, export_id: str) -> bytes:
    response = api.get(f"/v1/exports/{export_id}/file")
    assert response.status_code == 200, response.text
    assert response.headers["request-id"].startswith("req_")
    return response.content


def all_rows(api: Api, export_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = api.ok(api.get(f"/v1/exports/{export_id}/rows", params))
        rows += page["data"]
        if not page["has_more"]:
            return rows
        params["starting_after"] = page["data"][-1]["id"]


def journal(api: Api) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = api.ok(api.get("/v1/journal_entries", params))
        entries += page["data"]
        if not page["has_more"]:
            return list(reversed(entries))
        params["starting_after"] = page["data"][-1]["id"]


def the_period(api: Api) -> str:
    periods = {entry["period"] for entry in journal(api)}
    assert len(periods) == 1, periods
    return periods.pop()


def csv_records(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode())))


def pay(api: Api, invoice_id: str, reference: str, amount: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"reference": reference}
    if amount is not None:
        body["amount"] = amount
    return api.ok(api.post(f"/v1/invoices/{invoice_id}/pay", body))


def scenario(api: Api) -> dict[str, dict[str, Any]]:
    """Finalize, partial, full and over payment, void, write-off and a refund."""
    partial = api.open_invoice()
    pay(api, partial["id"], "part-1", 500)
    full = api.open_invoice()
    pay(api, full["id"], "full-1")
    over = api.open_invoice()
    pay(api, over["id"], "over-1", over["total"] + 250)
    voided = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{voided['id']}/void"))
    written = api.open_invoice()
    pay(api, written["id"], "wo-1", 100)
    api.ok(api.post(f"/v1/invoices/{written['id']}/mark_uncollectible"))
    refunded = api.open_invoice()
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    body = {"reference": "card-1", "amount": refunded["total"], "invoice": refunded["id"]}
    assert endpoint.send_sw(sw_event("payment.succeeded", method="card", **body)).status_code == 200
    assert endpoint.send_sw(sw_event("payment.refunded", method="card", **body)).status_code == 200
    return {
        "partial": partial,
        "full": full,
        "over": over,
        "voided": voided,
        "written": written,
        "refunded": refunded,
    }


# --- the API -------------------------------------------------------------------------------


def test_every_format_holds_every_journal_line_and_passes_the_tools(
    api: Api, tmp_path: Path
) -> None:
    invoices = scenario(api)
    period = the_period(api)
    entries = journal(api)
    line_count = sum(len(entry["lines"]) for entry in entries)
    kinds = {entry["business_key"].split(":")[0] for entry in entries}
    assert {"finalize", "receipt", "void", "write_off", "refund"} <= kinds

    for format_name in FORMAT_NAMES:
        batch = export(api, format_name, period)
        assert batch["id"].startswith("exp_") and batch["object"] == "export"
        assert (batch["format"], batch["period"], batch["status"]) == (
            format_name,
            period,
            "exported",
        )
        assert batch["row_count"] == line_count and isinstance(batch["row_count"], int)
        assert batch["row_statuses"] == {"exported": line_count, "synced": 0, "failed": 0}
        assert api.ok(api.get(f"/v1/exports/{batch['id']}")) == batch
        response = api.get(f"/v1/exports/{batch['id']}/file")
        assert response.headers["content-type"] == FORMATS[format_name].media_type
        content = response.content
        rows = all_rows(api, batch["id"])
        assert len(rows) == line_count
        assert {row["status"] for row in rows} == {"exported"}
        assert {row["journal_entry"] for row in rows} == {entry["id"] for entry in entries}
        assert all(row["id"].startswith("exr_") for row in rows)
        assert {row["object"] for row in rows} == {"export_row"}
        assert api.ok(api.get(f"/v1/exports/{batch['id']}/rows/{rows[-1]['id']}")) == rows[-1]
        text = content.decode()
        assert text.endswith("\n")
        for row in rows:
            assert row["id"] in text and row["journal_entry"] in text
        path = tmp_path / f"{format_name}.{FORMATS[format_name].extension}"
        path.write_bytes(content)
        if format_name == "csv":
            lines = text.split("\r\n")
            assert lines[-1] == ""
            assert len(lines[1:-1]) == batch["row_count"]
            assert all(line.strip() for line in lines[:-1])
            for line in lines[1:-1]:
                assert "exr_" in line and "je_" in line
            records = csv_records(content)
            assert len(records) == line_count
            void_rows = [
                r for r in records if r["business_key"] == f"void:{invoices['voided']['id']}"
            ]
            assert void_rows and all(r["reverses"].startswith("je_") for r in void_rows)
        elif format_name == "jsonl":
            objects = [json.loads(line) for line in text.splitlines()]
            assert len(objects) == line_count
            assert sum(o["debit"] for o in objects) == sum(o["credit"] for o in objects)
        elif format_name == "hledger":
            check_ledger_text(path)
        elif format_name == "beancount":
            check_beancount(path)


def test_entry_order_in_the_file_is_creation_order(api: Api) -> None:
    api.open_invoice()
    second = api.open_invoice()
    pay(api, second["id"], "p-1", 100)
    period = the_period(api)
    expected = [
        (entry["id"], position) for entry in journal(api) for position in range(len(entry["lines"]))
    ]
    for format_name in ("csv", "jsonl"):
        batch = export(api, format_name, period)
        content = file_bytes(api, batch["id"])
        if format_name == "csv":
            got = [(r["journal_entry"], int(r["position"])) for r in csv_records(content)]
        else:
            objects = [json.loads(line) for line in content.decode().splitlines()]
            got = [(o["journal_entry"], o["position"]) for o in objects]
        assert got == expected


def test_same_rows_same_batch_and_same_bytes_whatever_the_key(api: Api) -> None:
    invoice = api.open_invoice()
    pay(api, invoice["id"], "p-1", 300)
    period = the_period(api)
    for format_name in FORMAT_NAMES:
        first = export(api, format_name, period, key=f"first-{format_name}")
        first_bytes = file_bytes(api, first["id"])
        again = export(api, format_name, period, key=f"second-{format_name}")
        assert again["id"] == first["id"]
        assert file_bytes(api, again["id"]) == first_bytes
        replay = api.post(
            "/v1/exports", {"format": format_name, "period": period}, key=f"first-{format_name}"
        )
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.json()["id"] == first["id"]
    listed = api.ok(api.get("/v1/exports", {"limit": 100}))["data"]
    assert len(listed) == len(FORMAT_NAMES)
    assert [b["format"] for b in api.ok(api.get("/v1/exports", {"format": "xero"}))["data"]] == [
        "xero"
    ]

    # A new entry: a new batch with the unanswered rows and the new ones.
    csv_first = export(api, "csv", period)
    pay(api, invoice["id"], "p-2", 200)
    grown = export(api, "csv", period)
    assert grown["id"] != csv_first["id"]
    assert grown["row_count"] == csv_first["row_count"] + 2
    assert {r["id"] for r in all_rows(api, csv_first["id"])} < {
        r["id"] for r in all_rows(api, grown["id"])
    }


def test_acknowledgements_and_reexport_of_what_is_not_synced(api: Api, other_api: Api) -> None:
    invoice = api.open_invoice()
    pay(api, invoice["id"], "p-1", 400)
    period = the_period(api)
    batch = export(api, "csv", period)
    rows = list(reversed(all_rows(api, batch["id"])))  # file order
    assert len(rows) == 5
    synced, failed, untouched = rows[:2], rows[2:3], rows[3:]
    answer = api.ok(
        api.post(
            f"/v1/exports/{batch['id']}/acknowledge",
            {
                "rows": [{"id": r["id"], "erp_record_id": f"GL-{i}"} for i, r in enumerate(synced)]
                + [{"id": failed[0]["id"], "error": "Account 'Income:Revenue' does not exist"}]
            },
        )
    )
    assert answer["id"] == batch["id"]
    assert answer["row_statuses"] == {"exported": 2, "synced": 2, "failed": 1}
    assert answer["status"] == "exported"
    row = api.ok(api.get(f"/v1/exports/{batch['id']}/rows/{synced[0]['id']}"))
    assert (row["status"], row["erp_record_id"], row["error"]) == ("synced", "GL-0", None)
    assert row["acknowledged_at"] is not None
    row = api.ok(api.get(f"/v1/exports/{batch['id']}/rows/{failed[0]['id']}"))
    assert row["status"] == "failed" and "does not exist" in row["error"]
    failed_only = api.ok(api.get(f"/v1/exports/{batch['id']}/rows", {"status": "failed"}))
    assert [r["id"] for r in failed_only["data"]] == [failed[0]["id"]]
    waiting = api.ok(api.get(f"/v1/exports/{batch['id']}/rows", {"status": "exported"}))
    assert {r["id"] for r in waiting["data"]} == {r["id"] for r in untouched}

    # Re-export: the failed and unanswered rows, never the synced ones.
    again = export(api, "csv", period)
    assert again["id"] != batch["id"]
    assert {r["id"] for r in all_rows(api, again["id"])} == {r["id"] for r in failed + untouched}
    assert again["row_statuses"] == {"exported": 2, "synced": 0, "failed": 1}
    content = file_bytes(api, again["id"]).decode()
    assert all(r["id"] not in content for r in synced)
    assert export(api, "csv", period)["id"] == again["id"]

    # Acknowledging through the newer batch moves the older batch's counters too.
    api.ok(
        api.post(
            f"/v1/exports/{again['id']}/acknowledge",
            {
                "rows": [
                    {"id": r["id"], "erp_record_id": f"GL-x{i}"} for i, r in enumerate(untouched)
                ]
            },
        )
    )
    assert api.ok(api.get(f"/v1/exports/{batch['id']}"))["row_statuses"] == {
        "exported": 0,
        "synced": 4,
        "failed": 1,
    }
    assert api.ok(api.get(f"/v1/exports/{batch['id']}"))["status"] == "failed"

    # Refusals: synced + error → 409; same record id again is a no-op; another id → 409.
    refused = api.post(
        f"/v1/exports/{batch['id']}/acknowledge",
        {"rows": [{"id": synced[0]["id"], "error": "late error"}]},
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "invalid_state_transition"
    assert "synced" in refused.json()["error"]["message"]
    same = api.post(
        f"/v1/exports/{batch['id']}/acknowledge",
        {"rows": [{"id": synced[0]["id"], "erp_record_id": "GL-0"}]},
    )
    assert same.status_code == 200
    other_record = api.post(
        f"/v1/exports/{batch['id']}/acknowledge",
        {"rows": [{"id": synced[0]["id"], "erp_record_id": "GL-999"}]},
    )
    assert other_record.status_code == 409
    assert other_record.json()["error"]["param"] == "rows[0].erp_record_id"

    # A row of another batch (same account) or another account → 404 naming rows[i].id.
    jsonl_batch = export(api, "jsonl", period)
    jsonl_row = all_rows(api, jsonl_batch["id"])[0]
    missing = api.post(
        f"/v1/exports/{batch['id']}/acknowledge",
        {
            "rows": [
                {"id": failed[0]["id"], "erp_record_id": "x"},
                {"id": jsonl_row["id"], "erp_record_id": "y"},
            ]
        },
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "rows[1].id"
    other_invoice = other_api.open_invoice()
    other_batch = export(other_api, "csv", other_invoice["finalized_at"][:7])
    assert other_api.get(f"/v1/exports/{batch['id']}").status_code == 404
    assert other_api.get(f"/v1/exports/{batch['id']}/file").status_code == 404
    assert other_api.get(f"/v1/exports/{batch['id']}/rows").status_code == 404
    other_row = all_rows(other_api, other_batch["id"])[0]
    foreign = api.post(
        f"/v1/exports/{batch['id']}/acknowledge",
        {"rows": [{"id": other_row["id"], "erp_record_id": "z"}]},
    )
    assert foreign.status_code == 404 and foreign.json()["error"]["param"] == "rows[0].id"
    assert api.get(f"/v1/exports/{batch['id']}/rows/{other_row['id']}").status_code == 404

    # Bad bodies name the field.
    for body, param in (
        ({"rows": [{"id": failed[0]["id"]}]}, "rows[0]"),
        ({"rows": [{"id": failed[0]["id"], "erp_record_id": "a", "error": "b"}]}, "rows[0]"),
        ({"rows": []}, "rows"),
        ({"rows": [{"id": failed[0]["id"], "erp_record_id": ""}]}, "rows[0].erp_record_id"),
        (
            {
                "rows": [
                    {"id": failed[0]["id"], "error": "x"},
                    {"id": failed[0]["id"], "error": "y"},
                ]
            },
            "rows[1].id",
        ),
    ):
        bad = api.post(f"/v1/exports/{batch['id']}/acknowledge", body)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json()["error"]["param"] == param, (body, bad.text)


def test_a_failed_row_raises_export_failed_and_a_later_sync_resolves_it(api: Api) -> None:
    invoice = api.open_invoice()
    period = the_period(api)
    batch = export(api, "csv", period)
    row = all_rows(api, batch["id"])[0]
    for attempt in ("first refusal", "second refusal"):
        api.ok(
            api.post(
                f"/v1/exports/{batch['id']}/acknowledge",
                {"rows": [{"id": row["id"], "error": attempt}]},
            )
        )
    [item] = api.ok(api.get("/v1/exception_items", {"kind": "export_failed"}))["data"]
    assert item["status"] == "open"
    assert item["refs"]["export_row"] == row["id"]
    assert item["refs"]["journal_entry"] == row["journal_entry"]
    assert item["refs"]["invoice"] == invoice["id"]
    assert [h["action"] for h in item["history"]] == ["created", "updated"]

    again = export(api, "csv", period)
    assert row["id"] in {r["id"] for r in all_rows(api, again["id"])}
    api.ok(
        api.post(
            f"/v1/exports/{again['id']}/acknowledge",
            {"rows": [{"id": row["id"], "erp_record_id": "JE-42"}]},
        )
    )
    resolved = api.ok(api.get(f"/v1/exception_items/{item['id']}"))
    assert resolved["status"] == "resolved"
    assert resolved["history"][-1]["action"] == "resolved"


def test_journal_formats_answer_whole_entries_and_voids_reach_the_erp(
    api: Api, tmp_path: Path
) -> None:
    invoice = api.open_invoice()
    pay(api, invoice["id"], "p-1", 100)
    period = the_period(api)
    batch = export(api, "hledger", period)
    rows = all_rows(api, batch["id"])
    by_entry: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_entry[row["journal_entry"]].append(row)
    finalize_rows, receipt_rows = (by_entry[e["id"]] for e in journal(api))

    mixed = api.post(
        f"/v1/exports/{batch['id']}/acknowledge",
        {
            "rows": [
                {"id": finalize_rows[0]["id"], "erp_record_id": "tx-1"},
                {"id": finalize_rows[1]["id"], "error": "nope"},
            ]
        },
    )
    assert mixed.status_code == 400 and mixed.json()["error"]["param"] == "rows[1]"

    # One row's answer is its entry's answer: the finalize entry is synced whole.
    answered = api.ok(
        api.post(
            f"/v1/exports/{batch['id']}/acknowledge",
            {"rows": [{"id": finalize_rows[0]["id"], "erp_record_id": "tx-1"}]},
        )
    )
    assert answered["row_statuses"]["synced"] == len(finalize_rows)
    api.ok(
        api.post(
            f"/v1/exports/{batch['id']}/acknowledge",
            {"rows": [{"id": receipt_rows[0]["id"], "error": "period locked"}]},
        )
    )
    items = api.ok(api.get("/v1/exception_items", {"kind": "export_failed"}))["data"]
    assert {i["refs"]["export_row"] for i in items} == {r["id"] for r in receipt_rows}

    # The void posts later: the re-export holds the failed receipt and the reversal, both
    # whole, and the file still balances.
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/void"))
    again = export(api, "hledger", period)
    void_entry = journal(api)[-1]
    assert void_entry["business_key"] == f"void:{invoice['id']}"
    assert {r["journal_entry"] for r in all_rows(api, again["id"])} == {
        receipt_rows[0]["journal_entry"],
        void_entry["id"],
    }
    path = tmp_path / "again.journal"
    path.write_bytes(file_bytes(api, again["id"]))
    check_ledger_text(path)
    assert void_entry["id"] in path.read_text()

    # Everything synced: the next batch is empty, and asking again returns that batch.
    api.ok(
        api.post(
            f"/v1/exports/{again['id']}/acknowledge",
            {
                "rows": [
                    {"id": r["id"], "erp_record_id": "tx-2"} for r in all_rows(api, again["id"])
                ]
            },
        )
    )
    empty = export(api, "hledger", period)
    assert (empty["row_count"], empty["status"]) == (0, "synced")
    assert export(api, "hledger", period)["id"] == empty["id"]
    path.write_bytes(file_bytes(api, empty["id"]))
    check_ledger_text(path)


def test_concurrent_builds_give_one_batch(api: Api) -> None:
    """Builds of one account and format take turns: racing requests get the same batch."""
    invoice = api.open_invoice()
    pay(api, invoice["id"], "p-1", 100)
    period = the_period(api)
    state = api.client.app.state.invoicetrail  # type: ignore[attr-defined]
    barrier = threading.Barrier(4)
    found: list[str] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            barrier.wait()
            with write_transaction(state.sessions) as session:
                ctx = Ctx(
                    session=session,
                    account_id=api.account_id,
                    request_id=f"req_{uuid.uuid4().hex}",
                    now=datetime.now(UTC),
                    settings=state.settings,
                )
                batch_id = service.create(ctx, "xero", period).id
                session.commit()
            found.append(batch_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(found) == 4 and len(set(found)) == 1, found
    listed = api.ok(api.get("/v1/exports", {"format": "xero"}))["data"]
    assert [b["id"] for b in listed] == found[:1]


def test_an_abandoned_download_stops_reading(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(4):
        api.open_invoice()
    period = the_period(api)
    batch = export(api, "beancount", period)
    whole = file_bytes(api, batch["id"])
    monkeypatch.setattr(service, "STREAM_BATCH_ROWS", 1)
    monkeypatch.setattr(service, "FILE_CHUNK_CHARACTERS", 1)
    state = api.client.app.state.invoicetrail  # type: ignore[attr-defined]
    assert b"".join(service.file_chunks(state.sessions, api.account_id, batch["id"])) == whole
    chunks = service.file_chunks(state.sessions, api.account_id, batch["id"])
    first = next(chunks)
    assert whole.startswith(first) and len(first) < len(whole)
    chunks.close()
    assert not [t for t in threading.enumerate() if t.name == "export-read-ahead"]


def test_bad_requests_name_the_field(api: Api) -> None:
    for body, param in (
        ({"format": "sap", "period": "2026-11"}, "format"),
        ({"format": "csv", "period": "2026-13"}, "period"),
        ({"format": "csv"}, "period"),
        ({"format": "csv", "period": "2026-11", "extra": 1}, "extra"),
    ):
        response = api.post("/v1/exports", body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    assert api.get("/v1/exports/exp_nope").status_code == 404
    assert api.get("/v1/exports/exp_nope/file").status_code == 404
    assert api.get("/v1/exports", {"format": "sap"}).status_code == 400
    assert api.get("/v1/exports", {"period": "11-2026"}).status_code == 400
    empty = export(api, "beancount", "1999-01")
    assert (empty["row_count"], empty["totals"]) == (0, [])


# --- golden files --------------------------------------------------------------------------

LETTERS = {"csv": "C", "jsonl": "J", "netsuite": "N", "quickbooks": "Q", "xero": "X"}
LETTERS |= {"hledger": "H", "beancount": "B"}


def golden_lines(format_name: str) -> list[ExportLine]:
    """A fixed month: three currencies (EUR, JPY, KWD), every kind of entry, a late item
    dated in the month before, and text that needs escaping in every format."""
    letter = LETTERS[format_name]
    specs: list[tuple[str, date, str, str, str, list[tuple[str, int, int]], dict[str, str]]] = [
        (
            "finalize:in_01JGOLD0000000000000000001",
            date(2026, 11, 2),
            'Invoice INV-2026-000001 for "Acme; Ltd", Köln',
            "eur",
            "",
            [
                ("Assets:Receivable", 163293, 0),
                ("Income:Revenue", 0, 140000),
                ("Liabilities:Tax:Payable", 0, 23293),
            ],
            {
                "invoice_id": "in_01JGOLD0000000000000000001",
                "customer_id": "cus_01JGOLD000000000000000001",
            },
        ),
        (
            "receipt:in_01JGOLD0000000000000000001:wire-77",
            date(2026, 11, 5),
            "Payment wire-77 for invoice INV-2026-000001",
            "eur",
            "",
            [("Assets:Clearing:Manual", 100000, 0), ("Assets:Receivable", 0, 100000)],
            {
                "invoice_id": "in_01JGOLD0000000000000000001",
                "payment_id": "pay_01JGOLD00000000000000001",
                "customer_id": "cus_01JGOLD000000000000000001",
            },
        ),
        (
            "receipt:in_01JGOLD0000000000000000001:card,9",
            date(2026, 11, 6),
            "Payment card,9 for invoice INV-2026-000001 (overpaid)",
            "eur",
            "",
            [
                ("Assets:Clearing:Stripe", 70000, 0),
                ("Assets:Receivable", 0, 63293),
                ("Liabilities:CustomerCredit", 0, 6707),
            ],
            {
                "invoice_id": "in_01JGOLD0000000000000000001",
                "payment_id": "pay_01JGOLD00000000000000002",
                "customer_id": "cus_01JGOLD000000000000000001",
            },
        ),
        (
            "finalize:in_01JGOLD0000000000000000002",
            date(2026, 11, 7),
            "Invoice INV-2026-000002",
            "jpy",
            "",
            [
                ("Assets:Receivable", 12000, 0),
                ("Income:Revenue", 0, 10910),
                ("Liabilities:Tax:Payable", 0, 1090),
            ],
            {
                "invoice_id": "in_01JGOLD0000000000000000002",
                "customer_id": "cus_01JGOLD000000000000000002",
            },
        ),
        (
            "void:in_01JGOLD0000000000000000002",
            date(2026, 11, 9),
            "Void of invoice INV-2026-000002",
            "jpy",
            "je_01JGOLD0000000000000000004",
            [
                ("Assets:Receivable", 0, 12000),
                ("Income:Revenue", 10910, 0),
                ("Liabilities:Tax:Payable", 1090, 0),
            ],
            {
                "invoice_id": "in_01JGOLD0000000000000000002",
                "customer_id": "cus_01JGOLD000000000000000002",
            },
        ),
        (
            "finalize:in_01JGOLD0000000000000000003",
            date(2026, 11, 10),
            "Invoice INV-2026-000003",
            "kwd",
            "",
            [
                ("Assets:Receivable", 1250, 0),
                ("Income:Revenue", 0, 1000),
                ("Liabilities:Tax:Payable", 0, 250),
            ],
            {
                "invoice_id": "in_01JGOLD0000000000000000003",
                "customer_id": "cus_01JGOLD000000000000000003",
            },
        ),
        (
            "write_off:in_01JGOLD0000000000000000003",
            date(2026, 11, 30),
            "Write-off of invoice INV-2026-000003",
            "kwd",
            "",
            [("Expenses:BadDebt", 1250, 0), ("Assets:Receivable", 0, 1250)],
            {
                "invoice_id": "in_01JGOLD0000000000000000003",
                "customer_id": "cus_01JGOLD000000000000000003",
            },
        ),
        (
            "refund:in_01JGOLD0000000000000000001:card,9",
            date(2026, 11, 20),
            "Refund card,9 of invoice INV-2026-000001",
            "eur",
            "",
            [("Income:Refunds", 70000, 0), ("Assets:Clearing:Stripe", 0, 70000)],
            {
                "invoice_id": "in_01JGOLD0000000000000000001",
                "payment_id": "pay_01JGOLD00000000000000002",
                "customer_id": "cus_01JGOLD000000000000000001",
            },
        ),
        (
            "receipt:in_01JGOLD0000000000000000005:late|1",
            date(2026, 10, 31),
            "Late payment\nposted after the October close \\ ok",
            "eur",
            "",
            [("Assets:Clearing:StandardWebhooks", 1000, 0), ("Assets:Receivable", 0, 1000)],
            {"invoice_id": "in_01JGOLD0000000000000000005"},
        ),
        (
            "unapplied:pay_01JGOLD00000000000000003",
            date(2026, 11, 30),
            "Unmatched transfer XK7Q-93TZ-4",
            "eur",
            "",
            [("Assets:Clearing:StandardWebhooks", 5000, 0), ("Liabilities:UnappliedCash", 0, 5000)],
            {"payment_id": "pay_01JGOLD00000000000000003"},
        ),
    ]
    out: list[ExportLine] = []
    for number, (key, day, description, currency, reverses, lines, refs) in enumerate(specs, 1):
        entry_id = f"je_01JGOLD{number:019d}"
        for position, (account, debit, credit) in enumerate(lines):
            line_ulid = f"01JGOLD{number:015d}{position:04d}"
            out.append(
                ExportLine(
                    row_id=f"exr_{line_ulid}{letter}",
                    entry_id=entry_id,
                    line_id=f"jl_{line_ulid}",
                    position=position,
                    entry_date=day,
                    period="2026-11",
                    business_key=key,
                    description=description,
                    account=account,
                    debit_minor=debit,
                    credit_minor=credit,
                    currency=currency,
                    reverses=reverses or None,
                    invoice_id=refs.get("invoice_id"),
                    payment_id=refs.get("payment_id"),
                    customer_id=refs.get("customer_id"),
                )
            )
    return out


def golden_facts(lines: list[ExportLine]) -> FileFacts:
    first: dict[str, date] = {}
    for line in lines:
        first[line.account] = min(first.get(line.account, line.entry_date), line.entry_date)
    return FileFacts(
        accounts=tuple(AccountUse(a, first[a]) for a in sorted(first)),
        currencies=tuple(sorted({line.currency for line in lines})),
    )


def render(format_name: str) -> bytes:
    lines = golden_lines(format_name)
    spec = FORMATS[format_name]
    return "".join(spec.write(golden_facts(lines), iter(lines))).encode()


@pytest.mark.parametrize("format_name", FORMAT_NAMES)
def test_golden_files(format_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    path = GOLDEN_DIR / f"{format_name}.{FORMATS[format_name].extension}"
    produced = render(format_name)
    assert render(format_name) == produced
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(produced)
    assert path.exists(), f"{path} is missing: run pytest --update-golden and review the diff"
    assert produced == path.read_bytes(), f"{path} differs: review, then pytest --update-golden"
    text = produced.decode()
    rows = golden_lines(format_name)
    if format_name in ("csv", "netsuite", "quickbooks", "xero"):
        records = list(csv.reader(io.StringIO(text)))
        assert len(records) == len(rows) + 1
        assert text.count("\r\n") == len(rows) + 1
    if format_name in ("csv", "jsonl", "hledger", "beancount"):
        for row in rows:
            assert row.row_id in text and row.entry_id in text
    if format_name == "hledger":
        check_ledger_text(path)
    if format_name == "beancount":
        check_beancount(path)


@given(
    amount_minor=st.integers(min_value=-(10**15), max_value=10**15),
    currency=st.sampled_from(["eur", "jpy", "kwd", "usd", "bhd", "clf", "isk"]),
)
def test_file_amounts_match_core_money(amount_minor: int, currency: str) -> None:
    assert major_units(amount_minor, currency) == format_major(amount_minor, currency)


@given(text=st.text(max_size=40))
def test_one_line_leaves_no_line_break(text: str) -> None:
    cleaned = one_line(text)
    assert cleaned == one_line(cleaned)
    assert len(cleaned.splitlines()) <= 1 and "\r" not in cleaned and "\n" not in cleaned


# --- a generated history -------------------------------------------------------------------

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "create",
                "create",
                "pay_partial",
                "pay_full",
                "pay_over",
                "void",
                "uncollectible",
                "provider_pay",
                "refund",
            ]
        ),
        st.integers(min_value=0, max_value=1000),
    ),
    min_size=15,
    max_size=40,
)
CURRENCIES = ("eur", "jpy", "kwd")


class History:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.invoices: list[str] = []
        self.provider_payments: list[dict[str, Any]] = []
        self.endpoint = Provider(api, "standard_webhooks", SW_SECRET)
        self.customer = api.customer()["id"]

    def invoice(self, choice: int) -> dict[str, Any] | None:
        if not self.invoices:
            return None
        invoice_id = self.invoices[choice % len(self.invoices)]
        return self.api.ok(self.api.get(f"/v1/invoices/{invoice_id}"))

    def apply(self, kind: str, choice: int) -> None:
        api = self.api
        if kind == "create":
            currency = CURRENCIES[choice % len(CURRENCIES)]
            draft = api.draft(
                self.customer,
                currency=currency,
                lines=[
                    {
                        "description": "Work",
                        "quantity": str(1 + choice % 3),
                        "unit_amount": 100 + choice,
                        "tax_rate": ("19", "7", "0")[choice % 3],
                    }
                ],
            )
            api.ok(api.post(f"/v1/invoices/{draft['id']}/finalize"))
            self.invoices.append(draft["id"])
            return
        invoice = self.invoice(choice)
        if invoice is None:
            return
        path = f"/v1/invoices/{invoice['id']}"
        remaining = invoice["amount_remaining"]
        if kind in ("pay_partial", "pay_full", "pay_over"):
            amount = {
                "pay_partial": max(1, remaining // 2),
                "pay_full": max(1, remaining),
                "pay_over": remaining + 1 + choice,
            }[kind]
            response = api.post(
                f"{path}/pay", {"reference": f"ref-{uuid.uuid4().hex[:8]}", "amount": amount}
            )
        elif kind == "void":
            response = api.post(f"{path}/void")
        elif kind == "uncollectible":
            response = api.post(f"{path}/mark_uncollectible")
        elif kind == "provider_pay":
            if invoice["status"] != "open":
                return
            body = {
                "reference": f"card-{uuid.uuid4().hex[:8]}",
                "amount": remaining,
                "invoice": invoice["id"],
                "currency": invoice["currency"],
            }
            response = self.endpoint.send_sw(sw_event("payment.succeeded", method="card", **body))
            self.provider_payments.append(body)
        else:  # refund
            if not self.provider_payments:
                return
            body = self.provider_payments.pop(choice % len(self.provider_payments))
            response = self.endpoint.send_sw(sw_event("payment.refunded", method="card", **body))
        assert response.status_code in (200, 409), (kind, response.text)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=OPERATIONS)
def test_generated_history_exports_that_the_tools_accept(
    client: TestClient, tmp_path: Path, operations: list[tuple[str, int]]
) -> None:
    account_id, secret_key = create_account(client.app.state.invoicetrail)  # type: ignore[attr-defined]
    api = Api(client=client, account_id=account_id, secret_key=secret_key)
    history = History(api)
    history.apply("create", 0)
    for kind, choice in operations:
        history.apply(kind, choice)
    periods = sorted({entry["period"] for entry in journal(api)})
    for period in periods:
        trial = api.ok(api.get("/v1/trial_balance", {"period": period}))
        per_currency: dict[str, int] = defaultdict(int)
        for row in trial["rows"]:
            per_currency[row["currency"]] += row["debit"] - row["credit"]
        assert set(per_currency.values()) <= {0}, per_currency

        folder = tmp_path / uuid.uuid4().hex
        folder.mkdir()
        ledger_file = folder / "history.journal"
        ledger_file.write_bytes(file_bytes(api, export(api, "hledger", period)["id"]))
        check_ledger_text(ledger_file)
        beancount_file = folder / "history.beancount"
        beancount_file.write_bytes(file_bytes(api, export(api, "beancount", period)["id"]))
        check_beancount(beancount_file)

        records = csv_records(file_bytes(api, export(api, "csv", period)["id"]))
        receipts: dict[str, set[str]] = defaultdict(set)
        for record in records:
            if record["business_key"].startswith("receipt:"):
                receipts[record["business_key"]].add(record["journal_entry"])
        assert all(len(entries) == 1 for entries in receipts.values()), receipts
        payments = api.ok(api.get("/v1/payments", {"limit": 100}))["data"]
        for payment in payments:
            if payment["status"] != "succeeded" or payment["invoice"] is None:
                continue
            invoice = api.ok(api.get(f"/v1/invoices/{payment['invoice']}"))
            if invoice["status"] != "paid":
                continue
            key = f"receipt:{payment['invoice']}:{payment['reference']}"
            assert len(receipts[key]) == 1, (key, receipts.get(key))
