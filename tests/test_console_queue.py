"""The ops console's overview and exception queue, driven like a browser: sign in with the
secret key, read the HTML, submit the forms (CSRF token + idempotency key) and check the
result through the API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import Api
from invoicetrail.core.context import Ctx
from invoicetrail.core.db import write_transaction
from invoicetrail.core.http import AppState
from invoicetrail.core.ids import new_id
from invoicetrail.exceptions import service as exceptions
from invoicetrail.payments import jobs as payments_jobs


class Forms(HTMLParser):
    """Every form of a page by id: its action and its fields' current values."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, Any]] = {}
        self._current: dict[str, Any] | None = None
        self._textarea: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._current = {"action": values.get("action", ""), "fields": {}}
            self.forms[values.get("id", f"form{len(self.forms)}")] = self._current
        elif self._current is not None and tag in ("input", "select") and "name" in values:
            self._current["fields"][values["name"]] = values.get("value", "")
        elif self._current is not None and tag == "textarea":
            self._textarea = values.get("name")
            self._current["fields"][values["name"]] = ""

    def handle_data(self, data: str) -> None:
        if self._current is not None and self._textarea:
            self._current["fields"][self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        elif tag == "textarea":
            self._textarea = None


def section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}"[^>]*>(.*?)</section>', html, re.S)
    assert match, f"no section #{section_id}"
    return match.group(1)


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="(exc_[^"]+)"', html)


def shown(amount_minor: int) -> str:
    """Two-decimal currencies as the console shows them: grouped major units."""
    major, minor = divmod(amount_minor, 100)
    return f"{major:,}.{minor:02d}"


def plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


