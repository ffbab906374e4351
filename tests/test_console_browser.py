"""The ops console in a real browser: the system Chromium driven by Playwright against a real
`invoicetrail serve` (SQLite file, demo data), the way AR and finance use it.

Every page visited is watched for console errors, uncaught exceptions and CSP violations
(SPEC "Ops console"). Screenshots for the README are rewritten only with
INVOICETRAIL_UPDATE_SCREENSHOTS=1, so CI never touches docs/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from conftest import IN_CI
from invoicetrail.core.config import Settings
from invoicetrail.core.db import make_engine
from invoicetrail.core.money import format_display
from invoicetrail.exceptions.models import ExceptionItem
from servers import running_server

try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        expect,
        sync_playwright,
    )

    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - only outside CI
    HAVE_PLAYWRIGHT = False

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE_SCREENSHOTS = os.environ.get("INVOICETRAIL_UPDATE_SCREENSHOTS") == "1"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15_000

NAV = {
    "Overview": "/console",
    "Exceptions": "/console/exceptions",
    "Invoices": "/console/invoices",
    "Payments": "/console/payments",
    "Reconciliation": "/console/reconciliation",
    "Exports": "/console/exports",
}
OVERVIEW_SECTIONS = (
    "#invoices-by-status",
    "#amounts",
    "#ach-processing",
    "#exceptions-by-owner",
    "#last-reconciliation",
    "#golive",
)
TRACE_SECTIONS = (
    "Requests",
    "Provider events",
    "Payments",
    "Journal entries",
    "Export rows",
    "E-invoice submissions",
    "Exceptions",
)
TRUE_WORDS = {"true", "1", "yes", "ok"}


def _missing(what: str) -> None:
    """A missing browser skips outside CI and fails in CI (like hledger in test_exports)."""
    if IN_CI:
        pytest.fail(f"{what}: required in CI")
    pytest.skip(f"{what} (CI not set)")


def _chromium() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        _missing("chromium is not installed (apt-get install -y chromium)")
    return found


# --- the served app -----------------------------------------------------------------------


def _cli(database_url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICETRAIL_")}
    env["INVOICETRAIL_DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, "-m", "invoicetrail", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, f"invoicetrail {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout


@dataclass
class Served:
    base_url: str
    secret_key: str
    api: httpx.Client
    overdue_item: str
    paid_invoice: dict[str, Any]
    other_invoice: dict[str, Any]

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        response = self.api.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code in (200, 201), response.text
        return response.json()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("console")
    url = f"sqlite:///{directory / 'console.db'}"
    _cli(url, "migrate")
    secret_key = _cli(url, "demo").strip().splitlines()[-1]
    # Simulated payments (card, ACH, the mistyped transfer) arrive through the worker.
    _cli(url, "worker", "--once")
    other = json.loads(_cli(url, "accounts", "create", "--name", "Other Ltd", "--country", "de"))

    # A day passes: the unmatched transfer's item (due 24 h after it was raised) is overdue.
    engine = make_engine(Settings(database_url=url))
    try:
        with engine.begin() as connection:
            aged = connection.execute(
                update(ExceptionItem)
                .where(ExceptionItem.kind == "unmatched_transfer", ExceptionItem.status == "open")
                .values(due_at=datetime.now(UTC) - timedelta(days=1))
                .returning(ExceptionItem.id)
            ).all()
    finally:
        engine.dispose()
    assert len(aged) == 1, aged

    with running_server(url, log_dir=directory) as server:
        auth = {"Authorization": f"Bearer {secret_key}"}
        other_auth = {"Authorization": f"Bearer {other['secret_key']}"}
        with (
            httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as api,
            httpx.Client(base_url=server.base_url, headers=other_auth, timeout=30) as other_api,
        ):

            def other_post(path: str, body: Any) -> Any:
                key = {"Idempotency-Key": uuid.uuid4().hex}
                response = other_api.post(path, json=body, headers=key)
                assert response.status_code == 200, response.text
                return response.json()

            customer = other_post(
                "/v1/customers", {"name": "Secret Other Customer", "address": {"country": "DE"}}
            )
            draft = other_post(
                "/v1/invoices",
                {
                    "customer": customer["id"],
                    "currency": "eur",
                    "lines": [{"description": "Other", "quantity": "1", "unit_amount": 100}],
                },
            )
            other_invoice = other_post(f"/v1/invoices/{draft['id']}/finalize", None)
            invoices = api.get("/v1/invoices", params={"limit": 100}).json()["data"]
            [paid] = [i for i in invoices if i["external_reference"] == "demo-paid"]
            yield Served(
                base_url=server.base_url,
                secret_key=secret_key,
                api=api,
                overdue_item=aged[0][0],
                paid_invoice=paid,
                other_invoice=other_invoice,
            )


# --- the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not HAVE_PLAYWRIGHT:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    executable = _chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Watch:
    """Console messages and page errors of every page in a browser context."""

    problems: list[str] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)
    # Documents whose error status is the point of a test (a 401 sign-in, a 404 URL):
    # Chromium logs "Failed to load resource" for them, which is not a page fault.
    expected_status: dict[str, int] = field(default_factory=dict)

    def attach(self, context: BrowserContext) -> None:
        context.on("console", self._console)
        context.on("weberror", lambda error: self.problems.append(f"page error: {error.error}"))
        context.on("page", lambda page: page.on("framenavigated", self._navigated))

    def _navigated(self, frame: Any) -> None:
        if frame.parent_frame is None:
            self.visited.append(frame.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        status = self.expected_status.get(where)
        if status is not None and message.text.startswith(
            f"Failed to load resource: the server responded with a status of {status}"
        ):
            return
        self.problems.append(f"console error: {message.text} (at {where})")

    def assert_clean(self) -> None:
        problems, self.problems = self.problems, []
        assert problems == [], f"browser console errors on {sorted(set(self.visited))}"


def new_context(
    browser: Browser, served: Served, viewport: dict[str, int] | None = None
) -> tuple[BrowserContext, Watch]:
    context = browser.new_context(
        base_url=served.base_url, viewport=viewport or WIDE, accept_downloads=True
    )
    context.set_default_timeout(WAIT_MS)
    watch = Watch()
    watch.attach(context)
    return context, watch


def sign_in(page: Page, secret_key: str) -> None:
    page.goto("/console/login")
    page.fill('input[name="secret_key"]', secret_key)
    with page.expect_navigation():
        page.locator('form:has(input[name="secret_key"]) [type="submit"]').click()
    expect(page).to_have_url(re.compile(r"/console$"))


def screenshot(page: Page, name: str, height: int | None = None) -> None:
    """1280 px wide, the whole page (or its first `height` px) as docs/screenshots/<name>."""
    if UPDATE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        clip = {"x": 0, "y": 0, "width": WIDE["width"], "height": height} if height else None
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True, clip=clip)  # type: ignore[arg-type]


def submit(page: Page, form: str) -> None:
    """Submits a form by its button and waits for the page the POST redirects to."""
    with page.expect_navigation():
        page.locator(f"{form} [type=submit]").first.click()


@dataclass
class Console:
    page: Page
    watch: Watch


@pytest.fixture(scope="module")
def console(browser: Browser, served: Served) -> Iterator[Console]:
    """One signed-in tab at 1280 px, shared by the flow's tests in file order."""
    context, watch = new_context(browser, served)
    page = context.new_page()
    sign_in(page, served.secret_key)
    yield Console(page, watch)
    context.close()


