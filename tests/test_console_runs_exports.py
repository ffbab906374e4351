"""Ops console: reconciliation runs and exports.

Signed in with an account's secret key, a run started from the form shows its progress,
counts and findings exactly as the API has them; an export made from the form lists its rows,
downloads the API's bytes and follows the ERP's acknowledgements. Every form needs its CSRF
token, a replayed form is one action, and another account's objects are not found.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from conftest import Api
from invoicetrail.console.pages import exports as export_pages
from invoicetrail.console.pages import reconciliation as run_pages
from invoicetrail.core.money import format_display
from invoicetrail.reconciliation.models import ReconciliationRun
from test_exports import all_rows, file_bytes, the_period
from test_payment_evidence import SW_SECRET, Provider, sw_event
from test_reconciliation import PAYMENTS, execute, paid_invoice

FORMAT_NAMES = ["csv", "jsonl", "netsuite", "quickbooks", "xero", "hledger", "beancount"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


# --- a small HTML tree ----------------------------------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def all(self, tag: str, **attrs: str) -> list[Node]:
        return [
            n
            for n in self.walk()
            if n.tag == tag and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def by_id(self, element_id: str) -> Node:
        found = [n for n in self.walk() if n.attrs.get("id") == element_id]
        assert len(found) == 1, f"#{element_id}: {len(found)} elements"
        return found[0]

    def has_id(self, element_id: str) -> bool:
        return any(n.attrs.get("id") == element_id for n in self.walk())

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return " ".join(" ".join(parts).split())

    def links(self) -> list[str]:
        return [a.attrs["href"] for a in self.all("a") if "href" in a.attrs]

    def rows(self) -> list[Node]:
        """Body rows of a table."""
        return [tr for tbody in self.all("tbody") for tr in tbody.all("tr")]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v if v is not None else "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def fields_of(form: Node) -> dict[str, str]:
    """What the browser would submit: inputs' values, each select's chosen option."""
    values: dict[str, str] = {}
    for element in form.walk():
        name = element.attrs.get("name")
        if not name:
            continue
        if element.tag == "input":
            values[name] = element.attrs.get("value", "")
        elif element.tag == "select":
            options = element.all("option")
            chosen = [o for o in options if "selected" in o.attrs] or options[:1]
            values[name] = chosen[0].attrs["value"] if chosen else ""
    return values


def form_fields(doc: Node, form_id: str) -> dict[str, str]:
    return fields_of(doc.by_id(form_id))


# --- the console as a browser would use it --------------------------------------------------------


class Console:
    """A browser signed in to the console: its own cookie jar, redirects not followed."""

    def __init__(self, client: TestClient, api: Api) -> None:
        self.http = TestClient(client.app, base_url="http://testserver", follow_redirects=False)
        login = self.http.get("/console/login")
        assert login.status_code == 200
        [form] = parse(login.text).all("form", action="/console/login")
        token = fields_of(form)["csrf_token"]
        signed = self.http.post(
            "/console/login", data={"csrf_token": token, "secret_key": api.secret_key}
        )
        assert (signed.status_code, signed.headers["location"]) == (303, "/console"), signed.text

    def get(self, path: str, status: int = 200) -> Node:
        response = self.http.get(path)
        assert response.status_code == status, (path, response.status_code, response.text)
        return parse(response.text)

    def submit(self, form: dict[str, str], path: str) -> Any:
        return self.http.post(path, data=form)


def redirect_target(response: Any, prefix: str) -> str:
    """The id a form's 303 leads to."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    match = re.fullmatch(re.escape(prefix) + r"([a-z]+_[A-Za-z0-9]+)(\?flash=.*)?", location)
    assert match, location
    return match.group(1)


def run_ids(api: Api) -> list[str]:
    return [r["id"] for r in api.ok(api.get("/v1/reconciliation_runs", {"limit": 100}))["data"]]


def export_ids(api: Api) -> list[str]:
    return [e["id"] for e in api.ok(api.get("/v1/exports", {"limit": 100}))["data"]]