@pytest.fixture
def console(client: TestClient, api: Api) -> Iterator[TestClient]:
    """A browser of its own (its own cookies), signed in with the account's secret key."""
    browser = TestClient(client.app, base_url="http://testserver")
    login = browser.get("/console/login")
    csrf = Forms(login.text).forms["form0"]["fields"]["csrf_token"]
    signed = browser.post(
        "/console/login",
        data={"csrf_token": csrf, "secret_key": api.secret_key},
        follow_redirects=False,
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/console"
    yield browser
    browser.close()


def state_of(api: Api) -> AppState:
    state: AppState = api.client.app.state.invoicetrail  # type: ignore[attr-defined]
    return state


def raise_item(
    api: Api,
    kind: str = "unmatched_transfer",
    *,
    invoice: str | None = None,
    payment: str | None = None,
    due_in: timedelta = timedelta(hours=24),
) -> dict[str, Any]:
    """An item as a check or an inbound event would raise it (same service function)."""
    state = state_of(api)
    with write_transaction(state.sessions) as session:
        ctx = Ctx(session, api.account_id, new_id("req"), state.clock.now(), state.settings)
        item = exceptions.raise_item(
            ctx,
            kind,
            refs={"invoice": invoice, "payment": payment or new_id("py")},
            next_action=f"look into {kind}",
            detail={"payment_reference": "ref-1"},
            due_in=due_in,
        )
        item_id = item.id
        session.commit()
    return item_of(api, item_id)


def item_of(api: Api, item_id: str) -> dict[str, Any]:
    return api.ok(api.get(f"/v1/exception_items/{item_id}"))


def submit(
    console: TestClient, item_id: str, form_id: str, **fields: str
) -> tuple[httpx.Response, dict[str, str]]:
    """Fills one of the item page's forms as shown (CSRF token, fresh key) and posts it."""
    page = console.get(f"/console/exceptions/{item_id}")
    assert page.status_code == 200, page.text
    form = Forms(page.text).forms[form_id]
    data = {**form["fields"], **fields}
    response = console.post(form["action"], data=data, follow_redirects=False)
    return response, data


# --- the overview ---------------------------------------------------------------------------


def test_the_overview_counts_invoices_money_payments_exceptions_and_checks(
    console: TestClient, api: Api
) -> None:
    api.open_invoice()
    late = api.open_invoice(due_date="2020-01-31")
    api.draft()
    usd = api.open_invoice(currency="usd")
    api.ok(api.post("/v1/simulated/payments", {"invoice": usd["id"], "method": "ach"}))
    state = state_of(api)
    payments_jobs.send_due_simulated_events(state.sessions, state.clock, state.settings)
    raise_item(api, "unmatched_transfer", due_in=timedelta(hours=-1))
    raise_item(api, "export_failed")

    response = console.get("/console")
    assert response.status_code == 200
    html = response.text
    assert 'type="password"' not in html
    statuses = plain(section(html, "invoices-by-status"))
    # Per status: the total as a plain integer next to its name, then the currencies.
    assert re.search(r"\bopen 3 EUR 2 · USD 1\b", statuses), statuses
    assert re.search(r"\bdraft 1 EUR 1\b", statuses), statuses
    assert re.search(r"\bpaid 0 —", statuses), statuses

    amounts = plain(section(html, "amounts"))
    each = late["amount_remaining"]
    assert f"EUR 2 {shown(each * 2)} EUR 1 {shown(each)} EUR" in amounts, amounts

    ach = plain(section(html, "ach-processing"))
    assert f"1 payment · {shown(usd['amount_remaining'])} USD" in ach, ach

    owners = section(html, "exceptions-by-owner")
    assert 'href="/console/exceptions?owner=accounts_receivable"' in owners
    assert 'href="/console/exceptions?owner=accounts_receivable&amp;overdue=1"' in owners
    assert re.search(r"\b2 open\b.*\b1 overdue\b", plain(owners)), plain(owners)
    assert "No reconciliation has run yet" in section(html, "last-reconciliation")

    checks = dict(re.findall(r'<li data-check="([a-z_]+)" data-ok="(true|false)"', html))
    assert checks["ownership"] == "false"
    assert checks["exceptions_past_due"] == "false"
    assert "provider_endpoint" in checks

    run = api.ok(api.post("/v1/reconciliation_runs", {}))
    last = section(console.get("/console").text, "last-reconciliation")
    assert f'href="/console/reconciliation/{run["id"]}"' in last
    assert "matched" in last


def test_the_overview_shows_one_account_only(console: TestClient, api: Api, other_api: Api) -> None:
    other_api.open_invoice()
    raise_item(other_api, "export_failed")
    html = console.get("/console").text
    assert re.search(r"\bopen 0 —", plain(section(html, "invoices-by-status")))
    assert other_api.account_id not in html
    assert "0 open" in plain(section(html, "exceptions-by-owner"))


# --- the queue ------------------------------------------------------------------------------


def test_the_queue_lists_open_items_and_filters(console: TestClient, api: Api) -> None:
    invoice = api.open_invoice()
    late = raise_item(api, "unmatched_transfer", invoice=invoice["id"], due_in=timedelta(hours=-2))
    fresh = raise_item(api, "export_failed")
    done = raise_item(api, "amount_mismatch")
    api.ok(api.post(f"/v1/exception_items/{done['id']}/resolve", {"note": "fixed"}))

    html = console.get("/console/exceptions").text
    assert set(row_ids(html)) == {late["id"], fresh["id"]}
    assert f'<a href="/console/exceptions/{late["id"]}">' in html
    assert f'href="/console/invoices/{invoice["id"]}"' in html
    assert 'class="sortable" id="exceptions"' in html
    late_row = re.search(rf'<tr data-id="{late["id"]}".*?</tr>', html, re.S)
    assert late_row and 'class="badge overdue"' in late_row.group(0)
    fresh_row = re.search(rf'<tr data-id="{fresh["id"]}".*?</tr>', html, re.S)
    assert fresh_row and 'data-overdue="false"' in fresh_row.group(0)
    assert 'class="badge overdue"' not in fresh_row.group(0)

    def listed(**params: str) -> set[str]:
        response = console.get("/console/exceptions", params=params)
        assert response.status_code == 200, response.text
        return set(row_ids(response.text))

    assert listed(kind="export_failed") == {fresh["id"]}
    assert listed(owner="accounting") == {fresh["id"]}
    assert listed(owner="accounts_receivable") == {late["id"]}
    assert listed(overdue="1") == {late["id"]}
    assert listed(status="resolved") == {done["id"]}
    assert listed(status="all") == {late["id"], fresh["id"], done["id"]}
    assert listed(status="snoozed") == set()
    assert console.get("/console/exceptions", params={"status": "gone"}).status_code == 400


def test_the_queue_pages_by_25(console: TestClient, api: Api) -> None:
    made = [raise_item(api)["id"] for _ in range(27)]
    first = console.get("/console/exceptions").text
    ids = row_ids(first)
    assert ids == list(reversed(made))[:25]
    link = re.search(
        r'href="(/console/exceptions\?status=open&amp;starting_after=exc_[^"]+)"', first
    )
    assert link, first
    second = console.get(link.group(1).replace("&amp;", "&")).text
    assert row_ids(second) == list(reversed(made))[25:]
    assert "starting_after=" not in second.split('class="pager"')[1].split("</nav>")[0]


# --- one item -------------------------------------------------------------------------------


def test_the_item_page_shows_refs_history_and_the_forms(console: TestClient, api: Api) -> None:
    invoice = api.open_invoice()
    item = raise_item(api, "unmatched_transfer", invoice=invoice["id"])
    html = console.get(f"/console/exceptions/{item['id']}").text
    assert f'<a href="/console/invoices/{invoice["id"]}" data-ref="invoice">' in html
    payment = item["refs"]["payment"]
    assert f'data-ref="payment"><code>{payment}</code></a>' in html
    assert f'href="/console/payments?invoice={invoice["id"]}#{payment}"' in html
    assert item["next_action"] in html
    assert '<ol id="history"' in html and 'data-action="created"' in html
    forms = Forms(html).forms
    assert forms["assign"]["action"] == f"/console/exceptions/{item['id']}/assign"
    assert forms["snooze"]["action"] == f"/console/exceptions/{item['id']}/snooze"
    assert forms["resolve"]["action"] == f"/console/exceptions/{item['id']}/resolve"
    for form in forms.values():
        if form["action"].startswith("/console/exceptions/"):
            assert form["fields"]["csrf_token"] and form["fields"]["idempotency_key"]


def test_assign_snooze_resolve_through_the_forms(console: TestClient, api: Api) -> None:
    item = raise_item(api)

    assigned, _ = submit(console, item["id"], "assign", owner="dana@finance", note="mine")
    assert assigned.status_code == 303
    assert assigned.headers["location"].startswith(f"/console/exceptions/{item['id']}?flash=")
    after = item_of(api, item["id"])
    assert after["owner"] == "dana@finance"
    entry = after["history"][-1]
    assert entry["action"] == "assigned" and entry["owner"] == "dana@finance"
    assert entry["note"] == "mine"
    assert entry["request_id"] == assigned.headers["request-id"]
    assert entry["actor"].startswith("api_key:")

    snoozed, _ = submit(console, item["id"], "snooze", hours="48")
    assert snoozed.status_code == 303
    after = item_of(api, item["id"])
    assert after["status"] == "snoozed" and after["snoozed_until"]
    assert after["history"][-1]["action"] == "snoozed"
    assert after["history"][-1]["request_id"] == snoozed.headers["request-id"]

    page = console.get(assigned.headers["location"]).text
    assert assigned.headers["request-id"] in section(page, "history-section")
    assert "Assigned to dana@finance." in page  # the notice the redirect carries

    resolved, _ = submit(console, item["id"], "resolve", note="refunded the sender")
    assert resolved.status_code == 303
    after = item_of(api, item["id"])
    assert after["status"] == "resolved"
    assert after["history"][-1]["note"] == "refunded the sender"
    assert after["history"][-1]["request_id"] == resolved.headers["request-id"]

    final = console.get(f"/console/exceptions/{item['id']}").text
    forms = Forms(final).forms
    assert not {"assign", "snooze", "resolve"} & set(forms)


def test_a_resubmitted_form_is_a_replay(console: TestClient, api: Api) -> None:
    item = raise_item(api)
    first, data = submit(console, item["id"], "assign", owner="sam")
    assert first.status_code == 303
    again = console.post(
        f"/console/exceptions/{item['id']}/assign", data=data, follow_redirects=False
    )
    assert again.status_code == 303
    history = item_of(api, item["id"])["history"]
    assert [e["action"] for e in history] == ["created", "assigned"]

    snoozed, snooze_data = submit(console, item["id"], "snooze", hours="2")
    assert snoozed.status_code == 303
    replay = console.post(
        f"/console/exceptions/{item['id']}/snooze", data=snooze_data, follow_redirects=False
    )
    assert replay.status_code == 303
    history = item_of(api, item["id"])["history"]
    assert [e["action"] for e in history] == ["created", "assigned", "snoozed"]

    # The same key with another body is refused, as by the API.
    reused = console.post(
        f"/console/exceptions/{item['id']}/assign",
        data={**data, "owner": "someone else"},
        follow_redirects=False,
    )
    assert reused.status_code == 422
    assert "already used" in reused.text
    assert item_of(api, item["id"])["owner"] == "sam"


def test_no_form_works_without_its_csrf_token(console: TestClient, api: Api) -> None:
    item = raise_item(api)
    page = console.get(f"/console/exceptions/{item['id']}").text
    for form_id, extra in (
        ("assign", {"owner": "mallory"}),
        ("snooze", {"hours": "5"}),
        ("resolve", {"note": "done"}),
    ):
        form = Forms(page).forms[form_id]
        fields = {**form["fields"], **extra}
        missing = {k: v for k, v in fields.items() if k != "csrf_token"}
        assert console.post(form["action"], data=missing).status_code == 403
        wrong = {**fields, "csrf_token": "not-the-token"}
        assert console.post(form["action"], data=wrong).status_code == 403
    assert item_of(api, item["id"]) == item


def test_another_accounts_item_is_not_found(console: TestClient, api: Api, other_api: Api) -> None:
    theirs = raise_item(other_api, "export_failed")
    page = console.get(f"/console/exceptions/{theirs['id']}")
    assert page.status_code == 404
    assert theirs["next_action"] not in page.text
    mine = raise_item(api)
    form = Forms(console.get(f"/console/exceptions/{mine['id']}").text).forms["assign"]
    posted = console.post(
        f"/console/exceptions/{theirs['id']}/assign",
        data={**form["fields"], "owner": "mallory"},
        follow_redirects=False,
    )
    assert posted.status_code == 404
    assert theirs["next_action"] not in posted.text
    assert item_of(other_api, theirs["id"]) == theirs
    assert console.get("/console/exceptions/exc_unknown").status_code == 404
    assert (
        console.get("/console/exceptions", params={"starting_after": theirs["id"]}).status_code
        == 404
    )


def test_resolve_without_a_note_is_refused_and_the_item_stays_open(
    console: TestClient, api: Api
) -> None:
    item = raise_item(api)
    refused, _ = submit(console, item["id"], "resolve", note="   ")
    assert refused.status_code == 400
    assert "needs a note" in refused.text
    assert 'role="alert"' in refused.text
    assert Forms(refused.text).forms["resolve"]["action"].endswith("/resolve")
    assert item_of(api, item["id"]) == item


def test_signed_out_pages_go_to_the_sign_in(client: TestClient, api: Api) -> None:
    browser = TestClient(client.app, base_url="http://testserver")
    item = raise_item(api)
    for path in ("/console", "/console/exceptions", f"/console/exceptions/{item['id']}"):
        response = browser.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/console/login"
    posted = browser.post(
        f"/console/exceptions/{item['id']}/resolve", data={"note": "x"}, follow_redirects=False
    )
    assert posted.status_code == 303
    assert item_of(api, item["id"]) == item
