"""Reconciliation: the three-way match of invoice, payment evidence and journal entry, plus
export status. Each fault is planted in the real database (raw SQL, as a bug would leave it)
or made through the API, and must come out as exactly one exception item of the right kind
with the right refs; a clean chain yields nothing; re-runs never duplicate; a fixed cause
resolves its item and a returning one reopens it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, text, update
from starlette.testclient import TestClient

from conftest import Api, create_account, make_settings
from invoicetrail.api import create_app
from invoicetrail.core.clock import ManualClock
from invoicetrail.ledger.models import JournalEntry, JournalLine
from invoicetrail.payments.models import Payment
from invoicetrail.worker import RECONCILE_ACCOUNTS_PER_PASS, Worker
from test_exports import all_rows, the_period
from test_payment_evidence import STRIPE_SECRET, SW_SECRET, Provider, pi_event, sw_event

REF_NAMES = ("invoice", "payment", "provider_event", "journal_entry", "export_row")
# A Friday: the ACH window has to step over a weekend.
FRIDAY = datetime(2026, 11, 6, 10, 0, tzinfo=UTC)
PERIOD = "2026-11"
MINUTE = timedelta(minutes=1)

PAYMENTS = Payment.__table__
ENTRIES = JournalEntry.__table__
LINES = JournalLine.__table__


# --- helpers ---------------------------------------------------------------------------------


def engine(api: Api) -> Engine:
    found: Engine = api.client.app.state.invoicetrail.engine  # type: ignore[attr-defined]
    return found


def execute(api: Api, statement: Any) -> None:
    """A change made behind the application's back, the way a bug or a hand edit would."""
    with engine(api).begin() as connection:
        connection.execute(statement)


@contextmanager
def timed_api(db_url: str, **overrides: Any) -> Iterator[tuple[Api, ManualClock]]:
    """An account on an app whose clock only moves when the test says."""
    clock = ManualClock(FRIDAY)
    app = create_app(make_settings(db_url, **overrides), clock)
    with TestClient(app) as client:
        account_id, key = create_account(app.state.invoicetrail)
        yield Api(client=client, account_id=account_id, secret_key=key), clock


@pytest.fixture
def timed(db_url: str) -> Iterator[tuple[Api, ManualClock]]:
    with timed_api(db_url) as made:
        yield made


def reconcile(api: Api, as_of: str | None = None) -> dict[str, Any]:
    response = api.post("/v1/reconciliation_runs", {} if as_of is None else {"as_of": as_of})
    run = api.ok(response)
    assert run["id"].startswith("rec_") and run["object"] == "reconciliation_run"
    assert run["status"] == "completed"
    assert run["request_id"] == response.headers["Request-Id"]
    return run


def all_items(api: Api) -> list[dict[str, Any]]:
    """Every exception item of the account, whatever its status."""
    page = api.ok(api.get("/v1/exception_items", {"limit": 100}))
    assert not page["has_more"]
    items: list[dict[str, Any]] = page["data"]
    return items


def item_of(api: Api, item_id: str) -> dict[str, Any]:
    return api.ok(api.get(f"/v1/exception_items/{item_id}"))


def single_item(api: Api, kind: str, **refs: str | None) -> dict[str, Any]:
    """The account holds exactly one item, open, of this kind, about exactly these objects."""
    found = all_items(api)
    assert [(i["kind"], i["status"]) for i in found] == [(kind, "open")], found
    [item] = found
    assert {name: item["refs"].get(name) for name in REF_NAMES} == {
        name: refs.get(name) for name in REF_NAMES
    }
    assert item["next_action"].strip()
    assert item["owner"]
    return item


def assert_clean(run: dict[str, Any], matched: int) -> None:
    assert run["counts"] == {"matched": matched}, run
    assert run["items"]["created"] == 0, run


def findings(api: Api, run_id: str) -> list[dict[str, Any]]:
    page = api.ok(api.get(f"/v1/reconciliation_runs/{run_id}/findings"))
    found: list[dict[str, Any]] = page["data"]
    return found