# --- reconciliation -------------------------------------------------------------------------------


def plant_findings(api: Api) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An unmatched bank transfer (an item about a payment, no invoice) and a paid invoice
    whose payment amount no longer matches its receipt entry."""
    sw = Provider(api, "standard_webhooks", SW_SECRET)
    target = api.open_invoice()
    sent = sw.send_sw(
        sw_event(
            "transfer.received",
            reference=f"bt-console-{uuid.uuid4().hex[:6]}",
            amount=target["total"],
            method="bank_transfer",
            reference_code=f"NOPE{uuid.uuid4().hex[:8].upper()}",
        )
    )
    assert sent.json()["outcome"] == "unmatched", sent.text
    [parked] = api.ok(api.get("/v1/payments", {"unapplied": "true"}))["data"]
    mismatched, payment, _ = paid_invoice(api, f"wire-console-{uuid.uuid4().hex[:6]}")
    execute(
        api,
        update(PAYMENTS)
        .where(PAYMENTS.c.id == payment["id"])
        .values(amount_minor=payment["amount"] + 1),
    )
    return target, parked, mismatched


def test_a_run_started_from_the_form_shows_progress_counts_and_findings(
    api: Api, client: TestClient
) -> None:
    _, parked, mismatched = plant_findings(api)
    console = Console(client, api)

    listing = console.get("/console/reconciliation")
    assert listing.by_id("as_of").attrs["type"] == "date"
    assert listing.by_id("as_of").attrs["value"] == datetime.now(UTC).date().isoformat()
    assert not listing.has_id("runs")  # no run yet
    form = form_fields(listing, "start-run")
    assert form["idempotency_key"] and form["csrf_token"]
    run_id = redirect_target(
        console.submit(form, "/console/reconciliation"), "/console/reconciliation/"
    )
    assert run_id.startswith("rec_")
    run = api.ok(api.get(f"/v1/reconciliation_runs/{run_id}"))
    assert run["status"] == "completed"
    assert run["counts"] == {"matched": 1, "amount_mismatch": 1, "unmatched_transfer": 1}

    page = console.get(f"/console/reconciliation/{run_id}")
    progress = page.by_id("progress")
    assert progress.attrs["data-status"] == "completed"
    assert "100 %" in progress.text
    [bar] = progress.all("progress")
    total = run["progress"]["checks_total"]
    assert (bar.attrs["value"], bar.attrs["max"]) == (str(total), str(total))
    assert not page.all("meta", http_equiv="refresh")
    counts = {
        tr.attrs["data-outcome"]: int(tr.all("td")[0].text) for tr in page.by_id("counts").rows()
    }
    assert counts == run["counts"]

    items = {i["kind"]: i for i in api.ok(api.get("/v1/exception_items", {"limit": 100}))["data"]}
    findings = {tr.attrs["data-kind"]: tr for tr in page.by_id("findings").rows()}
    assert set(findings) == {"amount_mismatch", "unmatched_transfer"}
    transfer = findings["unmatched_transfer"]
    assert f"/console/exceptions/{items['unmatched_transfer']['id']}" in transfer.links()
    assert parked["id"] in transfer.text
    mismatch = findings["amount_mismatch"]
    assert mismatch.links() == [
        f"/console/invoices/{mismatched['id']}",
        f"/console/exceptions/{items['amount_mismatch']['id']}",
    ]

    listed = console.get("/console/reconciliation").by_id("runs")
    [row] = listed.rows()
    cells = [td.text for td in row.all("td")]
    assert f"/console/reconciliation/{run_id}" in row.links()
    assert cells[1:5] == [run["as_of"], "completed", "1", "2"]


def test_an_unfinished_run_page_follows_its_progress(api: Api, client: TestClient) -> None:
    run = api.ok(api.post("/v1/reconciliation_runs", {}))
    execute(
        api,
        update(ReconciliationRun.__table__)
        .where(ReconciliationRun.__table__.c.id == run["id"])
        .values(status="running", checks_done=1),
    )
    total = run["progress"]["checks_total"]
    page = Console(client, api).get(f"/console/reconciliation/{run['id']}")
    progress = page.by_id("progress")
    assert progress.attrs["data-status"] == "running"
    assert f"{100 // total} %" in progress.text
    [bar] = progress.all("progress")
    assert (bar.attrs["value"], bar.attrs["max"]) == ("1", str(total))
    [refresh] = page.all("meta", http_equiv="refresh")
    assert refresh.attrs["content"] == "2"


def test_run_and_finding_lists_page(
    api: Api, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_findings(api)
    made = [api.ok(api.post("/v1/reconciliation_runs", {}))["id"] for _ in range(3)]
    monkeypatch.setattr(run_pages, "RUNS_PER_PAGE", 2)
    monkeypatch.setattr(run_pages, "FINDINGS_PER_PAGE", 1)
    console = Console(client, api)
    seen: list[str] = []
    path = "/console/reconciliation"
    while path:
        page = console.get(path)
        if page.has_id("runs"):
            seen += [tr.attrs["data-run"] for tr in page.by_id("runs").rows()]
        nexts = [a for a in page.all("a") if a.text.startswith("Next page")]
        path = nexts[0].attrs["href"] if nexts else ""
    assert seen == list(reversed(made))

    kinds: list[str] = []
    path = f"/console/reconciliation/{made[0]}"
    while path:
        page = console.get(path)
        kinds += [tr.attrs["data-kind"] for tr in page.by_id("findings").rows()]
        nexts = [a for a in page.all("a") if a.text.startswith("Next page")]
        path = nexts[0].attrs["href"] if nexts else ""
    assert sorted(kinds) == ["amount_mismatch", "unmatched_transfer"]


def test_a_refused_run_shows_the_form_again_and_runs_nothing(api: Api, client: TestClient) -> None:
    console = Console(client, api)
    form = form_fields(console.get("/console/reconciliation"), "start-run")
    response = console.submit({**form, "as_of": "2999-01-01"}, "/console/reconciliation")
    assert response.status_code == 400
    page = parse(response.text)
    assert "in the future" in page.text
    assert form_fields(page, "start-run")["as_of"] == "2999-01-01"
    assert run_ids(api) == []


# --- exports --------------------------------------------------------------------------------------


def test_an_export_made_from_the_form_lists_downloads_and_follows_the_erp(
    api: Api, client: TestClient
) -> None:
    paid_invoice(api, f"wire-exp-console-{uuid.uuid4().hex[:6]}")
    period = the_period(api)
    console = Console(client, api)

    before = datetime.now(UTC).strftime("%Y-%m")
    listing = console.get("/console/exports")
    after = datetime.now(UTC).strftime("%Y-%m")
    select = listing.by_id("export-format")
    assert select.attrs["name"] == "format"
    assert [o.attrs["value"] for o in select.all("option")] == FORMAT_NAMES
    assert listing.by_id("export-period").attrs["value"] in {before, after}
    form = form_fields(listing, "create-export")
    assert form["format"] == "csv"
    export_id = redirect_target(
        console.submit({**form, "period": period}, "/console/exports"), "/console/exports/"
    )
    batch = api.ok(api.get(f"/v1/exports/{export_id}"))
    rows = all_rows(api, export_id)
    assert batch["format"] == "csv" and batch["period"] == period and len(rows) >= 4

    page = console.get(f"/console/exports/{export_id}")
    header = page.by_id("export-header")
    assert header.attrs["data-status"] == "exported"
    assert f"{batch['row_count']} rows: {batch['row_count']} awaiting the ERP" in header.text
    for total in batch["totals"]:
        assert format_display(total["debit"], total["currency"]) in page.by_id("export-totals").text
    listed = {tr.attrs["data-row"]: tr for tr in page.by_id("export-rows").rows()}
    assert list(listed) == [r["id"] for r in rows]
    assert {tr.attrs["data-status"] for tr in listed.values()} == {"exported"}

    download = page.by_id("download")
    assert download.attrs["href"] == f"/console/exports/{export_id}/file"
    got = console.http.get(download.attrs["href"])
    api_file = api.get(f"/v1/exports/{export_id}/file")
    assert got.status_code == 200
    assert got.content == file_bytes(api, export_id) == api_file.content
    assert got.headers["content-type"] == api_file.headers["content-type"]
    assert got.headers["content-disposition"] == (f'attachment; filename="{batch["filename"]}"')

    refused, *synced = rows
    api.ok(
        api.post(
            f"/v1/exports/{export_id}/acknowledge",
            {
                "rows": [{"id": refused["id"], "error": "unknown account 1200"}]
                + [{"id": r["id"], "erp_record_id": f"GL-{r['id']}"} for r in synced]
            },
        )
    )
    page = console.get(f"/console/exports/{export_id}")
    assert page.by_id("export-header").attrs["data-status"] == "failed"
    listed = {tr.attrs["data-row"]: tr for tr in page.by_id("export-rows").rows()}
    assert listed[refused["id"]].attrs["data-status"] == "failed"
    assert "unknown account 1200" in listed[refused["id"]].text
    for row in synced:
        shown = listed[row["id"]]
        assert shown.attrs["data-status"] == "synced"
        assert f"GL-{row['id']}" in shown.text
    failed_only = console.get(f"/console/exports/{export_id}?status=failed")
    assert [tr.attrs["data-row"] for tr in failed_only.by_id("export-rows").rows()] == [
        refused["id"]
    ]
    console.get(f"/console/exports/{export_id}?status=bogus", status=400)

    [entry] = console.get("/console/exports").by_id("exports").rows()
    cells = [td.text for td in entry.all("td")]
    assert cells[0] == export_id
    assert cells[2:7] == [period, "failed", str(len(rows)), str(len(synced)), "1"]


@pytest.mark.parametrize("format_name", ["jsonl", "beancount"])
def test_every_format_downloads_the_api_bytes(
    api: Api, client: TestClient, format_name: str
) -> None:
    api.open_invoice()
    console = Console(client, api)
    form = form_fields(console.get("/console/exports"), "create-export")
    export_id = redirect_target(
        console.submit(
            {**form, "format": format_name, "period": the_period(api)}, "/console/exports"
        ),
        "/console/exports/",
    )
    got = console.http.get(f"/console/exports/{export_id}/file")
    api_file = api.get(f"/v1/exports/{export_id}/file")
    assert got.status_code == 200 and got.content == api_file.content and got.content
    assert got.headers["content-type"] == api_file.headers["content-type"]


def test_export_rows_page(api: Api, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    api.open_invoice()
    batch = api.ok(api.post("/v1/exports", {"format": "xero", "period": the_period(api)}))
    expected = [r["id"] for r in all_rows(api, batch["id"])]
    monkeypatch.setattr(export_pages, "ROWS_PER_PAGE", 2)
    console = Console(client, api)
    seen: list[str] = []
    path = f"/console/exports/{batch['id']}"
    while path:
        page = console.get(path)
        seen += [tr.attrs["data-row"] for tr in page.by_id("export-rows").rows()]
        nexts = [a for a in page.all("a") if a.text.startswith("Next page")]
        path = nexts[0].attrs["href"] if nexts else ""
    assert seen == expected and len(seen) > 2


def test_a_refused_export_shows_the_form_again(api: Api, client: TestClient) -> None:
    console = Console(client, api)
    form = form_fields(console.get("/console/exports"), "create-export")
    response = console.submit({**form, "period": "2026-13"}, "/console/exports")
    assert response.status_code == 400
    page = parse(response.text)
    assert page.by_id("export-period").attrs["value"] == "2026-13"
    assert page.all("p", role="alert")
    assert export_ids(api) == []


# --- CSRF, replays, accounts ----------------------------------------------------------------------


def test_no_form_works_without_its_csrf_token(api: Api, client: TestClient) -> None:
    api.open_invoice()
    console = Console(client, api)
    run_form = form_fields(console.get("/console/reconciliation"), "start-run")
    export_form = {
        **form_fields(console.get("/console/exports"), "create-export"),
        "period": the_period(api),
    }
    for form, path in ((run_form, "/console/reconciliation"), (export_form, "/console/exports")):
        without = {k: v for k, v in form.items() if k != "csrf_token"}
        for bad in (without, {**form, "csrf_token": "forged"}, {**form, "csrf_token": ""}):
            response = console.submit(bad, path)
            assert response.status_code == 403, response.text
    assert run_ids(api) == [] and export_ids(api) == []

    # Signed out, the form goes nowhere either.
    console.http.cookies.clear()
    response = console.submit(run_form, "/console/reconciliation")
    assert (response.status_code, response.headers["location"]) == (303, "/console/login")
    assert run_ids(api) == []


def test_a_replayed_form_is_one_run_and_one_export(api: Api, client: TestClient) -> None:
    api.open_invoice()
    period = the_period(api)
    console = Console(client, api)

    run_form = form_fields(console.get("/console/reconciliation"), "start-run")
    first = redirect_target(
        console.submit(run_form, "/console/reconciliation"), "/console/reconciliation/"
    )
    again = redirect_target(
        console.submit(run_form, "/console/reconciliation"), "/console/reconciliation/"
    )
    assert first == again and run_ids(api) == [first]
    fresh = form_fields(console.get("/console/reconciliation"), "start-run")
    assert fresh["idempotency_key"] != run_form["idempotency_key"]
    second = redirect_target(
        console.submit(fresh, "/console/reconciliation"), "/console/reconciliation/"
    )
    assert second != first and run_ids(api) == [second, first]

    export_form = {
        **form_fields(console.get("/console/exports"), "create-export"),
        "period": period,
    }
    made = redirect_target(console.submit(export_form, "/console/exports"), "/console/exports/")
    api.open_invoice()  # new lines: a new form would make a new batch, a replay must not
    replayed = redirect_target(console.submit(export_form, "/console/exports"), "/console/exports/")
    assert replayed == made and export_ids(api) == [made]
    # The key with another body is refused, not a second action.
    reused = console.submit({**export_form, "format": "xero"}, "/console/exports")
    assert reused.status_code == 422 and export_ids(api) == [made]
    fresh_export = form_fields(console.get("/console/exports"), "create-export")
    newer = redirect_target(
        console.submit({**fresh_export, "period": period}, "/console/exports"),
        "/console/exports/",
    )
    assert newer != made and export_ids(api) == [newer, made]


def test_another_accounts_runs_and_exports_are_not_found(
    api: Api, other_api: Api, client: TestClient
) -> None:
    other_api.open_invoice()
    theirs_run = other_api.ok(other_api.post("/v1/reconciliation_runs", {}))
    theirs_export = other_api.ok(
        other_api.post("/v1/exports", {"format": "csv", "period": the_period(other_api)})
    )
    console = Console(client, api)
    for path in (
        f"/console/reconciliation/{theirs_run['id']}",
        f"/console/exports/{theirs_export['id']}",
        "/console/reconciliation/rec_unknown",
        "/console/exports/exp_unknown",
    ):
        page = console.get(path, status=404)
        assert not page.has_id("progress") and not page.has_id("export-rows")
    response = console.http.get(f"/console/exports/{theirs_export['id']}/file")
    assert response.status_code == 404
    assert theirs_export["filename"] not in response.text
    assert theirs_run["id"] not in console.http.get("/console/reconciliation").text
    assert theirs_export["id"] not in console.http.get("/console/exports").text

    signed_out = TestClient(client.app, base_url="http://testserver", follow_redirects=False)
    for path in (
        f"/console/exports/{theirs_export['id']}/file",
        f"/console/reconciliation/{theirs_run['id']}",
    ):
        response = signed_out.get(path)
        assert (response.status_code, response.headers["location"]) == (303, "/console/login")