@pytest.fixture
def tab(console: Console) -> Iterator[Page]:
    yield console.page
    console.watch.assert_clean()


# --- 1. sign-in and the overview ----------------------------------------------------------


def test_a_wrong_key_is_refused_then_the_overview_shows_every_section(
    browser: Browser, served: Served
) -> None:
    context, watch = new_context(browser, served)
    page = context.new_page()
    first = page.goto("/console")
    assert first is not None and first.status == 200
    expect(page).to_have_url(re.compile(r"/console/login$"))
    expect(page.locator('input[type="password"][name="secret_key"]')).to_be_visible()

    watch.expected_status[f"{served.base_url}/console/login"] = 401
    page.fill('input[name="secret_key"]', "sk_" + "x" * 48)
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/console/login")
    ) as refused:
        page.locator('form:has(input[name="secret_key"]) [type="submit"]').click()
    page.wait_for_load_state()
    assert refused.value.status == 401
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("link", name="Sign out")).to_have_count(0)
    assert "Demo GmbH" not in page.content()

    page.fill('input[name="secret_key"]', served.secret_key)
    with page.expect_navigation():
        page.locator('form:has(input[name="secret_key"]) [type="submit"]').click()
    expect(page).to_have_url(f"{served.base_url}/console")
    expect(page.locator('input[type="password"]')).to_have_count(0)
    nav = page.get_by_role("navigation", name="Main")
    for name, href in NAV.items():
        expect(nav.get_by_role("link", name=name, exact=True)).to_have_attribute("href", href)
    expect(nav.get_by_role("link", name="Sign out", exact=True)).to_have_attribute(
        "href", "/console/logout"
    )
    for section in OVERVIEW_SECTIONS:
        expect(page.locator(section)).to_be_visible()

    # Counts per status as plain integers next to the status name (SPEC).
    invoices = served.get("/v1/invoices", limit=100)["data"]
    by_status = page.locator("#invoices-by-status").inner_text()
    for status in {i["status"] for i in invoices}:
        count = sum(1 for i in invoices if i["status"] == status)
        assert re.search(rf"\b{status}\b[\s:·—-]*{count}\b", by_status), (status, by_status)
    expect(page.locator("#exceptions-by-owner")).to_contain_text("accounts_receivable")
    [last_run, *_] = served.get("/v1/reconciliation_runs")["data"]
    expect(page.locator("#last-reconciliation")).to_contain_text(last_run["id"])
    # Go-live: every check the API reports, each with its result (the overdue item fails one).
    checks = served.get("/v1/golive_check")["checks"]
    assert not all(c["ok"] for c in checks)
    for check in checks:
        item = page.locator(f'#golive li[data-check="{check["name"]}"]')
        expect(item).to_have_count(1)
        ok = (item.get_attribute("data-ok") or "").lower() in TRUE_WORDS
        assert ok == check["ok"], check

    # Every area page opens from the navigation bar without errors.
    for name, href in NAV.items():
        with page.expect_navigation() as opened:
            nav.get_by_role("link", name=name, exact=True).click()
        assert opened.value is not None and opened.value.status == 200, href
        expect(page).to_have_url(f"{served.base_url}{href}")
    context.close()
    watch.assert_clean()