def payment_of(api: Api, invoice_id: str) -> dict[str, Any]:
    [payment] = api.ok(api.get("/v1/payments", {"invoice": invoice_id}))["data"]
    return payment


def entry_of(api: Api, invoice_id: str, kind: str) -> dict[str, Any]:
    listed = api.ok(api.get("/v1/journal_entries", {"invoice": invoice_id, "limit": 100}))["data"]
    [entry] = [e for e in listed if e["business_key"].split(":")[0] == kind]
    return entry


def paid_invoice(api: Api, reference: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An invoice paid out of band: (invoice, its payment, its receipt entry)."""
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": reference}))
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["status"] == "paid"
    payment = payment_of(api, invoice["id"])
    receipt = entry_of(api, invoice["id"], "receipt")
    assert receipt["payment"] == payment["id"]
    return invoice, payment, receipt


def export_csv(api: Api, period: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    batch = api.ok(api.post("/v1/exports", {"format": "csv", "period": period}))
    return batch, all_rows(api, batch["id"])


def acknowledge(api: Api, batch_id: str, answers: list[dict[str, Any]]) -> None:
    api.ok(api.post(f"/v1/exports/{batch_id}/acknowledge", {"rows": answers}))


def sync_all(api: Api, batch_id: str, rows: list[dict[str, Any]]) -> None:
    acknowledge(api, batch_id, [{"id": r["id"], "erp_record_id": f"GL-{r['id']}"} for r in rows])


def actions(item: dict[str, Any]) -> list[str]:
    return [entry["action"] for entry in item["history"]]


def assert_lifecycle(
    api: Api, item: dict[str, Any], fix: Callable[[], None], rebreak: Callable[[], None]
) -> None:
    """Re-running adds history, never an item; fixing resolves; breaking again reopens."""
    again = reconcile(api)
    assert again["items"] == {"created": 0, "updated": 1, "resolved": 0}
    [same] = all_items(api)
    assert (same["id"], same["status"]) == (item["id"], "open")
    assert actions(same) == ["created", "updated"]
    assert same["history"][-1]["request_id"] == again["request_id"]

    fix()
    fixed = reconcile(api)
    assert fixed["items"] == {"created": 0, "updated": 0, "resolved": 1}
    assert fixed["counts"] == {"matched": fixed["invoices_checked"]}
    resolved = item_of(api, item["id"])
    assert resolved["status"] == "resolved"
    assert actions(resolved) == ["created", "updated", "resolved"]
    assert resolved["history"][-1]["request_id"] == fixed["request_id"]
    assert resolved["history"][-1]["note"]

    quiet = reconcile(api)  # nothing to resolve twice
    assert quiet["items"] == {"created": 0, "updated": 0, "resolved": 0}

    rebreak()
    broken = reconcile(api)
    assert broken["items"] == {"created": 0, "updated": 1, "resolved": 0}
    [reopened] = all_items(api)
    assert (reopened["id"], reopened["status"]) == (item["id"], "open")
    assert actions(reopened) == ["created", "updated", "resolved", "reopened"]
    assert reopened["history"][-1]["request_id"] == broken["request_id"]


# --- a clean chain ---------------------------------------------------------------------------


def test_a_clean_chain_yields_no_findings(timed: tuple[Api, ManualClock]) -> None:
    api, clock = timed
    stripe = Provider(api, "stripe", STRIPE_SECRET)
    sw = Provider(api, "standard_webhooks", SW_SECRET)

    card = api.open_invoice()
    event = pi_event("payment_intent.succeeded", card, pi="pi_clean_1", amount=card["total"])
    sent = stripe.send_stripe(event, at=int(clock.now().timestamp()))
    assert sent.json()["outcome"] == "applied", sent.text

    manual = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{manual['id']}/pay", {"reference": "wire-clean-1"}))

    transfer = api.open_invoice()
    received = sw.send_sw(
        sw_event(
            "transfer.received",
            reference="bt-clean-1",
            amount=transfer["total"],
            method="bank_transfer",
            reference_code=transfer["bank_transfer_reference"],
        ),
        at=clock.now(),
    )
    assert received.json()["outcome"] == "applied", received.text

    ach = api.open_invoice()
    body = {"reference": "ach-clean-1", "amount": ach["total"], "invoice": ach["id"]}
    for status in ("processing", "succeeded"):
        response = sw.send_sw(sw_event(f"payment.{status}", **body), at=clock.now())
        assert response.status_code == 200, response.text

    mailed = api.open_invoice(collection_method="send_invoice", due_date="2026-12-06")
    api.ok(api.post(f"/v1/invoices/{mailed['id']}/send"))
    api.ok(api.post(f"/v1/invoices/{mailed['id']}/pay", {"reference": "wire-clean-2"}))

    api.draft()  # a draft is not reconciled
    invoices = (card, manual, transfer, ach, mailed)
    for invoice in invoices:
        assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["status"] == "paid"
        assert payment_of(api, invoice["id"])["status"] == "succeeded"

    batch, rows = export_csv(api, PERIOD)
    assert {r["journal_entry"] for r in rows} >= {
        entry_of(api, i["id"], kind)["id"] for i in invoices for kind in ("finalize", "receipt")
    }
    sync_all(api, batch["id"], rows)

    now = reconcile(api)
    assert_clean(now, len(invoices))
    assert now["invoices_checked"] == len(invoices)
    assert findings(api, now["id"]) == []
    # Every window has long passed: still nothing.
    clock.advance(timedelta(days=10))
    later = reconcile(api)
    assert_clean(later, len(invoices))
    assert later["as_of"] == "2026-11-16"
    assert all_items(api) == []


# --- faults planted at the SQL level ---------------------------------------------------------


def test_a_deleted_receipt_entry_is_missing_receipt_entry(api: Api) -> None:
    invoice, payment, receipt = paid_invoice(api, "wire-del-1")
    paid_invoice(api, "wire-del-2")  # a clean neighbour
    assert_clean(reconcile(api), 2)
    with engine(api).connect() as connection:
        kept_entry = (
            connection.execute(select(ENTRIES).where(ENTRIES.c.id == receipt["id"])).one()._asdict()
        )
        kept_lines = [
            row._asdict()
            for row in connection.execute(select(LINES).where(LINES.c.entry_id == receipt["id"]))
        ]
    assert len(kept_lines) == len(receipt["lines"])

    def delete_entry() -> None:
        with engine(api).begin() as connection:
            connection.execute(delete(LINES).where(LINES.c.entry_id == receipt["id"]))
            connection.execute(delete(ENTRIES).where(ENTRIES.c.id == receipt["id"]))

    def restore_entry() -> None:
        with engine(api).begin() as connection:
            connection.execute(insert(ENTRIES), [kept_entry])
            connection.execute(insert(LINES), kept_lines)

    delete_entry()
    run = reconcile(api)
    assert run["counts"] == {"matched": 1, "missing_receipt_entry": 1}
    assert run["items"] == {"created": 1, "updated": 0, "resolved": 0}
    item = single_item(api, "missing_receipt_entry", invoice=invoice["id"], payment=payment["id"])
    assert item["detail"]["payment_reference"] == "wire-del-1"
    assert item["owner"] == "accounting"
    assert_lifecycle(api, item, restore_entry, delete_entry)


def test_a_doubled_payment_reference_is_one_duplicate_item(api: Api) -> None:
    first, first_payment, _ = paid_invoice(api, "ref-first")
    _, second_payment, _ = paid_invoice(api, "ref-second")
    assert_clean(reconcile(api), 2)

    def share() -> None:
        execute(
            api,
            update(PAYMENTS)
            .where(PAYMENTS.c.id == second_payment["id"])
            .values(reference="ref-first"),
        )

    def unshare() -> None:
        execute(
            api,
            update(PAYMENTS)
            .where(PAYMENTS.c.id == second_payment["id"])
            .values(reference="ref-second"),
        )

    share()
    run = reconcile(api)
    assert run["counts"]["duplicate_payment_reference"] == 1
    assert set(run["counts"]) == {"matched", "duplicate_payment_reference"}
    item = single_item(
        api, "duplicate_payment_reference", invoice=first["id"], payment=first_payment["id"]
    )
    assert item["detail"]["payment_reference"] == "ref-first"
    assert item["detail"]["payments"] == [first_payment["id"], second_payment["id"]]
    assert_lifecycle(api, item, unshare, share)


def test_an_amount_that_differs_from_the_entry_is_amount_mismatch(api: Api) -> None:
    invoice, payment, receipt = paid_invoice(api, "wire-amt-1")
    assert_clean(reconcile(api), 1)

    def change(amount: int) -> Callable[[], None]:
        return lambda: execute(
            api, update(PAYMENTS).where(PAYMENTS.c.id == payment["id"]).values(amount_minor=amount)
        )

    change(payment["amount"] + 1)()
    run = reconcile(api)
    assert run["counts"] == {"matched": 0, "amount_mismatch": 1}
    item = single_item(
        api,
        "amount_mismatch",
        invoice=invoice["id"],
        payment=payment["id"],
        journal_entry=receipt["id"],
    )
    assert (item["detail"]["payment_amount"], item["detail"]["entry_amount"]) == (
        payment["amount"] + 1,
        payment["amount"],
    )
    assert item["owner"] == "accounts_receivable"
    assert api.ok(api.get("/v1/exception_items", {"kind": "amount_mismatch"}))["data"] == [item]
    assert api.ok(api.get("/v1/exception_items", {"kind": "not_delivered"}))["data"] == []
    assert_lifecycle(api, item, change(payment["amount"]), change(payment["amount"] - 1))


@pytest.mark.parametrize("fault", ["status_failed", "never_received"])
def test_a_receipt_without_a_succeeded_payment_is_receipt_without_payment(
    api: Api, fault: str
) -> None:
    invoice, payment, receipt = paid_invoice(api, f"wire-{fault}")
    assert_clean(reconcile(api), 1)
    with engine(api).connect() as connection:
        received_at = connection.execute(
            select(PAYMENTS.c.received_at).where(PAYMENTS.c.id == payment["id"])
        ).scalar_one()
    assert received_at is not None
    broken = {"status": "failed"} if fault == "status_failed" else {"received_at": None}
    healthy = {"status": "succeeded", "received_at": received_at}

    def set_to(values: dict[str, Any]) -> Callable[[], None]:
        return lambda: execute(
            api, update(PAYMENTS).where(PAYMENTS.c.id == payment["id"]).values(**values)
        )

    set_to(broken)()
    run = reconcile(api)
    assert run["counts"] == {"matched": 0, "receipt_without_payment": 1}
    item = single_item(
        api,
        "receipt_without_payment",
        invoice=invoice["id"],
        payment=payment["id"],
        journal_entry=receipt["id"],
    )
    assert_lifecycle(api, item, set_to(healthy), set_to(broken))


# --- faults from the API, some of them windowed ----------------------------------------------


@pytest.mark.parametrize(
    ("holidays", "quiet", "overdue"),
    [
        # Friday 10:00 + 4 business days (Mon–Thu) = Thursday 10:00.
        (
            "",
            [datetime(2026, 11, 11, 11, 0), datetime(2026, 11, 12, 9, 59)],
            datetime(2026, 11, 12, 10, 1),
        ),
        # Monday is a holiday: one business day later.
        (
            "2026-11-09",
            [datetime(2026, 11, 12, 10, 1), datetime(2026, 11, 13, 9, 59)],
            datetime(2026, 11, 13, 10, 1),
        ),
    ],
    ids=["weekend", "holiday"],
)
def test_ach_processing_past_its_window_is_overdue(
    db_url: str, holidays: str, quiet: list[datetime], overdue: datetime
) -> None:
    with timed_api(db_url, business_holidays=holidays) as (api, clock):
        sw = Provider(api, "standard_webhooks", SW_SECRET)
        invoice = api.open_invoice()
        body = {"reference": "ach-slow-1", "amount": invoice["total"], "invoice": invoice["id"]}
        started = sw.send_sw(sw_event("payment.processing", **body), at=clock.now())
        assert started.status_code == 200, started.text
        payment = payment_of(api, invoice["id"])
        assert (payment["status"], payment["method"]) == ("processing", "ach")

        def move_to(instant: datetime) -> None:
            clock.advance(instant.replace(tzinfo=UTC) - clock.now())

        for instant in quiet:
            move_to(instant)
            assert_clean(reconcile(api), 1)
        move_to(overdue)
        run = reconcile(api)
        assert run["counts"] == {"matched": 0, "ach_processing_overdue": 1}
        item = single_item(
            api, "ach_processing_overdue", invoice=invoice["id"], payment=payment["id"]
        )
        assert item["detail"]["processing_since"] == "2026-11-06T10:00:00.000Z"

        settled = sw.send_sw(sw_event("payment.succeeded", **body), at=clock.now())
        assert settled.status_code == 200, settled.text
        fixed = reconcile(api)
        assert fixed["items"]["resolved"] == 1
        assert_clean(fixed, 1)
        assert item_of(api, item["id"])["status"] == "resolved"


def test_a_failed_export_row_is_one_export_failed_item(api: Api) -> None:
    invoice, _, receipt = paid_invoice(api, "wire-exp-1")
    period = the_period(api)
    batch, rows = export_csv(api, period)
    [refused, *others] = [r for r in rows if r["journal_entry"] == receipt["id"]]
    assert others, "a receipt has at least two lines"
    acknowledge(
        api,
        batch["id"],
        [{"id": refused["id"], "error": "unknown account 1200"}]
        + [{"id": r["id"], "erp_record_id": f"GL-{r['id']}"} for r in rows if r is not refused],
    )
    raised = single_item(
        api,
        "export_failed",
        export_row=refused["id"],
        journal_entry=receipt["id"],
        invoice=invoice["id"],
    )
    assert actions(raised) == ["created"]

    run = reconcile(api)
    assert run["counts"] == {"matched": 0, "export_failed": 1}
    assert run["items"] == {"created": 0, "updated": 1, "resolved": 0}
    same = single_item(
        api,
        "export_failed",
        export_row=refused["id"],
        journal_entry=receipt["id"],
        invoice=invoice["id"],
    )
    assert same["id"] == raised["id"]
    assert actions(same) == ["created", "updated"]
    [finding] = findings(api, run["id"])
    assert (finding["kind"], finding["exception_item"]) == ("export_failed", raised["id"])

    again, again_rows = export_csv(api, period)
    assert [r["id"] for r in again_rows] == [refused["id"]]
    sync_all(api, again["id"], again_rows)
    assert item_of(api, raised["id"])["status"] == "resolved"
    after = reconcile(api)
    assert_clean(after, 1)
    assert after["items"] == {"created": 0, "updated": 0, "resolved": 0}
    assert item_of(api, raised["id"])["status"] == "resolved"


def test_an_unmatched_transfer_is_one_item_until_applied(api: Api) -> None:
    sw = Provider(api, "standard_webhooks", SW_SECRET)
    invoice = api.open_invoice()
    response = sw.send_sw(
        sw_event(
            "transfer.received",
            reference="bt-lost-1",
            amount=invoice["total"],
            method="bank_transfer",
            reference_code=f"NOPE{uuid.uuid4().hex[:8].upper()}",
        )
    )
    assert response.json()["outcome"] == "unmatched", response.text
    [parked] = api.ok(api.get("/v1/payments", {"unapplied": "true"}))["data"]
    raised = single_item(
        api,
        "unmatched_transfer",
        payment=parked["id"],
        provider_event=response.json()["provider_event"],
    )

    for _ in range(2):
        run = reconcile(api)
        assert run["counts"] == {"matched": 1, "unmatched_transfer": 1}
        assert run["items"] == {"created": 0, "updated": 1, "resolved": 0}
        same = single_item(
            api,
            "unmatched_transfer",
            payment=parked["id"],
            provider_event=response.json()["provider_event"],
        )
        assert same["id"] == raised["id"]
    assert actions(same) == ["created", "updated", "updated"]

    api.ok(api.post(f"/v1/payments/{parked['id']}/apply", {"invoice": invoice["id"]}))
    assert item_of(api, raised["id"])["status"] == "resolved"
    after = reconcile(api)
    assert_clean(after, 1)
    assert after["items"] == {"created": 0, "updated": 0, "resolved": 0}
    assert [i["status"] for i in all_items(api)] == ["resolved"]


def test_an_export_the_erp_never_answers_is_export_not_synced(
    timed: tuple[Api, ManualClock],
) -> None:
    api, clock = timed
    invoice = api.open_invoice()
    finalize = entry_of(api, invoice["id"], "finalize")
    batch, rows = export_csv(api, PERIOD)
    assert len(rows) == len(finalize["lines"]) >= 2

    clock.advance(timedelta(days=3) - MINUTE)
    assert_clean(reconcile(api), 1)
    clock.advance(2 * MINUTE)
    run = reconcile(api)
    assert run["counts"] == {"matched": 0, "export_not_synced": 1}
    item = single_item(
        api,
        "export_not_synced",
        invoice=invoice["id"],
        journal_entry=finalize["id"],
        export_row=min(r["id"] for r in rows),
    )
    assert item["detail"]["format"] == "csv"
    assert item["owner"] == "accounting"

    sync_all(api, batch["id"], rows)
    fixed = reconcile(api)
    assert fixed["items"]["resolved"] == 1
    assert_clean(fixed, 1)
    assert item_of(api, item["id"])["status"] == "resolved"


@pytest.mark.parametrize("void_exported", [False, True], ids=["not_exported", "exported"])
def test_a_void_the_erp_has_not_taken_is_void_not_in_erp(
    timed: tuple[Api, ManualClock], void_exported: bool
) -> None:
    api, clock = timed
    invoice = api.open_invoice()
    batch, rows = export_csv(api, PERIOD)
    sync_all(api, batch["id"], rows)
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/void"))
    void = entry_of(api, invoice["id"], "void")
    if void_exported:
        void_batch, void_rows = export_csv(api, PERIOD)
        assert {r["journal_entry"] for r in void_rows} == {void["id"]}

    clock.advance(timedelta(days=3) - MINUTE)
    assert_clean(reconcile(api), 1)
    clock.advance(2 * MINUTE)
    run = reconcile(api)
    assert run["counts"] == {"matched": 0, "void_not_in_erp": 1}
    # One item, and no export_not_synced for the void entry besides it.
    item = single_item(api, "void_not_in_erp", invoice=invoice["id"], journal_entry=void["id"])
    assert item["detail"]["formats"] == ["csv"]

    if not void_exported:
        void_batch, void_rows = export_csv(api, PERIOD)
    sync_all(api, void_batch["id"], void_rows)
    fixed = reconcile(api)
    assert fixed["items"]["resolved"] == 1
    assert_clean(fixed, 1)
    assert item_of(api, item["id"])["status"] == "resolved"


def test_an_invoice_never_sent_is_not_delivered(timed: tuple[Api, ManualClock]) -> None:
    api, clock = timed
    unsent = api.open_invoice(collection_method="send_invoice", due_date="2026-12-06")
    mailed = api.open_invoice(collection_method="send_invoice", due_date="2026-12-06")
    api.ok(api.post(f"/v1/invoices/{mailed['id']}/send"))
    api.open_invoice()  # charged automatically: nothing to deliver

    clock.advance(timedelta(hours=24) - MINUTE)
    assert_clean(reconcile(api), 3)
    clock.advance(2 * MINUTE)
    run = reconcile(api)
    assert run["counts"] == {"matched": 2, "not_delivered": 1}
    item = single_item(api, "not_delivered", invoice=unsent["id"])
    assert item["owner"] == "billing_operations"
    assert api.ok(api.get("/v1/exception_items", {"overdue": "true"}))["data"] == []
    assert [
        i["id"] for i in api.ok(api.get("/v1/exception_items", {"status": "open"}))["data"]
    ] == [item["id"]]

    clock.advance(timedelta(hours=25))  # its due time has passed
    overdue = api.ok(api.get("/v1/exception_items", {"overdue": "true"}))["data"]
    assert [i["id"] for i in overdue] == [item["id"]]
    owned = api.ok(api.get("/v1/exception_items", {"owner": "billing_operations"}))["data"]
    assert [i["id"] for i in owned] == [item["id"]]

    api.ok(api.post(f"/v1/invoices/{unsent['id']}/send"))
    fixed = reconcile(api)
    assert fixed["items"]["resolved"] == 1
    assert_clean(fixed, 3)
    assert item_of(api, item["id"])["status"] == "resolved"
    assert api.ok(api.get("/v1/exception_items", {"status": "open"}))["data"] == []


# --- runs: as_of, accounts, findings, the worker ---------------------------------------------


def test_as_of_and_accounts(api: Api, other_api: Api) -> None:
    invoice, payment, _ = paid_invoice(api, "wire-asof-1")
    execute(
        api,
        update(PAYMENTS)
        .where(PAYMENTS.c.id == payment["id"])
        .values(amount_minor=payment["amount"] + 5),
    )
    run = reconcile(api)
    [item] = all_items(api)
    assert (item["kind"], item["refs"]["invoice"]) == ("amount_mismatch", invoice["id"])

    today = date.fromisoformat(run["as_of"])
    future = api.post("/v1/reconciliation_runs", {"as_of": (today + timedelta(days=1)).isoformat()})
    assert future.status_code == 400, future.text
    assert future.json()["error"]["param"] == "as_of"

    # Account B sees none of A's faults, and none of A's runs.
    theirs = reconcile(other_api)
    assert theirs["counts"] == {"matched": 0}
    assert all_items(other_api) == []
    assert other_api.get(f"/v1/reconciliation_runs/{run['id']}").status_code == 404
    assert other_api.get(f"/v1/reconciliation_runs/{run['id']}/findings").status_code == 404
    assert api.get(f"/v1/reconciliation_runs/{theirs['id']}").status_code == 404

    # The cause is fixed: a run as of yesterday cannot tell, so it resolves nothing.
    execute(
        api,
        update(PAYMENTS)
        .where(PAYMENTS.c.id == payment["id"])
        .values(amount_minor=payment["amount"]),
    )
    yesterday = (today - timedelta(days=1)).isoformat()
    past = reconcile(api, yesterday)
    assert past["as_of"] == yesterday
    assert past["items"] == {"created": 0, "updated": 0, "resolved": 0}
    assert item_of(api, item["id"])["status"] == "open"
    current = reconcile(api, today.isoformat())
    assert current["items"]["resolved"] == 1
    assert item_of(api, item["id"])["status"] == "resolved"
    listed = api.ok(api.get("/v1/reconciliation_runs"))["data"]
    assert {r["id"] for r in listed} == {run["id"], past["id"], current["id"]}


def test_findings_name_their_exception_items(api: Api) -> None:
    mismatched, mismatched_payment, _ = paid_invoice(api, "wire-find-1")
    unbooked, unbooked_payment, receipt = paid_invoice(api, "wire-find-2")
    paid_invoice(api, "wire-find-3")
    execute(
        api,
        update(PAYMENTS)
        .where(PAYMENTS.c.id == mismatched_payment["id"])
        .values(amount_minor=mismatched_payment["amount"] + 1),
    )
    with engine(api).begin() as connection:
        connection.execute(delete(LINES).where(LINES.c.entry_id == receipt["id"]))
        connection.execute(delete(ENTRIES).where(ENTRIES.c.id == receipt["id"]))

    run = reconcile(api)
    assert run["counts"] == {"matched": 1, "amount_mismatch": 1, "missing_receipt_entry": 1}
    items = {i["id"]: i for i in all_items(api)}
    listed = findings(api, run["id"])
    assert len(listed) == 2
    assert {f["kind"] for f in listed} == {"amount_mismatch", "missing_receipt_entry"}
    for finding in listed:
        assert finding["object"] == "reconciliation_finding"
        item = items[finding["exception_item"]]
        assert item["kind"] == finding["kind"]
        assert finding["invoice"] == item["refs"]["invoice"]
        assert {k: finding["refs"].get(k) for k in REF_NAMES} == {
            k: item["refs"].get(k) for k in REF_NAMES
        }
    by_kind = {f["kind"]: f for f in listed}
    assert by_kind["amount_mismatch"]["invoice"] == mismatched["id"]
    assert by_kind["missing_receipt_entry"]["invoice"] == unbooked["id"]
    assert by_kind["missing_receipt_entry"]["refs"]["payment"] == unbooked_payment["id"]

    # A second run lists the same items again.
    again = reconcile(api)
    assert {f["exception_item"] for f in findings(api, again["id"])} == set(items)


def test_the_worker_reconciles_each_account_once_a_day(db_url: str) -> None:
    # Later than any run the other tests made, so every account is due.
    clock = ManualClock(datetime(2027, 3, 1, 6, 0, tzinfo=UTC))
    settings = make_settings(db_url)
    app = create_app(settings, clock)
    worker = Worker(settings, clock)
    try:
        with TestClient(app) as client:
            apis = []
            for _ in range(2):
                account_id, key = create_account(app.state.invoicetrail)
                apis.append(Api(client=client, account_id=account_id, secret_key=key))
            faulty, clean = apis
            _, payment, _ = paid_invoice(faulty, "wire-worker-1")
            execute(
                faulty,
                update(PAYMENTS)
                .where(PAYMENTS.c.id == payment["id"])
                .values(amount_minor=payment["amount"] + 3),
            )
            with engine(faulty).connect() as connection:
                accounts = connection.execute(text("SELECT COUNT(*) FROM accounts")).scalar_one()

            def runs(api: Api) -> list[tuple[str, str]]:
                listed = api.ok(api.get("/v1/reconciliation_runs"))["data"]
                return [(r["as_of"], r["trigger"]) for r in listed]

            def drain() -> int:
                """Passes until none runs: a pass takes at most a few accounts."""
                total = 0
                while ran := worker.run_once().reconciliation_runs:
                    assert ran <= RECONCILE_ACCOUNTS_PER_PASS
                    total += ran
                return total

            assert drain() == accounts
            for api in apis:
                assert runs(api) == [("2027-03-01", "schedule")]
            [item] = all_items(faulty)
            assert item["kind"] == "amount_mismatch"
            assert item["history"][0]["actor"] == "worker"
            assert all_items(clean) == []

            clock.advance(timedelta(hours=17))  # 23:00, the same day
            assert worker.run_once().reconciliation_runs == 0
            for api in apis:
                assert len(runs(api)) == 1

            clock.advance(timedelta(hours=2))  # the next day
            assert drain() == accounts
            assert worker.run_once().reconciliation_runs == 0
            for api in apis:
                assert runs(api) == [("2027-03-02", "schedule"), ("2027-03-01", "schedule")]
            [same] = all_items(faulty)
            assert (same["id"], actions(same)) == (item["id"], ["created", "updated"])
    finally:
        worker.close()
