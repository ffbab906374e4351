"""Tenancy (OWASP API1, broken object level authorization): another account's objects answer
exactly like unknown ids, are never touched, and never show up in a list.

The matrix is complete by construction: `test_matrix_covers_every_route_with_an_object_id`
reads the app's OpenAPI and the console's routes and fails naming every route with a
`{…_id}` parameter that has no row here, so a new route cannot be forgotten. Every attempt
compares every row the two accounts own (all tables, child tables through their parent)
before and after, and A's view of the objects concerned, byte for byte.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient

import invoicetrail.models  # noqa: F401  (every table on Base.metadata)
from conftest import Api, create_account, row_counts
from invoicetrail.core.db import Base
from invoicetrail.core.ids import new_id
from invoicetrail.payments.endpoints import generate_secret

SELLER_PEPPOL = "0088:7300010000001"
BUYER_PEPPOL = "0088:4000001000005"
CROCKFORD_BODY = "[0-9A-HJKMNP-TV-Z]{26}"
ID_SHAPE = re.compile(rf"^[a-z]+_{CROCKFORD_BODY}[A-Z]?$")
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
OBJECT_ID_PARAM = re.compile(r"\{(\w+_id)\}")


# --- the two accounts ----------------------------------------------------------------------


class Console:
    """A browser of its own (cookie jar) signed in to the ops console with a secret key."""

    def __init__(self, app: FastAPI, secret_key: str) -> None:
        self.client = TestClient(app, base_url="http://testserver")
        login = self.client.get("/console/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token is not None, login.text
        signed = self.client.post(
            "/console/login",
            data={"csrf_token": token.group(1), "secret_key": secret_key},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        overview = self.client.get("/console")
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', overview.text)
        assert csrf is not None, overview.text
        self.csrf = csrf.group(1)

    def get(self, path: str) -> httpx.Response:
        response: httpx.Response = self.client.get(path, follow_redirects=False)
        return response

    def post(self, path: str, form: dict[str, str]) -> httpx.Response:
        data = {"csrf_token": self.csrf, "idempotency_key": f"console-{uuid.uuid4().hex}", **form}
        response: httpx.Response = self.client.post(path, data=data, follow_redirects=False)
        return response


@dataclass
class World:
    """One account's objects of every kind, by name, and the GET path that shows each."""

    api: Api
    marker: str
    ids: dict[str, str]
    reads: dict[str, str]
    numbers: list[str]
    endpoint_secret: str

    def __getitem__(self, name: str) -> str:
        return self.ids[name]

    def views(self) -> dict[str, bytes]:
        """The account's view of every one of its objects (reads are byte-stable)."""
        out: dict[str, bytes] = {}
        for path in sorted(set(self.reads.values())):
            response = self.api.get(path)
            assert response.status_code == 200, (path, response.text)
            out[path] = response.content
        return out


def finalize(api: Api, invoice_id: str) -> dict[str, Any]:
    return api.ok(api.post(f"/v1/invoices/{invoice_id}/finalize"))


def only(api: Api, path: str, **params: Any) -> dict[str, Any]:
    listed = api.ok(api.get(path, {"limit": 100, **params}))["data"]
    assert listed, (path, params)
    first: dict[str, Any] = listed[0]
    return first


def send_sw(api: Api, endpoint: dict[str, Any], secret: str, event: dict[str, Any]) -> Any:
    """A Standard Webhooks delivery to the endpoint, signed with `secret`."""
    body = json.dumps(event)
    msg_id = f"msg_{uuid.uuid4().hex}"
    when = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=body),
    }
    return api.client.post(endpoint["url"], content=body.encode(), headers=headers)


def sw_event(event_type: str, **data: Any) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {"type": event_type, "timestamp": now, "data": {"occurred_at": now, **data}}