def test_overview_screenshot(tab: Page) -> None:
    tab.goto("/console")
    expect(tab.locator("#golive")).to_be_visible()
    screenshot(tab, "console-overview.png")


# --- 2. phone width and keyboard ----------------------------------------------------------


def test_the_queue_fits_a_phone_and_the_console_works_by_keyboard(
    browser: Browser, served: Served
) -> None:
    context, watch = new_context(browser, served, viewport=PHONE)
    page = context.new_page()
    page.goto("/console/login")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    reached: list[dict[str, str]] = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "(() => { const e = document.activeElement; return {tag: e.tagName, "
            "name: e.getAttribute('name') || '', type: e.getAttribute('type') || '', "
            "text: (e.textContent || '').trim()}; })()"
        )
        reached.append(focused)
        if focused["name"] == "secret_key":
            break
    assert reached[-1]["name"] == "secret_key", reached
    page.keyboard.type(served.secret_key)
    page.keyboard.press("Tab")
    focused_button = page.evaluate(
        "document.activeElement.tagName + ':' + document.activeElement.type"
    )
    assert focused_button.lower() == "button:submit", focused_button
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page).to_have_url(f"{served.base_url}/console")

    # Signed in: Tab reaches the navigation and the sign-out button; Enter follows a link.
    seen: set[str] = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        label = page.evaluate(
            "document.activeElement.tagName + ':' + (document.activeElement.textContent || '')"
            ".trim()"
        )
        seen.add(label)
        if label == "A:Exceptions":
            break
    assert "A:Exceptions" in seen, seen
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page).to_have_url(f"{served.base_url}/console/exceptions")
    expect(page.locator("table#exceptions")).to_be_visible()
    expect(page.locator("table#exceptions")).to_contain_text(served.overdue_item)
    overflow = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert overflow[0] <= overflow[1] + 1, f"page scrolls sideways at 390 px: {overflow}"
    sign_out = page.get_by_role("link", name="Sign out")
    for _ in range(80):
        page.keyboard.press("Tab")
        if sign_out.evaluate("b => b === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reaches the Sign out link")
    context.close()
    watch.assert_clean()


