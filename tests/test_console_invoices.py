"""Ops console: the invoice list, an invoice's page with its trace timeline and PDF, the
payments list and applying an unmatched transfer through the form (CSRF + idempotency key).

Driven through the real app with a signed-in console session; HTML read with html.parser."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from conftest import Api, create_account, make_settings
from invoicetrail.api import create_app
from invoicetrail.console.pages import payments as payments_page
from invoicetrail.core.clock import ManualClock
from invoicetrail.core.money import format_display
from test_exports import all_rows
from test_payment_evidence import (
    STRIPE_SECRET,
    SW_SECRET,
    Provider,
    items,
    payments_of,
    pi_event,
    sw_event,
)

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PERIOD = "2026-11"
TRACE_SECTIONS = [
    "Requests",
    "Provider events",
    "Payments",
    "Journal entries",
    "Export rows",
    "E-invoice submissions",
    "Exceptions",
]

# --- a tiny DOM ------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return re.sub(r"\s+", " ", " ".join(parts)).strip()

    def all(self, tag: str, **attrs: str) -> list[Node]:
        """Descendants by tag and attribute values (`class_` matches one of the classes)."""
        found: list[Node] = []
        for child in self.children:
            if isinstance(child, str):
                continue
            if child.tag == tag and all(
                value in child.attrs.get("class", "").split()
                if name == "class_"
                else child.attrs.get(name.replace("_", "-")) == value
                for name, value in attrs.items()
            ):
                found.append(child)
            found += child.all(tag, **attrs)
        return found

    def one(self, tag: str, **attrs: str) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]

    def hrefs(self) -> list[str]:
        return [a.attrs.get("href", "") for a in self.all("a")]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def dom(response: httpx.Response) -> Node:
    assert response.headers["content-type"].startswith("text/html"), response.headers
    builder = _Builder()
    builder.feed(response.text)
    return builder.root


# --- a signed-in console user ----------------------------------------------------------------


class Console:
    """A browser of its own (cookie jar) signed in with an account's secret key."""

    def __init__(self, app: FastAPI, secret_key: str) -> None:
        self.client = TestClient(app, base_url="http://testserver")
        login = dom(self.client.get("/console/login"))
        csrf = login.one("input", name="csrf_token").attrs["value"]
        signed = self.client.post(
            "/console/login",
            data={"csrf_token": csrf, "secret_key": secret_key},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        assert signed.headers["location"] == "/console"

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        response: httpx.Response = self.client.get(path, params=params, follow_redirects=False)
        return response

    def page(self, path: str, params: dict[str, str] | None = None) -> Node:
        response = self.get(path, params)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        return dom(response)

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        response: httpx.Response = self.client.post(path, data=data, follow_redirects=False)
        return response


def console_of(api: Api) -> Console:
    return Console(api.client.app, api.secret_key)  # type: ignore[arg-type]


def form_fields(form: Node) -> dict[str, str]:
    return {
        i.attrs["name"]: i.attrs.get("value", "") for i in form.all("input") if "name" in i.attrs
    }


# --- the chain of test_trace: paid by a signed webhook, exported, acknowledged ---------------


@pytest.fixture
def timed(db_url: str) -> Iterator[tuple[Api, ManualClock]]:
    clock = ManualClock(START)
    app = create_app(make_settings(db_url), clock)
    with TestClient(app) as client:
        account_id, key = create_account(app.state.invoicetrail)
        yield Api(client=client, account_id=account_id, secret_key=key), clock


@dataclass
class Chain:
    invoice: dict[str, Any]
    create_request_id: str
    create_key: str
    finalize_request_id: str
    webhook_request_id: str
    provider_event: str  # pev_…
    provider_event_id: str  # the provider's evt_…
    reference: str  # the payment intent
    payment: str
    batch: str
    erp_ids: dict[str, str]  # export row id → ERP record id


def paid_exported_acknowledged(api: Api, clock: ManualClock) -> Chain:
    def later() -> None:
        clock.advance(timedelta(minutes=1))

    stripe = Provider(api, "stripe", STRIPE_SECRET)
    customer = api.customer()
    later()
    key = f"create-{uuid.uuid4().hex}"
    body = {
        "customer": customer["id"],
        "currency": "eur",
        "lines": [{"description": "Plan", "quantity": "1", "unit_amount": 1000, "tax_rate": "19"}],
    }
    created = api.post("/v1/invoices", body, key=key)
    invoice_id = api.ok(created)["id"]
    later()
    finalized = api.post(f"/v1/invoices/{invoice_id}/finalize")
    invoice = api.ok(finalized)
    later()
    pi = f"pi_{uuid.uuid4().hex[:20]}"
    event = pi_event("payment_intent.succeeded", invoice, pi=pi, amount=invoice["total"])
    webhook = stripe.send_stripe(event, at=int(clock.now().timestamp()))
    assert webhook.json()["outcome"] == "applied", webhook.text
    later()
    batch = api.ok(api.post("/v1/exports", {"format": "csv", "period": PERIOD}))
    rows = all_rows(api, batch["id"])
    later()
    erp_ids = {row["id"]: f"GL-{n}" for n, row in enumerate(rows, start=1)}
    api.ok(
        api.post(
            f"/v1/exports/{batch['id']}/acknowledge",
            {"rows": [{"id": row_id, "erp_record_id": erp} for row_id, erp in erp_ids.items()]},
        )
    )
    later()
    [payment] = payments_of(api, invoice_id)
    return Chain(
        invoice=api.ok(api.get(f"/v1/invoices/{invoice_id}")),
        create_request_id=created.headers["Request-Id"],
        create_key=key,
        finalize_request_id=finalized.headers["Request-Id"],
        webhook_request_id=webhook.headers["Request-Id"],
        provider_event=webhook.json()["provider_event"],
        provider_event_id=event["id"],
        reference=pi,
        payment=payment["id"],
        batch=batch["id"],
        erp_ids=erp_ids,
    )


# --- the invoice page ------------------------------------------------------------------------


def test_invoice_page_shows_every_trace_link(timed: tuple[Api, ManualClock]) -> None:
    api, clock = timed
    chain = paid_exported_acknowledged(api, clock)
    invoice = chain.invoice
    assert invoice["status"] == "paid"
    console = console_of(api)

    response = console.get(f"/console/invoices/{invoice['id']}")
    assert response.status_code == 200, response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = dom(response)
    assert invoice["number"] in page.one("h1").text()
    assert not page.all("input", type="password")
    assert page.one("span", id="invoice-status").text() == "paid"
    assert page.one("section", id="invoice-header").one("time", datetime=invoice["finalized_at"])
    totals = page.one("table", id="invoice-totals").text()
    assert format_display(invoice["total"], "eur") in totals
    assert "11.90 EUR" in totals
    lines = page.one("table", id="invoice-lines").text()
    assert "Plan" in lines and "10.00 EUR" in lines and "19 %" in lines
    headings = [h.text() for h in page.all("h3")]
    assert headings[: len(TRACE_SECTIONS)] == TRACE_SECTIONS

    timeline = page.one("ol", id="trace")
    assert "timeline" in timeline.attrs["class"].split()
    entries = timeline.all("li")
    kinds = [li.attrs["data-kind"] for li in entries]
    assert {"request", "provider_event", "payment", "journal_entry", "export_row", "event"} <= set(
        kinds
    )
    instants = [li.all("time")[0].attrs["datetime"] for li in entries]
    assert instants == sorted(instants)  # time order
    # the chain's order at its instants: create → finalize → webhook → export → ack
    first = {kind: kinds.index(kind) for kind in set(kinds)}
    assert first["request"] < first["provider_event"] < first["payment"] < first["export_row"]

    def of_kind(kind: str) -> list[Node]:
        return [li for li in entries if li.attrs["data-kind"] == kind]

    requests = " ".join(li.text() for li in of_kind("request"))
    # request id → idempotency key
    create_li = next(li for li in of_kind("request") if chain.create_request_id in li.text())
    assert create_li.one("code", class_="request-id").text() == chain.create_request_id
    assert create_li.one("code", class_="idempotency-key").text() == chain.create_key
    assert chain.finalize_request_id in requests and chain.webhook_request_id in requests
    # provider event with its id and verification result
    [event_li] = of_kind("provider_event")
    assert event_li.one("code", class_="provider-event-id").text() == chain.provider_event_id
    assert chain.provider_event in event_li.text() and "verified" in event_li.text()
    # payment reference in full, status and amount
    [payment_li] = of_kind("payment")
    assert payment_li.one("code", class_="payment-reference").text() == chain.reference
    assert "succeeded" in payment_li.text() and "11.90 EUR" in payment_li.text()
    assert f"/console/payments?invoice={invoice['id']}#{chain.payment}" in payment_li.hrefs()
    # journal entries with their lines
    entries_text = " ".join(li.text() for li in of_kind("journal_entry"))
    assert f"finalize:{invoice['id']}" in entries_text
    assert f"receipt:{invoice['id']}:{chain.reference}" in entries_text
    assert "Assets:Receivable" in entries_text and "Assets:Clearing:Stripe" in entries_text
    for li in of_kind("journal_entry"):
        assert li.all("table", class_="entry-lines")
    # export rows with status, ERP record ids and their batch's page
    row_lis = of_kind("export_row")
    assert len(row_lis) == len(chain.erp_ids)
    for li in row_lis:
        row_id = li.all("code")[0].text()
        assert li.one("code", class_="erp-record-id").text() == chain.erp_ids[row_id]
        assert "synced" in li.text()
        assert f"/console/exports/{chain.batch}" in li.hrefs()
    # events by type
    event_types = {li.one("code", class_="event-type").text() for li in of_kind("event")}
    assert {"invoice.created", "invoice.finalized", "invoice.paid"} <= event_types
    # sections repeat the lists, references in full
    assert chain.reference in page.one("section", id="trace-payments").text()
    assert "GL-1" in page.one("section", id="trace-export-rows").text()
    assert "None." in page.one("section", id="trace-einvoice-submissions").text()
    assert f"/console/payments?invoice={invoice['id']}" in page.hrefs()

    pdf_link = page.one("a", id="pdf-link").attrs["href"]
    assert pdf_link == f"/console/invoices/{invoice['id']}/pdf"
    pdf = console.get(pdf_link)
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert (
        pdf.content == api.client.get(f"/v1/invoices/{invoice['id']}/pdf", headers=api.auth).content
    )


def test_exception_items_link_to_their_page(api: Api) -> None:
    invoice = api.open_invoice()
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    endpoint.send_sw(
        sw_event(
            "payment.succeeded",
            reference=f"usd-{uuid.uuid4().hex[:8]}",
            amount=400,
            currency="usd",
            invoice=invoice["id"],
            method="card",
        )
    )
    [item] = items(api, kind="amount_mismatch")
    assert item["refs"]["invoice"] == invoice["id"]
    page = console_of(api).page(f"/console/invoices/{invoice['id']}")
    [item_li] = [
        li for li in page.one("ol", id="trace").all("li") if li.attrs["data-kind"] == "exception"
    ]
    assert f"/console/exceptions/{item['id']}" in item_li.hrefs()
    assert item["kind"] in item_li.text()
    assert f"/console/exceptions/{item['id']}" in page.one("section", id="trace-exceptions").hrefs()


def test_a_draft_has_no_pdf(api: Api) -> None:
    draft = api.draft()
    console = console_of(api)
    page = console.page(f"/console/invoices/{draft['id']}")
    assert not page.all("a", id="pdf-link")
    assert page.one("span", id="invoice-status").text() == "draft"
    refused = console.get(f"/console/invoices/{draft['id']}/pdf")
    assert refused.status_code == 409
    assert "finalize it first" in dom(refused).one("p", role="alert").text()


# --- the list --------------------------------------------------------------------------------


def list_ids(page: Node) -> list[str]:
    table = page.one("table", id="invoices")
    assert "sortable" in table.attrs["class"].split()
    return [tr.attrs["id"] for tr in table.one("tbody").all("tr")]


def next_link(page: Node) -> str | None:
    links = page.one("nav", class_="pager").all("a")
    return links[0].attrs["href"] if links else None


def test_invoice_list_pages_and_filters(api: Api) -> None:
    first_customer = api.customer()["id"]
    second_customer = api.customer(name="Second Buyer")["id"]
    drafts = [api.draft(first_customer)["id"] for _ in range(26)]
    opened = [api.open_invoice(customer_id=second_customer) for _ in range(2)]
    newest_first = [i["id"] for i in reversed(opened)] + list(reversed(drafts))
    console = console_of(api)
    assert console.get("/console/invoices").status_code == 200
    unsigned = TestClient(api.client.app).get("/console/invoices", follow_redirects=False)
    assert unsigned.status_code == 303 and unsigned.headers["location"] == "/console/login"

    first = console.page("/console/invoices")
    assert list_ids(first) == newest_first[:25]
    row = first.one("tr", id=opened[-1]["id"])
    assert f"/console/invoices/{opened[-1]['id']}" in row.hrefs()
    assert opened[-1]["number"] in row.text() and "Second Buyer" in row.text()
    assert format_display(opened[-1]["total"], "eur") in row.text()
    assert format_display(opened[-1]["amount_remaining"], "eur") in row.text()
    assert row.all("span", class_="badge")[0].text() == "open"
    following = next_link(first)
    assert following == f"/console/invoices?starting_after={newest_first[24]}"
    second = console.page(following)
    assert list_ids(second) == newest_first[25:]
    assert next_link(second) is None

    only_open = console.page("/console/invoices", {"status": "open"})
    assert list_ids(only_open) == [i["id"] for i in reversed(opened)]
    by_customer = console.page("/console/invoices", {"customer": first_customer})
    assert list_ids(by_customer) == list(reversed(drafts))[:25]
    assert next_link(by_customer) == (
        f"/console/invoices?customer={first_customer}&starting_after={list(reversed(drafts))[24]}"
    )
    assert list_ids(console.page(next_link(by_customer) or "")) == [drafts[0]]
    none = console.page("/console/invoices", {"status": "paid", "customer": first_customer})
    assert not none.all("table", id="invoices") and "No invoices match" in none.text()
    assert console.get("/console/invoices", {"status": "bogus"}).status_code == 400


# --- payments --------------------------------------------------------------------------------


def payment_ids(page: Node) -> list[str]:
    tables = page.all("table", id="payments")
    return [tr.attrs["id"] for tr in tables[0].one("tbody").all("tr")] if tables else []


def unmatched_transfer(api: Api, endpoint: Provider, amount: int, currency: str = "eur") -> str:
    """A signed `transfer.received` whose reference code matches no invoice: parked money."""
    response = endpoint.send_sw(
        sw_event(
            "transfer.received",
            reference=f"bt-{uuid.uuid4().hex[:10]}",
            amount=amount,
            currency=currency,
            method="bank_transfer",
            reference_code="RF00 NOPE",
        )
    )
    assert response.json()["outcome"] == "unmatched", response.text
    [item] = [
        i
        for i in items(api, kind="unmatched_transfer")
        if i["refs"]["provider_event"] == response.json()["provider_event"]
    ]
    payment_id: str = item["refs"]["payment"]
    return payment_id


def test_payments_list_filters_and_pages(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    cash: list[tuple[str, str]] = []
    check: list[tuple[str, str]] = []
    for n in range(5):
        invoice = api.open_invoice()
        method = "cash" if n % 2 == 0 else "check"
        body = {"reference": f"man-{n}-{uuid.uuid4().hex[:6]}", "method": method}
        api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", body))
        [paid] = payments_of(api, invoice["id"])
        (cash if method == "cash" else check).append((paid["id"], invoice["id"]))
    parked = unmatched_transfer(api, endpoint, 1234)
    console = console_of(api)

    everything = console.page("/console/payments")
    assert payment_ids(everything) == [parked] + [p for p, _ in reversed(list(_merge(cash, check)))]
    row = everything.one("tr", id=parked)
    assert "12.34 EUR" in row.text() and "standard_webhooks" in row.text()
    assert row.all("time")  # received
    assert row.all("form", class_="apply")
    paid_row = everything.one("tr", id=cash[0][0])
    assert f"/console/invoices/{cash[0][1]}" in paid_row.hrefs() and not paid_row.all("form")

    assert payment_ids(console.page("/console/payments", {"unmatched": "1"})) == [parked]
    assert payment_ids(console.page("/console/payments", {"invoice": check[0][1]})) == [check[0][0]]
    assert payment_ids(console.page("/console/payments", {"provider": "standard_webhooks"})) == [
        parked
    ]
    assert payment_ids(
        console.page("/console/payments", {"method": "check", "provider": "manual"})
    ) == [p for p, _ in reversed(check)]
    assert payment_ids(console.page("/console/payments", {"status": "failed"})) == []
    assert console.get("/console/payments", {"status": "bogus"}).status_code == 400

    # method/provider are matched over the service's pages: small pages and a small scan
    # budget still walk every match once, in order
    want = [p for p, _ in reversed(cash)]
    for scan_max in (1, 2_000):
        monkeypatch.setattr(payments_page, "PAGE_SIZE", 2)
        monkeypatch.setattr(payments_page, "LIST_LIMIT_MAX", 2)
        monkeypatch.setattr(payments_page, "SCAN_ROWS_MAX", scan_max)
        seen: list[str] = []
        url: str | None = "/console/payments?method=cash"
        while url is not None:
            page = console.page(url)
            seen += payment_ids(page)
            url = next_link(page)
        assert seen == want, scan_max


def _merge(cash: list[tuple[str, str]], check: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Creation order of the alternating cash/check payments."""
    merged: list[tuple[str, str]] = []
    for n in range(len(cash) + len(check)):
        merged.append(cash[n // 2] if n % 2 == 0 else check[n // 2])
    return merged


def apply_form(console: Console, payment_id: str) -> tuple[str, dict[str, str]]:
    page = console.page("/console/payments", {"unmatched": "1"})
    form = page.one("tr", id=payment_id).one("form", class_="apply")
    assert form.attrs["method"] == "post"
    fields = form_fields(form)
    assert fields["csrf_token"] and fields["idempotency_key"].startswith("console-")
    assert "invoice" in fields
    return form.attrs["action"], fields


def test_apply_an_unmatched_transfer_through_the_form(api: Api) -> None:
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    invoice = api.open_invoice()
    dollars = api.open_invoice(currency="usd")
    parked = unmatched_transfer(api, endpoint, invoice["total"])
    [item] = [i for i in items(api, kind="unmatched_transfer") if i["refs"]["payment"] == parked]
    console = console_of(api)
    entries_before = len(api.ok(api.get("/v1/journal_entries", {"limit": 100}))["data"])

    def unchanged() -> None:
        assert api.ok(api.get(f"/v1/payments/{parked}"))["invoice"] is None
        assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["status"] == "open"
        assert api.ok(api.get(f"/v1/exception_items/{item['id']}"))["status"] == "open"

    # no CSRF token (or a wrong one): refused, nothing changes
    action, fields = apply_form(console, parked)
    assert action == f"/console/payments/{parked}/apply?unmatched=1"
    without = {k: v for k, v in fields.items() if k != "csrf_token"} | {"invoice": invoice["id"]}
    assert console.post(action, without).status_code == 403
    assert console.post(action, without | {"csrf_token": "forged"}).status_code == 403
    unchanged()

    # the API's refusals show its message on the list, and change nothing
    wrong_currency = console.post(action, fields | {"invoice": dollars["id"]})
    assert wrong_currency.status_code == 400
    shown = dom(wrong_currency)
    assert f"is in usd, payment {parked} in eur" in shown.one("p", role="alert").text()
    assert shown.all("tr", id=parked)  # the list, filters kept, ready to try again
    action, fields = apply_form(console, parked)
    unknown = console.post(action, fields | {"invoice": "in_doesnotexist"})
    assert unknown.status_code == 404
    assert "No such invoice" in dom(unknown).one("p", role="alert").text()
    unchanged()

    # applied: to the invoice page with a flash; the invoice is paid, the item resolved
    action, fields = apply_form(console, parked)
    applied = console.post(action, fields | {"invoice": invoice["id"]})
    assert applied.status_code == 303
    location = applied.headers["location"]
    assert urlsplit(location).path == f"/console/invoices/{invoice['id']}"
    assert "Applied payment" in parse_qs(urlsplit(location).query)["flash"][0]
    landed = console.page(location)
    assert "Applied payment" in landed.one("p", role="status").text()
    assert parked in landed.one("section", id="trace-payments").text()
    assert f"/console/exceptions/{item['id']}" in landed.one("ol", id="trace").hrefs()
    paid = api.ok(api.get(f"/v1/invoices/{invoice['id']}"))
    assert (paid["status"], paid["amount_paid"]) == ("paid", invoice["total"])
    resolved = api.ok(api.get(f"/v1/exception_items/{item['id']}"))
    assert resolved["status"] == "resolved"
    entries_after = len(api.ok(api.get("/v1/journal_entries", {"limit": 100}))["data"])
    assert entries_after == entries_before + 1

    # the same form again (a double click, a back-and-resubmit): a replay, never a second apply
    again = console.post(action, fields | {"invoice": invoice["id"]})
    assert again.status_code == 303 and urlsplit(again.headers["location"]).path == (
        f"/console/invoices/{invoice['id']}"
    )
    assert [p["id"] for p in payments_of(api, invoice["id"])] == [parked]
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["amount_paid"] == invoice["total"]
    assert len(api.ok(api.get("/v1/journal_entries", {"limit": 100}))["data"]) == entries_after
    history = api.ok(api.get(f"/v1/exception_items/{item['id']}"))["history"]
    assert [h for h in history if h.get("action") == "resolved"] == [
        h for h in resolved["history"] if h.get("action") == "resolved"
    ]
    # applied money has no form any more
    assert payment_ids(console.page("/console/payments", {"unmatched": "1"})) == []


# --- tenancy ---------------------------------------------------------------------------------


def test_another_accounts_objects_are_404(api: Api, other_api: Api) -> None:
    invoice = api.open_invoice()
    parked = unmatched_transfer(api, Provider(api, "standard_webhooks", SW_SECRET), 500)
    theirs = console_of(other_api)
    for path in (
        f"/console/invoices/{invoice['id']}",
        f"/console/invoices/{invoice['id']}/pdf",
        "/console/invoices/in_doesnotexist",
    ):
        response = theirs.get(path)
        assert response.status_code == 404, path
        assert invoice["number"] not in response.text and invoice["customer"] not in response.text
        assert "Not found" in dom(response).one("h1").text()
    assert invoice["id"] not in theirs.get("/console/invoices").text
    assert theirs.get("/console/invoices", {"starting_after": invoice["id"]}).status_code == 404
    assert payment_ids(theirs.page("/console/payments", {"invoice": invoice["id"]})) == []
    assert parked not in theirs.get("/console/payments").text

    # applying someone else's parked money through one's own session: the API's 404
    own_invoice = other_api.open_invoice()
    form = theirs.page("/console/payments")
    csrf = form.one("meta", name="csrf-token").attrs["content"]
    refused = theirs.post(
        f"/console/payments/{parked}/apply",
        {
            "csrf_token": csrf,
            "idempotency_key": f"console-{uuid.uuid4().hex}",
            "invoice": own_invoice["id"],
        },
    )
    assert refused.status_code == 404
    assert f"No such payment: '{parked}'" in dom(refused).one("p", role="alert").text()
    assert api.ok(api.get(f"/v1/payments/{parked}"))["invoice"] is None