def build_world(api: Api, *, full: bool) -> World:
    """Every kind of object an account can own. `full` adds the e-invoicing branch, a credit
    note, a reconciliation run with findings and the states A needs (draft, open, paid)."""
    marker = f"SECRET{uuid.uuid4().hex[:12]}"
    ids: dict[str, str] = {}
    numbers: list[str] = []
    customer = api.customer(
        name=f"{marker} GmbH",
        email=f"{marker.lower()}@example.com",
        external_reference=f"{marker}-customer",
        metadata={"secret": marker},
    )
    ids["customer"] = customer["id"]
    draft = api.draft(customer["id"], external_reference=f"{marker}-draft")
    ids["draft"], ids["default_entity"] = draft["id"], draft["legal_entity"]
    opened = finalize(api, api.draft(customer["id"], metadata={"m": marker})["id"])
    ids["open"] = opened["id"]
    paid = finalize(api, api.draft(customer["id"])["id"])
    paid = api.ok(api.post(f"/v1/invoices/{paid['id']}/pay", {"reference": f"{marker}-wire"}))
    assert paid["status"] == "paid"
    ids["paid"] = paid["id"]
    ids["payment"] = only(api, "/v1/payments", invoice=paid["id"])["id"]
    ids["entity"] = api.ok(
        api.post("/v1/legal_entities", {"name": f"{marker} Seller", "country": "FR"})
    )["id"]

    secret = generate_secret()
    endpoint = api.ok(
        api.post("/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": secret})
    )
    ids["provider_endpoint"] = endpoint["id"]
    processing = send_sw(
        api,
        endpoint,
        secret,
        sw_event(
            "payment.processing",
            payment_reference=f"{marker}-ach",
            invoice=opened["id"],
            amount=opened["total"],
            currency="eur",
            method="ach",
        ),
    )
    assert processing.status_code == 200, processing.text
    ids["provider_event"] = processing.json()["provider_event"]
    lost = send_sw(
        api,
        endpoint,
        secret,
        sw_event(
            "transfer.received",
            payment_reference=f"{marker}-lost",
            amount=777,
            currency="eur",
            method="bank_transfer",
            reference_code="NOPE-NOPE-0",
        ),
    )
    assert lost.status_code == 200 and lost.json()["outcome"] == "unmatched", lost.text
    unmatched = only(api, "/v1/exception_items", kind="unmatched_transfer")
    ids["item"], ids["parked_payment"] = unmatched["id"], unmatched["refs"]["payment"]

    journal_entry = only(api, "/v1/journal_entries", invoice=paid["id"])
    ids["journal_entry"] = journal_entry["id"]
    ids["event"] = only(api, "/v1/events")["id"]
    ids["webhook_endpoint"] = api.ok(
        api.post("/v1/webhook_endpoints", {"url": f"https://hooks.example.com/{marker}"})
    )["id"]

    if full:
        seller = api.ok(
            api.post(
                "/v1/legal_entities",
                {
                    "name": f"{marker} Seller GmbH",
                    "country": "DE",
                    "address": {
                        "line1": "Hauptstr. 1",
                        "city": "Berlin",
                        "postal_code": "10115",
                        "country": "DE",
                    },
                    "tax_ids": [{"type": "eu_vat", "value": "DE136695976"}],
                    "peppol_id": SELLER_PEPPOL,
                    "registration_id": "HRB 12345",
                    "bank_account": {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
                    "number_prefix": "DE" + uuid.uuid4().hex[:4].upper(),
                },
            )
        )
        buyer = api.customer(
            name="Buyer BV",
            address={"line1": "Dam 1", "city": "Amsterdam", "postal_code": "1012", "country": "NL"},
            tax_ids=[{"type": "eu_vat", "value": "NL004495445B01"}],
            peppol_id=BUYER_PEPPOL,
            email="ap@buyer.example",
        )
        peppol = api.draft(
            buyer["id"],
            legal_entity=seller["id"],
            collection_method="send_invoice",
            due_date="2099-12-02",
            buyer_reference=f"{marker}-PO",
        )
        peppol = finalize(api, peppol["id"])
        numbers.append(peppol["number"])  # its own prefix: no other account has it
        ids["peppol_entity"], ids["peppol_customer"] = seller["id"], buyer["id"]
        ids["peppol_invoice"] = peppol["id"]
        ids["einvoice"] = only(api, "/v1/einvoices", invoice=peppol["id"])["id"]
        credit_note = api.ok(
            api.post(
                "/v1/credit_notes",
                {
                    "invoice": peppol["id"],
                    "reason": f"{marker} goodwill",
                    "lines": [
                        {"description": "W", "quantity": "1", "unit_amount": 100, "tax_rate": "19"}
                    ],
                },
            )
        )
        ids["credit_note"] = credit_note["id"]

    export = api.ok(api.post("/v1/exports", {"format": "csv", "period": journal_entry["period"]}))
    ids["export"] = export["id"]
    rows = api.ok(api.get(f"/v1/exports/{export['id']}/rows", {"limit": 100}))["data"]
    assert len(rows) >= 2
    ids["export_row"] = rows[0]["id"]
    api.ok(
        api.post(
            f"/v1/exports/{export['id']}/acknowledge",
            {"rows": [{"id": rows[-1]["id"], "error": f"{marker} refused by the ERP"}]},
        )
    )
    ids["failed_item"] = only(api, "/v1/exception_items", kind="export_failed")["id"]
    run = api.ok(api.post("/v1/reconciliation_runs", {}))
    ids["run"] = run["id"]
    if full:
        findings = api.ok(api.get(f"/v1/reconciliation_runs/{run['id']}/findings"))["data"]
        assert findings, "A's run has findings (the parked payment, the failed export row)"

    reads = {
        "customer": f"/v1/customers/{ids['customer']}",
        "draft": f"/v1/invoices/{ids['draft']}",
        "open": f"/v1/invoices/{ids['open']}",
        "paid": f"/v1/invoices/{ids['paid']}",
        "payment": f"/v1/payments/{ids['payment']}",
        "parked_payment": f"/v1/payments/{ids['parked_payment']}",
        "entity": f"/v1/legal_entities/{ids['entity']}",
        "default_entity": f"/v1/legal_entities/{ids['default_entity']}",
        "provider_endpoint": f"/v1/provider_endpoints/{ids['provider_endpoint']}",
        "provider_event": f"/v1/provider_events/{ids['provider_event']}",
        "item": f"/v1/exception_items/{ids['item']}",
        "failed_item": f"/v1/exception_items/{ids['failed_item']}",
        "journal_entry": f"/v1/journal_entries/{ids['journal_entry']}",
        "event": f"/v1/events/{ids['event']}",
        "webhook_endpoint": f"/v1/webhook_endpoints/{ids['webhook_endpoint']}",
        "export": f"/v1/exports/{ids['export']}",
        "export_row": f"/v1/exports/{ids['export']}/rows/{ids['export_row']}",
        "run": f"/v1/reconciliation_runs/{ids['run']}",
    }
    if full:
        reads |= {
            "peppol_entity": f"/v1/legal_entities/{ids['peppol_entity']}",
            "peppol_customer": f"/v1/customers/{ids['peppol_customer']}",
            "peppol_invoice": f"/v1/invoices/{ids['peppol_invoice']}",
            "einvoice": f"/v1/einvoices/{ids['einvoice']}",
            "credit_note": f"/v1/credit_notes/{ids['credit_note']}",
        }
    return World(api, marker, ids, reads, numbers, secret)


# Derived reads: what A sees through an object besides the object itself.
def extra_reads(world: World) -> list[str]:
    ids = world.ids
    return [
        f"/v1/invoices/{ids['paid']}/trace",
        f"/v1/invoices/{ids['open']}/trace",
        f"/v1/invoices/{ids['peppol_invoice']}/trace",
        f"/v1/invoices/{ids['open']}/pdf",
        f"/v1/einvoices/{ids['einvoice']}/document",
        f"/v1/exports/{ids['export']}/file",
        f"/v1/exports/{ids['export']}/rows?limit=100",
        f"/v1/reconciliation_runs/{ids['run']}/findings",
        f"/v1/events/{ids['event']}/deliveries",
    ]


# Every table an account's rows live in: its own `account_id`, or its parent's.
CHILD_TABLES: dict[str, tuple[str, str, str]] = {
    # table: (its column, parent table, the parent's column)
    "invoice_lines": ("invoice_id", "invoices", "id"),
    "number_sequences": ("legal_entity_id", "legal_entities", "id"),
    "einvoice_certificates": ("legal_entity_id", "legal_entities", "id"),
    "provider_endpoint_secrets": ("endpoint_id", "provider_endpoints", "id"),
    "provider_event_keys": ("endpoint_id", "provider_endpoints", "id"),
    "webhook_endpoint_secrets": ("endpoint_id", "webhook_endpoints", "id"),
    "webhook_attempts": ("delivery_id", "webhook_deliveries", "id"),
    "reconciliation_findings": ("run_id", "reconciliation_runs", "id"),
    "export_batch_rows": ("batch_seq", "export_batches", "seq"),
}


def account_rows(engine: Engine, account_ids: list[str]) -> dict[str, list[str]]:
    """Every row the accounts own, table by table, as sorted reprs."""
    tables = Base.metadata.tables
    out: dict[str, list[str]] = {}
    with engine.connect() as connection:
        for name, table in tables.items():
            if name == "accounts":
                stmt = select(table).where(table.c.id.in_(account_ids))
            elif "account_id" in table.c:
                stmt = select(table).where(table.c.account_id.in_(account_ids))
            else:
                column, parent_name, key = CHILD_TABLES[name]
                parent = tables[parent_name]
                stmt = (
                    select(table)
                    .join(parent, parent.c[key] == table.c[column])
                    .where(parent.c.account_id.in_(account_ids))
                )
            out[name] = sorted(repr(tuple(row)) for row in connection.execute(stmt))
    return out


@dataclass(frozen=True)
class Tenants:
    a: World
    b: World
    b_console: Console
    engine: Engine
    a_views: dict[str, bytes]  # A's view of its objects before B tried anything

    def rows(self) -> dict[str, list[str]]:
        return account_rows(self.engine, [self.a.api.account_id, self.b.api.account_id])


@pytest.fixture(scope="module")
def tenants(client: TestClient) -> Tenants:
    """A with its world and B with its own, built once per backend: every test still compares
    both accounts' rows and A's objects before and after, so later tests see earlier leaks."""
    state = client.app.state.invoicetrail  # type: ignore[attr-defined]
    a = build_world(Api(client, *create_account(state)), full=True)
    b = build_world(Api(client, *create_account(state)), full=False)
    a.reads |= {path: path for path in extra_reads(a)}
    b_console = Console(client.app, b.api.secret_key)  # type: ignore[arg-type]
    return Tenants(a, b, b_console, state.engine, a.views())


# --- the matrix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One attempt: B's request naming A's objects. `ids` maps each path parameter to a world
    name (A's, or B's own when written `b:name`); `<a:name>`/`<b:name>` in the body too."""

    method: str
    template: str
    ids: tuple[tuple[str, str], ...]
    body: Any = None

    @property
    def label(self) -> str:
        named = ",".join(f"{param}={name}" for param, name in self.ids)
        return f"{self.method} {self.template} [{named}]"

    def a_names(self) -> list[str]:
        return [name for _param, name in self.ids if not name.startswith("b:")]

    def path(self, a: dict[str, str], b: dict[str, str]) -> str:
        path = self.template
        for param, name in self.ids:
            value = b[name[2:]] if name.startswith("b:") else a[name]
            path = path.replace("{" + param + "}", value)
        assert "{" not in path.replace("{provider}", ""), path
        return path

    def filled_body(self, a: dict[str, str], b: dict[str, str]) -> Any:
        return fill(self.body, a, b)


def case(method: str, template: str, body: Any = None, **ids: str) -> Case:
    return Case(method, template, tuple(ids.items()), body)


def fill(value: Any, a: dict[str, str], b: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: fill(v, a, b) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, a, b) for v in value]
    if isinstance(value, str) and (found := re.fullmatch(r"<([ab]):(\w+)>", value)):
        return (a if found.group(1) == "a" else b)[found.group(2)]
    return value


INVOICES = ("draft", "open", "paid", "peppol_invoice")
ITEMS = ("item", "failed_item")
FAR_FUTURE = "2099-01-01T00:00:00Z"

API_MATRIX: list[Case] = [
    *[
        case("GET", "/v1/legal_entities/{entity_id}", entity_id=n)
        for n in ("entity", "default_entity", "peppol_entity")
    ],
    *[
        case("GET", "/v1/customers/{customer_id}", customer_id=n)
        for n in ("customer", "peppol_customer")
    ],
    case("PATCH", "/v1/customers/{customer_id}", {"name": "Hijacked"}, customer_id="customer"),
    *[
        c
        for n in INVOICES
        for c in (
            case("GET", "/v1/invoices/{invoice_id}", invoice_id=n),
            case("PATCH", "/v1/invoices/{invoice_id}", {"metadata": {"o": "B"}}, invoice_id=n),
            case("POST", "/v1/invoices/{invoice_id}/finalize", invoice_id=n),
            case("POST", "/v1/invoices/{invoice_id}/send", invoice_id=n),
            case("POST", "/v1/invoices/{invoice_id}/void", invoice_id=n),
            case("POST", "/v1/invoices/{invoice_id}/mark_uncollectible", invoice_id=n),
            case("POST", "/v1/invoices/{invoice_id}/pay", {"reference": "b-wire"}, invoice_id=n),
            case("GET", "/v1/invoices/{invoice_id}/pdf", invoice_id=n),
            case("GET", "/v1/invoices/{invoice_id}/emails", invoice_id=n),
            case("GET", "/v1/invoices/{invoice_id}/trace", invoice_id=n),
        )
    ],
    case(
        "POST",
        "/v1/invoices/{invoice_id}/pay",
        {"reference": "b-2", "amount": 5},
        invoice_id="paid",
    ),
    case("GET", "/v1/credit_notes/{note_id}", note_id="credit_note"),
    case("GET", "/v1/einvoices/{einvoice_id}", einvoice_id="einvoice"),
    case("GET", "/v1/einvoices/{einvoice_id}/document", einvoice_id="einvoice"),
    case("POST", "/v1/einvoices/{einvoice_id}/correct", {"note": "B"}, einvoice_id="einvoice"),
    case("POST", "/v1/einvoices/{einvoice_id}/approve", {"note": "B"}, einvoice_id="einvoice"),
    case("POST", "/v1/einvoices/{einvoice_id}/cancel", {"reason": "B"}, einvoice_id="einvoice"),
    *[
        case("GET", "/v1/payments/{payment_id}", payment_id=n)
        for n in ("payment", "parked_payment")
    ],
    *[
        case("POST", "/v1/payments/{payment_id}/apply", {"invoice": "<b:open>"}, payment_id=n)
        for n in ("payment", "parked_payment")
    ],
    case("GET", "/v1/provider_endpoints/{endpoint_id}", endpoint_id="provider_endpoint"),
    case(
        "POST",
        "/v1/provider_endpoints/{endpoint_id}/rotate_secret",
        endpoint_id="provider_endpoint",
    ),
    case(
        "POST",
        "/v1/provider_endpoints/{endpoint_id}/rotate_secret",
        {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "expire_previous_after_seconds": 0},
        endpoint_id="provider_endpoint",
    ),
    case("GET", "/v1/provider_events/{event_id}", event_id="provider_event"),
    case("GET", "/v1/events/{event_id}", event_id="event"),
    case("GET", "/v1/events/{event_id}/deliveries", event_id="event"),
    case("POST", "/v1/events/{event_id}/redeliver", event_id="event"),
    case(
        "POST",
        "/v1/events/{event_id}/redeliver",
        {"webhook_endpoint": "<b:webhook_endpoint>"},
        event_id="event",
    ),
    *[
        c
        for n in ITEMS
        for c in (
            case("GET", "/v1/exception_items/{item_id}", item_id=n),
            case("POST", "/v1/exception_items/{item_id}/assign", {"owner": "mallory"}, item_id=n),
            case("POST", "/v1/exception_items/{item_id}/snooze", {"until": FAR_FUTURE}, item_id=n),
            case("POST", "/v1/exception_items/{item_id}/resolve", {"note": "B"}, item_id=n),
        )
    ],
    case("GET", "/v1/journal_entries/{entry_id}", entry_id="journal_entry"),
    case("GET", "/v1/exports/{export_id}", export_id="export"),
    case("GET", "/v1/exports/{export_id}/file", export_id="export"),
    case("GET", "/v1/exports/{export_id}/rows", export_id="export"),
    case("GET", "/v1/exports/{export_id}/rows/{row_id}", export_id="export", row_id="export_row"),
    case("GET", "/v1/exports/{export_id}/rows/{row_id}", export_id="b:export", row_id="export_row"),
    case("GET", "/v1/exports/{export_id}/rows/{row_id}", export_id="export", row_id="b:export_row"),
    case(
        "POST",
        "/v1/exports/{export_id}/acknowledge",
        {"rows": [{"id": "<a:export_row>", "erp_record_id": "B-1"}]},
        export_id="export",
    ),
    case("GET", "/v1/reconciliation_runs/{run_id}", run_id="run"),
    case("GET", "/v1/reconciliation_runs/{run_id}/findings", run_id="run"),
    case("GET", "/v1/webhook_endpoints/{endpoint_id}", endpoint_id="webhook_endpoint"),
    case(
        "PATCH",
        "/v1/webhook_endpoints/{endpoint_id}",
        {"url": "https://evil.example/hook"},
        endpoint_id="webhook_endpoint",
    ),
    *[
        case(
            "POST", f"/v1/webhook_endpoints/{{endpoint_id}}/{verb}", endpoint_id="webhook_endpoint"
        )
        for verb in ("disable", "enable", "rotate_secret")
    ],
]

# Routes with an object id that take no API key: tested on their own below.
KEYLESS_ROUTES = {("POST", "/v1/providers/{provider}/webhooks/{endpoint_id}")}

CONSOLE_MATRIX: list[Case] = [
    *[case("GET", "/console/invoices/{invoice_id}", invoice_id=n) for n in INVOICES],
    *[case("GET", "/console/invoices/{invoice_id}/pdf", invoice_id=n) for n in INVOICES],
    case(
        "POST",
        "/console/payments/{payment_id}/apply",
        {"invoice": "<b:open>"},
        payment_id="parked_payment",
    ),
    *[
        c
        for n in ITEMS
        for c in (
            case("GET", "/console/exceptions/{item_id}", item_id=n),
            case("POST", "/console/exceptions/{item_id}/assign", {"owner": "mallory"}, item_id=n),
            case("POST", "/console/exceptions/{item_id}/snooze", {"hours": "2"}, item_id=n),
            case("POST", "/console/exceptions/{item_id}/resolve", {"note": "B"}, item_id=n),
        )
    ],
    case("GET", "/console/reconciliation/{run_id}", run_id="run"),
    case("GET", "/console/exports/{export_id}", export_id="export"),
    case("GET", "/console/exports/{export_id}/file", export_id="export"),
]


def openapi_routes_with_object_ids(client: TestClient) -> set[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in HTTP_METHODS and OBJECT_ID_PARAM.search(path)
    }


def app_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route, included routers walked (flattened or not)."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from app_routes(original.routes, prefix + route.include_context.prefix)
            continue
        for method in getattr(route, "methods", None) or ():
            yield method, prefix + route.path


def console_routes_with_object_ids(app: FastAPI) -> set[tuple[str, str]]:
    return {
        (method, path)
        for method, path in app_routes(list(app.routes))
        if path.startswith("/console") and method != "HEAD" and OBJECT_ID_PARAM.search(path)
    }


def test_matrix_covers_every_route_with_an_object_id(client: TestClient) -> None:
    documented = openapi_routes_with_object_ids(client)
    covered = {(c.method, c.template) for c in API_MATRIX} | KEYLESS_ROUTES
    missing = sorted(documented - covered)
    assert not missing, f"routes with an object id missing from the tenancy matrix: {missing}"
    assert not sorted(covered - documented), f"matrix rows for no route: {covered - documented}"
    for c in API_MATRIX:
        assert {param for param, _ in c.ids} == set(OBJECT_ID_PARAM.findall(c.template)), c

    console = console_routes_with_object_ids(client.app)  # type: ignore[arg-type]
    covered = {(c.method, c.template) for c in CONSOLE_MATRIX}
    missing = sorted(console - covered)
    assert not missing, f"console routes with an object id missing from the matrix: {missing}"
    assert not sorted(covered - console), f"matrix rows for no console route: {covered - console}"
    assert len(documented) >= 45 and len(console) >= 10  # the walk found the routes


def unknown_like(object_id: str) -> str:
    """An id of the same kind and shape that names nothing."""
    prefix, _, body = object_id.partition("_")
    return new_id(prefix) + body[26:]


def error_without_ids(response: httpx.Response, masks: dict[str, str]) -> dict[str, Any]:
    """The error with the requested ids masked and the per-request id dropped."""
    error = dict(response.json()["error"])
    assert error.pop("request_id") == response.headers["Request-Id"]
    for object_id, mask in masks.items():
        error["message"] = error["message"].replace(object_id, mask)
    return error


def call(api: Api, method: str, path: str, body: Any) -> httpx.Response:
    if method == "GET":
        return api.get(path)
    if method == "PATCH":
        return api.patch(path, body)
    return api.post(path, body)


def assert_shows_nothing_of(world: World, response: httpx.Response, named: set[str]) -> None:
    text = response.text
    assert world.marker not in text
    for number in world.numbers:
        assert number not in text
    for object_id in set(world.ids.values()) - named:
        assert object_id not in text, object_id


@pytest.mark.parametrize("attempt", API_MATRIX, ids=[c.label for c in API_MATRIX])
def test_another_accounts_id_answers_like_an_unknown_id(tenants: Tenants, attempt: Case) -> None:
    a, b = tenants.a, tenants.b
    unknown = {name: unknown_like(a[name]) for name in attempt.a_names()}
    body = attempt.filled_body(a.ids, b.ids)
    theirs_path = attempt.path(a.ids, b.ids)
    unknown_path = attempt.path({**a.ids, **unknown}, b.ids)
    concerned = [a.reads[name] for name in attempt.a_names()]
    rows_before = tenants.rows()
    views_before = {path: a.api.get(path).content for path in concerned}

    theirs = call(b.api, attempt.method, theirs_path, body)
    missing = call(b.api, attempt.method, unknown_path, body)

    assert theirs.status_code == missing.status_code == 404, theirs.text
    assert theirs.json()["error"]["code"] == "resource_missing"
    assert theirs.json()["error"]["retryable"] is False
    masks_theirs = {a[name]: f"<{name}>" for name in attempt.a_names()}
    masks_unknown = {unknown[name]: f"<{name}>" for name in attempt.a_names()}
    assert error_without_ids(theirs, masks_theirs) == error_without_ids(missing, masks_unknown)
    assert set(theirs.headers) == set(missing.headers)
    assert_shows_nothing_of(a, theirs, {a[name] for name in attempt.a_names()})
    assert tenants.rows() == rows_before
    assert {path: a.api.get(path).content for path in concerned} == views_before
    if attempt.method == "GET" and not any(name.startswith("b:") for _, name in attempt.ids):
        # The same path is A's own: the route and the ids are right, only the key differs
        # (a draft has no PDF yet: 409).
        assert a.api.get(theirs_path).status_code in (200, 409), theirs_path


@pytest.mark.parametrize("attempt", CONSOLE_MATRIX, ids=[c.label for c in CONSOLE_MATRIX])
def test_console_pages_of_another_account_are_404(tenants: Tenants, attempt: Case) -> None:
    a, b, console = tenants.a, tenants.b, tenants.b_console
    unknown = {name: unknown_like(a[name]) for name in attempt.a_names()}
    form = {
        "snooze_from": datetime.now(UTC).isoformat(),
        **(attempt.filled_body(a.ids, b.ids) or {}),
    }
    concerned = [a.reads[name] for name in attempt.a_names()]
    rows_before = tenants.rows()
    views_before = {path: a.api.get(path).content for path in concerned}
    for ids in (a.ids, {**a.ids, **unknown}):
        path = attempt.path(ids, b.ids)
        response = console.get(path) if attempt.method == "GET" else console.post(path, form)
        assert response.status_code == 404, (path, response.status_code, response.text[:300])
        assert_shows_nothing_of(a, response, {a[name] for name in attempt.a_names()})
        assert "set-cookie" not in response.headers
    assert tenants.rows() == rows_before
    assert {path: a.api.get(path).content for path in concerned} == views_before


def test_another_accounts_provider_endpoint_takes_nothing_from_b(tenants: Tenants) -> None:
    """The keyless webhook route: B signs with its own endpoint's secret (and even sends its
    API key) to A's endpoint URL. Refused as a bad signature and kept for investigation;
    nothing else of A or B changes."""
    a, b = tenants.a, tenants.b
    url = f"/v1/providers/standard_webhooks/webhooks/{a['provider_endpoint']}"
    event = sw_event(
        "payment.succeeded",
        payment_reference="b-steal",
        invoice=a["open"],
        amount=1,
        currency="eur",
        method="card",
    )
    rows_before = tenants.rows()
    views_before = a.views()
    body = json.dumps(event)
    msg_id = f"msg_{uuid.uuid4().hex}"
    when = datetime.now(UTC)
    response = b.api.client.post(
        url,
        content=body.encode(),
        headers={
            **b.api.auth,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(b.endpoint_secret).sign(
                msg_id=msg_id, timestamp=when, data=body
            ),
        },
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "signature_invalid"
    assert_shows_nothing_of(a, response, {a["provider_endpoint"]})
    rows_after = tenants.rows()
    kept = set(rows_after.pop("provider_events")) - set(rows_before.pop("provider_events"))
    assert rows_after == rows_before
    assert all("signature_invalid" in row for row in kept), kept
    assert a.views() == views_before


def test_a_body_naming_another_accounts_object_is_404(tenants: Tenants) -> None:
    a, b = tenants.a, tenants.b
    api, other_api = a.api, b.api
    own_draft = other_api.draft(b["customer"])["id"]
    line = {"description": "x", "quantity": "1", "unit_amount": 100}
    # (method, path, body, param, A's world name)
    attempts: list[tuple[str, str, dict[str, Any], str, str]] = [
        (
            "POST",
            "/v1/invoices",
            {"customer": a["customer"], "currency": "eur", "lines": [line]},
            "customer",
            "customer",
        ),
        (
            "POST",
            "/v1/invoices",
            {
                "customer": b["customer"],
                "currency": "eur",
                "lines": [line],
                "legal_entity": a["entity"],
            },
            "legal_entity",
            "entity",
        ),
        ("PATCH", f"/v1/invoices/{own_draft}", {"customer": a["customer"]}, "customer", "customer"),
        (
            "PATCH",
            f"/v1/invoices/{own_draft}",
            {"legal_entity": a["default_entity"]},
            "legal_entity",
            "default_entity",
        ),
        (
            "POST",
            "/v1/credit_notes",
            {"invoice": a["open"], "reason": "x", "amount": 1},
            "invoice",
            "open",
        ),
        (
            "POST",
            "/v1/credit_notes",
            {"invoice": a["paid"], "reason": "x", "amount": 1},
            "invoice",
            "paid",
        ),
        (
            "POST",
            f"/v1/payments/{b['parked_payment']}/apply",
            {"invoice": a["open"]},
            "invoice",
            "open",
        ),
        # The redeliver answer names no param today (reported); identical to an unknown id.
        (
            "POST",
            f"/v1/events/{b['event']}/redeliver",
            {"webhook_endpoint": a["webhook_endpoint"]},
            "webhook_endpoint|None",
            "webhook_endpoint",
        ),
        (
            "POST",
            f"/v1/exports/{b['export']}/acknowledge",
            {"rows": [{"id": a["export_row"], "erp_record_id": "B-1"}]},
            "rows[0].id",
            "export_row",
        ),
    ]
    rows_before = tenants.rows()
    for method, path, body, param, name in attempts:
        theirs = call(other_api, method, path, body)
        assert theirs.status_code == 404, (path, theirs.text)
        error = theirs.json()["error"]
        assert error["code"] == "resource_missing", (path, error)
        assert str(error["param"]) in param.split("|"), (path, error)
        unknown_id = unknown_like(a[name])
        unknown_body = json.loads(json.dumps(body).replace(a[name], unknown_id))
        unknown = call(other_api, method, path, unknown_body)
        assert error_without_ids(theirs, {a[name]: "<id>"}) == error_without_ids(
            unknown, {unknown_id: "<id>"}
        )
        assert_shows_nothing_of(a, theirs, {a[name]})
    # the console's apply form, naming A's invoice for B's own parked money
    console = tenants.b_console.post(
        f"/console/payments/{b['parked_payment']}/apply", {"invoice": a["open"]}
    )
    assert console.status_code == 404, console.text[:300]
    assert_shows_nothing_of(a, console, {a["open"]})
    assert tenants.rows() == rows_before
    assert other_api.get(f"/v1/invoices/{own_draft}").json()["customer"] == b["customer"]
    assert api.get(f"/v1/invoices/{a['open']}").json()["status"] == "open"


# --- lists -----------------------------------------------------------------------------------

# Query parameters of the lists: those naming an object get A's ids (world names to try);
# the others only narrow by a value and are listed so a new id filter cannot be missed.
ID_FILTERS: dict[str, tuple[str, ...]] = {
    "invoice": ("open", "paid", "peppol_invoice"),
    "customer": ("customer", "peppol_customer"),
    "credit_note": ("credit_note",),
    "payment": ("payment", "parked_payment"),
    "object": ("paid", "customer", "item"),
}
VALUE_FILTERS = {
    "status",
    "kind",
    "type",
    "period",
    "format",
    "verification",
    "owner",
    "overdue",
    "unapplied",
    "email",
}
# The world name of an object each list lists (for `starting_after`), None: no ids.
LIST_KIND: dict[str, str | None] = {
    "/v1/legal_entities": "entity",
    "/v1/launch_gates": None,
    "/v1/customers": "customer",
    "/v1/invoices": "open",
    "/v1/credit_notes": "credit_note",
    "/v1/einvoices": "einvoice",
    "/v1/payments": "payment",
    "/v1/provider_endpoints": "provider_endpoint",
    "/v1/provider_events": "provider_event",
    "/v1/events": "event",
    "/v1/exception_items": "item",
    "/v1/journal_entries": "journal_entry",
    "/v1/exports": "export",
    "/v1/reconciliation_runs": "run",
    "/v1/webhook_endpoints": "webhook_endpoint",
}


def collection_routes(client: TestClient) -> dict[str, list[str]]:
    """Every GET list without a path parameter, with its query parameters besides paging."""
    spec = client.get("/openapi.json").json()
    out: dict[str, list[str]] = {}
    for path, operations in spec["paths"].items():
        operation = operations.get("get")
        if operation is None or "{" in path:
            continue
        schema = (
            operation["responses"].get("200", {}).get("content", {}).get("application/json", {})
        ).get("schema", {})
        if schema.get("$ref", "").startswith("#/components/schemas/ListOut_"):
            out[path] = [
                p["name"]
                for p in operation.get("parameters", [])
                if p["in"] == "query" and p["name"] not in ("limit", "starting_after")
            ]
    return out


def test_every_list_and_filter_is_classified(client: TestClient) -> None:
    lists = collection_routes(client)
    assert sorted(lists) == sorted(LIST_KIND), "a list route is missing from LIST_KIND"
    unknown = {(path, f) for path, fs in lists.items() for f in fs} - {
        (path, f) for path, fs in lists.items() for f in fs if f in ID_FILTERS or f in VALUE_FILTERS
    }
    assert not unknown, f"classify these list filters (id or value): {sorted(unknown)}"


def test_lists_never_show_another_accounts_objects(tenants: Tenants, client: TestClient) -> None:
    a, b = tenants.a, tenants.b
    a_ids = set(a.ids.values())
    for path, filters in collection_routes(client).items():
        theirs = b.api.get(path, {"limit": 100})
        assert theirs.status_code == 200, (path, theirs.text)
        listed = {item.get("id") for item in theirs.json()["data"]}
        assert not listed & a_ids, path
        assert_shows_nothing_of(a, theirs, set())
        if LIST_KIND[path] in b.ids:
            assert b[LIST_KIND[path] or ""] in listed or theirs.json()["has_more"], path
        for name in filters:
            values = [a[n] for n in ID_FILTERS.get(name, ()) if n in a.ids]
            if name == "email":
                values = [f"{a.marker.lower()}@example.com"]
            a_sees = 0
            for value in values:
                response = b.api.get(path, {name: value, "limit": 100})
                assert response.status_code in (200, 404), (path, name, response.text)
                if response.status_code == 200:
                    assert response.json()["data"] == [], (path, name, value)
                assert_shows_nothing_of(a, response, {value})
                a_sees += len(a.api.get(path, {name: value, "limit": 100}).json()["data"])
            if values:
                assert a_sees, f"A's own filter {path}?{name}= finds nothing: a weak check"


@pytest.mark.parametrize("path", sorted(p for p, kind in LIST_KIND.items() if kind))
def test_another_accounts_cursor_is_404(tenants: Tenants, path: str) -> None:
    a, b = tenants.a, tenants.b
    cursor = a[LIST_KIND[path] or ""]
    response = b.api.get(path, {"starting_after": cursor})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("resource_missing", "starting_after")
    assert_shows_nothing_of(a, response, {cursor})


def test_sub_lists_and_account_wide_reads_never_leak(tenants: Tenants, client: TestClient) -> None:
    """Lists under B's own objects with A's cursors, and every account-wide read (settings,
    balances, go-live) of B: nothing of A."""
    a, b = tenants.a, tenants.b
    rows = b.api.get(f"/v1/exports/{b['export']}/rows", {"starting_after": a["export_row"]})
    assert rows.status_code == 404
    assert_shows_nothing_of(a, rows, {a["export_row"]})
    spec = client.get("/openapi.json").json()
    period = a.api.get(a.reads["journal_entry"]).json()["period"]
    for path, operations in spec["paths"].items():
        if "get" not in operations or "{" in path or path in LIST_KIND:
            continue
        response = b.api.get(path, {"period": period} if "balance" in path else None)
        assert response.status_code == 200, (path, response.text)
        assert_shows_nothing_of(a, response, set())
    for path in (f"/v1/periods/{period}", "/v1/launch_gates/kyb"):
        response = b.api.get(path)
        assert response.status_code in (200, 404), (path, response.text)
        assert_shows_nothing_of(a, response, set())


# --- ids -------------------------------------------------------------------------------------


def _decode(object_id: str) -> int:
    body = object_id.split("_", 1)[1][:26]
    value = 0
    for char in body:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    return value


RANDOM_BITS = 80


def test_ids_carry_80_random_bits_from_the_os(monkeypatch: pytest.MonkeyPatch) -> None:
    """`prefix_` + 26 Crockford characters: 48 bits of milliseconds, then 80 bits from
    `secrets` (the OS CSPRNG). Every one of the 80 bits varies, none is a counter."""
    samples = 4096
    before = int(datetime.now(UTC).timestamp() * 1000)
    made = [new_id("cus") for _ in range(samples)]
    after = int(datetime.now(UTC).timestamp() * 1000)
    for object_id in made:
        assert re.fullmatch(rf"cus_{CROCKFORD_BODY}", object_id), object_id
    values = [_decode(i) for i in made]
    assert all(before <= v >> RANDOM_BITS <= after for v in values)
    randoms = [v & ((1 << RANDOM_BITS) - 1) for v in values]
    assert len(set(randoms)) == samples
    for bit in range(RANDOM_BITS):
        ones = sum((r >> bit) & 1 for r in randoms)
        assert 0.4 * samples < ones < 0.6 * samples, f"bit {bit} is set {ones}/{samples} times"
    deltas = {(b - a) % (1 << RANDOM_BITS) for a, b in itertools.pairwise(randoms)}
    assert len(deltas) > samples * 0.99  # no fixed step between consecutive ids

    monkeypatch.setattr(secrets, "randbits", lambda bits: (1 << bits) - 1)
    assert _decode(new_id("in")) & ((1 << RANDOM_BITS) - 1) == (1 << RANDOM_BITS) - 1


def test_consecutive_objects_ids_share_no_increment(tenants: Tenants) -> None:
    api = tenants.b.api
    created = [api.customer(name=f"c{i}")["id"] for i in range(16)]
    randoms = [_decode(i) & ((1 << RANDOM_BITS) - 1) for i in created]
    for previous, current in itertools.pairwise(randoms):
        differing = bin(previous ^ current).count("1")
        assert differing >= 16, (previous, current)  # ~40 of 80 bits differ for random ids
    deltas = {b - a for a, b in itertools.pairwise(randoms)}
    assert len(deltas) == len(randoms) - 1
    for object_id in tenants.a.ids.values():
        assert ID_SHAPE.fullmatch(object_id), object_id


# --- more of the same contract -------------------------------------------------------------


def test_idempotency_keys_are_scoped_per_account(api: Api, other_api: Api) -> None:
    key = f"shared-{uuid.uuid4().hex}"
    body = {"name": "Same Body", "address": {"country": "DE"}}
    a_before, b_before = row_counts(api), row_counts(other_api)
    first = api.post("/v1/customers", body, key=key)
    second = other_api.post("/v1/customers", body, key=key)
    a_customer, b_customer = api.ok(first), other_api.ok(second)
    assert a_customer["id"] != b_customer["id"]
    assert "Idempotent-Replayed" not in first.headers
    assert "Idempotent-Replayed" not in second.headers
    assert row_counts(api)["customers"] == a_before["customers"] + 1
    assert row_counts(other_api)["customers"] == b_before["customers"] + 1
    assert row_counts(api)["idempotency_keys"] == a_before["idempotency_keys"] + 1
    assert row_counts(other_api)["idempotency_keys"] == b_before["idempotency_keys"] + 1

    a_replay = api.post("/v1/customers", body, key=key)
    b_replay = other_api.post("/v1/customers", body, key=key)
    assert a_replay.headers["Idempotent-Replayed"] == "true"
    assert b_replay.headers["Idempotent-Replayed"] == "true"
    assert a_replay.content == first.content
    assert b_replay.content == second.content
    assert [c["id"] for c in api.get("/v1/customers").json()["data"]] == [a_customer["id"]]
    assert [c["id"] for c in other_api.get("/v1/customers").json()["data"]] == [b_customer["id"]]

    # Within one account the key still binds; across accounts it never does.
    reused_elsewhere = api.post("/v1/customers", {"name": "Other body"}, key=key)
    assert reused_elsewhere.status_code == 422
    assert reused_elsewhere.json()["error"]["code"] == "idempotency_key_reused"
    fresh_key = f"only-b-{uuid.uuid4().hex}"
    api.ok(api.post("/v1/customers", {"name": "A first"}, key=fresh_key))
    b_other = other_api.post("/v1/customers", {"name": "B different"}, key=fresh_key)
    assert other_api.ok(b_other)["name"] == "B different"


MALFORMED_IDS = [
    "in_",
    "x",
    "in_" + "A" * 300,
    "in_ñandú",
    "in_😀",
    "in_ 1",
    "in_\x00x",
    "IN_01HZZZZZZZZZZZZZZZZZZZZZZZ",
    "cus_01HZZZZZZZZZZZZZZZZZZZZZZZ",
]

MALFORMED_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/invoices/{id}", None),
    ("PATCH", "/v1/invoices/{id}", {"metadata": {"a": "b"}}),
    ("POST", "/v1/invoices/{id}/finalize", None),
    ("POST", "/v1/invoices/{id}/pay", {"reference": "r-1"}),
    ("GET", "/v1/customers/{id}", None),
    ("PATCH", "/v1/customers/{id}", {"name": "n"}),
    ("GET", "/v1/payments/{id}", None),
    ("GET", "/v1/events/{id}", None),
    ("GET", "/v1/legal_entities/{id}", None),
]


@pytest.mark.parametrize(
    "object_id",
    MALFORMED_IDS,
    ids=["empty-suffix", "x", "300-chars", "latin", "emoji", "space", "nul", "upper", "cus-as-in"],
)
def test_malformed_ids_are_404_everywhere(api: Api, object_id: str) -> None:
    api.customer()  # the account has objects, so a lookup has rows to (not) match
    before = row_counts(api)
    for method, template, body in MALFORMED_ROUTES:
        response = call(api, method, template.replace("{id}", quote(object_id, safe="")), body)
        assert response.status_code == 404, (method, template, response.text)
        error = response.json()["error"]
        assert error["code"] == "resource_missing", error
        assert error["request_id"] == response.headers["Request-Id"]
    assert row_counts(api) == before


def test_own_object_of_another_kind_is_404(tenants: Tenants) -> None:
    """A real id with the wrong prefix for the route is as unknown as any other."""
    world = tenants.a
    api = world.api
    before = tenants.rows()
    for path in (
        f"/v1/invoices/{world['customer']}",
        f"/v1/customers/{world['open']}",
        f"/v1/payments/{world['paid']}",
        f"/v1/events/{world['payment']}",
        f"/v1/legal_entities/{world['customer']}",
        f"/v1/exports/{world['run']}",
        f"/v1/exports/{world['export']}/rows/{world['journal_entry']}",
        f"/v1/webhook_endpoints/{world['provider_endpoint']}",
        f"/v1/provider_endpoints/{world['webhook_endpoint']}",
        f"/v1/provider_events/{world['event']}",
        f"/v1/events/{world['provider_event']}",
        f"/v1/exception_items/{world['einvoice']}",
    ):
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "resource_missing"
    response = api.post(f"/v1/invoices/{world['customer']}/finalize")
    assert response.status_code == 404
    assert tenants.rows() == before


def test_every_table_is_reached_by_the_row_comparison() -> None:
    for name, table in Base.metadata.tables.items():
        assert name == "accounts" or "account_id" in table.c or name in CHILD_TABLES, (
            f"{name}: add it to CHILD_TABLES (its column, parent table, parent column)"
        )


def test_a_world_is_untouched_after_every_attempt(tenants: Tenants) -> None:
    """Runs after the matrix in this module: A still reads exactly what it wrote."""
    assert tenants.a.views() == tenants.a_views