# --- 3. the exception queue ---------------------------------------------------------------


def test_find_the_overdue_exception_assign_and_resolve_it(tab: Page, served: Served) -> None:
    item_id = served.overdue_item
    tab.goto("/console/exceptions")
    queue = tab.locator("table#exceptions")
    row = queue.locator("tbody tr", has_text=item_id)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("unmatched_transfer")
    screenshot(tab, "console-queue.png")

    tab.goto("/console/exceptions?overdue=1")
    rows = queue.locator("tbody tr")
    expect(rows.filter(has_text=item_id)).to_have_count(1)
    assert rows.count() == rows.filter(has=tab.locator(".badge.overdue")).count()
    expect(rows.filter(has_text=item_id).locator(".badge.overdue")).to_be_visible()
    for query in ("kind=export_failed", "owner=nobody_here", "status=resolved"):
        tab.goto(f"/console/exceptions?{query}")
        expect(tab.locator("table#exceptions", has_text=item_id)).to_have_count(0)

    tab.goto("/console/exceptions?overdue=1")
    with tab.expect_navigation():
        tab.locator(f'table#exceptions a[href="/console/exceptions/{item_id}"]').first.click()
    expect(tab).to_have_url(f"{served.base_url}/console/exceptions/{item_id}")
    before = served.get(f"/v1/exception_items/{item_id}")
    for ref, value in before["refs"].items():
        if value:  # every reference shown; an invoice's links to its page
            tag = "a" if ref == "invoice" else ""
            expect(tab.locator(f'{tag}[data-ref="{ref}"]').first).to_contain_text(value)
    expect(tab.locator("ol#history li")).to_have_count(len(before["history"]))

    tab.fill('form#assign input[name="owner"]', "ar_lead")
    submit(tab, "form#assign")
    expect(tab).to_have_url(re.compile(rf"/console/exceptions/{item_id}(\?.*)?$"))
    expect(tab.locator('p.notice[role="status"]')).to_be_visible()
    note = "Applied by hand: customer confirmed the wire (console test)"
    tab.fill('form#resolve textarea[name="note"]', note)
    submit(tab, "form#resolve")
    expect(tab.locator('p.notice[role="status"]')).to_be_visible()

    after = served.get(f"/v1/exception_items/{item_id}")
    assert after["status"] == "resolved" and after["owner"] == "ar_lead"
    assigned, resolved = after["history"][-2:]
    assert (assigned["action"], resolved["action"]) == ("assigned", "resolved")
    assert resolved["note"] == note
    assert assigned["request_id"] != resolved["request_id"]
    history = tab.locator("ol#history li")
    expect(history).to_have_count(len(after["history"]))
    for entry, shown in ((assigned, history.nth(-2)), (resolved, history.nth(-1))):
        expect(shown).to_contain_text(entry["action"])
        expect(shown).to_contain_text(entry["request_id"])
    expect(history.nth(-2)).to_contain_text("ar_lead")
    expect(history.nth(-1)).to_contain_text(note)

    tab.goto("/console/exceptions")
    expect(tab.locator("table#exceptions", has_text=item_id)).to_have_count(0)


# --- 4. reconciliation --------------------------------------------------------------------


def test_start_a_reconciliation_and_watch_it_finish(tab: Page, served: Served) -> None:
    tab.goto("/console/reconciliation")
    as_of = tab.locator('form#start-run input[name="as_of"]')
    if not as_of.input_value():
        as_of.fill(datetime.now(UTC).date().isoformat())
    submit(tab, "form#start-run")
    expect(tab).to_have_url(re.compile(r"/console/reconciliation/rec_[0-9A-Za-z]+"))
    expect(tab.locator("#progress")).to_have_attribute("data-status", "completed", timeout=30_000)
    run_id = tab.url.rstrip("/").split("/")[-1].split("?")[0]
    run = served.get(f"/v1/reconciliation_runs/{run_id}")
    assert run["status"] == "completed"
    expect(tab.locator("table#counts")).to_contain_text(str(run["invoices_checked"]))
    expect(tab.locator("#findings")).to_be_visible()


# --- 5. exports ---------------------------------------------------------------------------


@dataclass
class CsvExport:
    id: str
    period: str
    erp_ids: dict[str, str]  # export row id -> ERP record id


@pytest.fixture(scope="module")
def csv_export(console: Console, served: Served) -> CsvExport:
    """A csv export of the paid invoice's period made with the console form, downloaded from
    the page (the bytes are the API's file) and then acknowledged by the 'ERP' via the API."""
    page = console.page
    trace = served.get(f"/v1/invoices/{served.paid_invoice['id']}/trace")
    period = trace["journal_entries"][0]["period"]
    assert period == datetime.now(UTC).strftime("%Y-%m")  # the demo's books are this month's
    page.goto("/console/exports")
    page.select_option('form#create-export select[name="format"]', "csv")
    page.fill('form#create-export input[name="period"]', period)
    submit(page, "form#create-export")
    expect(page).to_have_url(re.compile(r"/console/exports/exp_[0-9A-Za-z]+"))
    export_id = page.url.split("/console/exports/")[1].split("?")[0]
    exported = served.get(f"/v1/exports/{export_id}")
    assert (exported["format"], exported["period"]) == ("csv", period)
    expect(page.locator("table#export-rows tbody tr").first).to_be_visible()

    with page.expect_download() as download:
        page.locator("a#download").click()
    saved = Path(download.value.path())
    api_file = served.api.get(f"/v1/exports/{export_id}/file")
    assert api_file.status_code == 200
    assert saved.read_bytes() == api_file.content
    assert download.value.suggested_filename == exported["filename"]

    rows: list[dict[str, Any]] = []
    cursor: dict[str, Any] = {"limit": 100}
    while True:
        listed = served.get(f"/v1/exports/{export_id}/rows", **cursor)
        rows += listed["data"]
        if not listed["has_more"]:
            break
        cursor["starting_after"] = listed["data"][-1]["id"]
    erp_ids = {row["id"]: f"ERP-{n:05d}" for n, row in enumerate(rows, start=1)}
    served.post(
        f"/v1/exports/{export_id}/acknowledge",
        {"rows": [{"id": row_id, "erp_record_id": erp} for row_id, erp in erp_ids.items()]},
    )
    console.watch.assert_clean()
    return CsvExport(export_id, period, erp_ids)


def test_create_download_and_see_the_acknowledged_export(
    tab: Page, served: Served, csv_export: CsvExport
) -> None:
    tab.goto(f"/console/exports/{csv_export.id}")
    table = tab.locator("table#export-rows")
    expect(table).to_contain_text("synced")
    expect(table).to_contain_text(next(iter(csv_export.erp_ids.values())))
    expect(tab.locator("a#download")).to_have_attribute(
        "href", re.compile(rf"/console/exports/{csv_export.id}/")
    )


# --- 6. an invoice and its trace ----------------------------------------------------------


def test_open_the_paid_invoice_and_see_every_trace_link(
    tab: Page, served: Served, csv_export: CsvExport
) -> None:
    paid = served.paid_invoice
    tab.goto("/console/invoices")
    listed = [i["id"] for i in served.get("/v1/invoices", limit=100)["data"]]
    links = tab.locator('table#invoices a[href^="/console/invoices/in_"]')
    hrefs: list[str] = []
    for href in links.evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        if href not in hrefs:
            hrefs.append(href)
    assert hrefs == [f"/console/invoices/{i}" for i in listed], "every invoice, newest first"
    row = tab.locator("table#invoices tbody tr", has_text=paid["number"])
    with tab.expect_navigation():
        row.locator(f'a[href="/console/invoices/{paid["id"]}"]').first.click()
    expect(tab).to_have_url(f"{served.base_url}/console/invoices/{paid['id']}")

    body = tab.locator("main")
    expect(body).to_contain_text(paid["number"])
    expect(body).to_contain_text("paid")
    expect(body).to_contain_text(format_display(paid["total"], paid["currency"]))
    for line in paid["lines"]:
        expect(body).to_contain_text(line["description"])
    pdf_href = tab.locator("a#pdf-link").get_attribute("href")
    assert pdf_href
    pdf = tab.request.get(pdf_href)
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF"), pdf.status

    trace = served.get(f"/v1/invoices/{paid['id']}/trace")
    timeline = tab.locator("ol.timeline#trace")
    for kind in ("request", "provider_event", "payment", "journal_entry", "export_row"):
        expect(timeline.locator(f'li[data-kind="{kind}"]').first).to_be_visible()
    for section in TRACE_SECTIONS:
        expect(body.get_by_role("heading", name=section, exact=True)).to_be_visible()
    for request in trace["requests"]:
        expect(timeline).to_contain_text(request["request_id"])
        if request["idempotency_key"]:
            expect(timeline).to_contain_text(request["idempotency_key"])
    for event in trace["provider_events"]:
        expect(timeline).to_contain_text(event["verification"])
    for payment in trace["payments"]:
        expect(timeline.get_by_text(payment["reference"]).first).to_be_visible()
    for entry in trace["journal_entries"]:
        expect(timeline).to_contain_text(entry["id"])
    shown_erp = [erp for erp in csv_export.erp_ids.values() if erp in timeline.inner_text()]
    assert shown_erp, "the invoice's export rows show the ERP's record ids"
    screenshot(tab, "console-invoice-trace.png", height=2600)


def test_another_accounts_url_is_404_and_shows_nothing(console: Console, served: Served) -> None:
    tab = console.page
    other = served.other_invoice
    for path in (
        f"/console/invoices/{other['id']}",
        f"/console/exceptions/exc_{'0' * 26}",
        f"/console/invoices/in_{'0' * 26}",
    ):
        console.watch.expected_status[f"{served.base_url}{path}"] = 404
        response = tab.goto(path)
        assert response is not None and response.status == 404, path
        content = tab.content()
        for secret in (other["number"], other["customer"], "Secret Other Customer"):
            assert secret not in content, (path, secret)
    console.watch.assert_clean()


# --- 7. sign out --------------------------------------------------------------------------


def test_sign_out_ends_the_session(browser: Browser, served: Served) -> None:
    context, watch = new_context(browser, served)
    page = context.new_page()
    sign_in(page, served.secret_key)
    session = [c for c in context.cookies() if c["name"] == "it_console"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
    with page.expect_navigation():
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/login(\?.*)?$"))
    page.goto("/console")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    expect(page.get_by_role("link", name="Sign out")).to_have_count(0)
    # The old cookie, replayed, is no session any more.
    context.add_cookies(session)  # type: ignore[arg-type]
    page.goto("/console/exceptions")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    context.close()
    watch.assert_clean()
