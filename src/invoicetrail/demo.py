"""`invoicetrail demo`: a new account with data in every state, loaded through the real API."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from starlette.testclient import TestClient

from invoicetrail.accounts import service as accounts
from invoicetrail.api import create_app
from invoicetrail.core.clock import SystemClock
from invoicetrail.core.config import Settings
from invoicetrail.core.db import make_engine, make_sessionmaker, write_transaction
from invoicetrail.core.ids import new_id

DEMO_ACCOUNT_NAME = "Demo GmbH"


def create_demo_account(settings: Settings) -> str:
    """Creates a new demo account, loads its data and returns its secret key."""
    clock = SystemClock()
    engine = make_engine(settings)
    try:
        with write_transaction(make_sessionmaker(engine)) as session:
            created = accounts.create_account(
                session, name=DEMO_ACCOUNT_NAME, country=None, now=clock.now(), is_demo=True
            )
            session.commit()
    finally:
        engine.dispose()
    load_demo_data(settings, created.secret_key)
    return created.secret_key


def key_for_existing_demo(settings: Settings) -> str | None:
    """`make run` on a non-empty database: a fresh key for the newest demo account."""
    engine = make_engine(settings)
    try:
        with write_transaction(make_sessionmaker(engine)) as session:
            demo = accounts.find_demo_account(session)
            if demo is None:
                return None
            secret_key = accounts.issue_additional_key(session, demo.id, SystemClock().now())
            session.commit()
            return secret_key
    finally:
        engine.dispose()


def database_is_empty(settings: Settings) -> bool:
    engine = make_engine(settings)
    try:
        with make_sessionmaker(engine)() as session:
            return accounts.count_accounts(session) == 0
    finally:
        engine.dispose()


class _Api:
    def __init__(self, client: TestClient, secret_key: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {secret_key}"}

    def post(
        self, path: str, body: dict[str, Any] | None = None, *, method: str = "POST"
    ) -> dict[str, Any]:
        response = self.client.request(
            method,
            path,
            json=body,
            headers={**self.headers, "Idempotency-Key": new_id("demo")},
        )
        if response.status_code >= 400:
            raise RuntimeError(f"demo step {path} failed: {response.status_code} {response.text}")
        result: dict[str, Any] = response.json()
        return result


def _set_up_control(api: _Api) -> None:
    """What a real account records before go-live: owners, books policy, launch gates."""
    api.post("/v1/ledger_settings", {"posting_policy": "accrual"})
    api.post(
        "/v1/ownership",
        {
            "invoice_state": "billing_operations",
            "payment_evidence": "accounts_receivable",
            "journal_posting": "general_ledger_accountant",
            "erp_export": "erp_administrator",
            "exception_queue": "ar_lead",
            "disputes": {
                "first_responder": "payment_operations",
                "authoritative_record": "provider",
            },
            "compliance_markets": {"US": "us_tax_team", "DE": "eu_vat_team"},
        },
        method="PUT",
    )
    gates = api.client.get("/v1/launch_gates", headers=api.headers).json()["data"]
    for gate in gates:
        api.post(
            f"/v1/launch_gates/{gate['name']}",
            {
                "status": "passed",
                "owner": "compliance_officer",
                "evidence_reference": f"demo-evidence-{gate['name']}",
                "note": "demo data: recorded as passed so the go-live check can be shown green",
            },
            method="PUT",
        )


def load_demo_data(settings: Settings, secret_key: str) -> None:
    app = create_app(settings.model_copy(update={"rate_limit_per_second": 0}))
    today = SystemClock().now().date()
    with TestClient(app, base_url="http://demo.invalid") as client:
        api = _Api(client, secret_key)
        # Before the launch gates are recorded: its foreign bank account brings in FBAR.
        subsidiary = _subsidiary(api)
        _set_up_control(api)
        acme = api.post(
            "/v1/customers",
            {
                "name": "Acme Corporation",
                "email": "ap@acme.example",
                "address": {
                    "line1": "1 Main St",
                    "city": "Springfield",
                    "postal_code": "12345",
                    "state": "IL",
                    "country": "US",
                },
                "external_reference": "crm-acme",
            },
        )
        globex = api.post(
            "/v1/customers",
            {
                "name": "Globex GmbH",
                "email": "buchhaltung@globex.example",
                "address": {
                    "line1": "Hauptstraße 5",
                    "city": "Berlin",
                    "postal_code": "10115",
                    "country": "DE",
                },
                "tax_ids": [{"type": "eu_vat", "value": "DE123456789"}],
            },
        )

        def invoice(
            customer: dict[str, Any], ref: str, lines: list[dict[str, Any]], currency: str = "usd"
        ) -> dict[str, Any]:
            return api.post(
                "/v1/invoices",
                {
                    "customer": customer["id"],
                    "currency": currency,
                    "collection_method": "send_invoice",
                    "due_date": (today + timedelta(days=30)).isoformat(),
                    "external_reference": ref,
                    "lines": lines,
                },
            )

        consulting = [
            {
                "description": "Consulting, November",
                "quantity": "12.5",
                "unit_amount": 15000,
                "tax_rate": "0",
            },
            {
                "description": "Travel expenses",
                "quantity": "1",
                "unit_amount": 42050,
                "tax_rate": "0",
            },
        ]
        licence = [
            {
                "description": "Software licence (annual)",
                "quantity": "1",
                "unit_amount": 120000,
                "tax_rate": "19",
            },
            {
                "description": "Support hours",
                "quantity": "3",
                "unit_amount": 9500,
                "tax_rate": "19",
            },
        ]
        invoice(acme, "demo-draft", consulting)

        opened = invoice(acme, "demo-open", consulting)
        api.post(f"/v1/invoices/{opened['id']}/finalize")
        api.post(f"/v1/invoices/{opened['id']}/send")

        paid = invoice(globex, "demo-paid", licence, currency="eur")
        api.post(f"/v1/invoices/{paid['id']}/finalize")
        api.post(f"/v1/invoices/{paid['id']}/send")
        # Paid by card through the simulated provider: signed, verified and applied by the
        # worker exactly like a real provider's webhook.
        api.post("/v1/simulated/payments", {"invoice": paid["id"], "method": "card"})

        wired = invoice(acme, "demo-wired", consulting)
        api.post(f"/v1/invoices/{wired['id']}/finalize")
        api.post(
            f"/v1/invoices/{wired['id']}/pay",
            {"reference": "demo-wire-0001", "method": "bank_transfer"},
        )

        ach = invoice(globex, "demo-ach", licence, currency="eur")
        api.post(f"/v1/invoices/{ach['id']}/finalize")
        api.post("/v1/simulated/payments", {"invoice": ach["id"], "method": "ach"})

        mistyped = invoice(acme, "demo-mistyped-transfer", consulting)
        api.post(f"/v1/invoices/{mistyped['id']}/finalize")
        # A customer typed the bank reference wrong: the transfer is held as unapplied cash
        # and raises an unmatched_transfer item for AR to apply.
        api.post(
            "/v1/simulated/payments",
            {"invoice": mistyped["id"], "method": "bank_transfer", "reference_code": "WRONG-REF-0"},
        )

        partial = invoice(globex, "demo-partial", licence, currency="eur")
        api.post(f"/v1/invoices/{partial['id']}/finalize")
        api.post(
            f"/v1/invoices/{partial['id']}/pay",
            {"reference": "demo-check-0042", "amount": 50000, "method": "check"},
        )

        voided = invoice(acme, "demo-void", consulting)
        api.post(f"/v1/invoices/{voided['id']}/finalize")
        api.post(f"/v1/invoices/{voided['id']}/void")

        doubtful = invoice(acme, "demo-uncollectible", consulting)
        api.post(f"/v1/invoices/{doubtful['id']}/finalize")
        api.post(f"/v1/invoices/{doubtful['id']}/mark_uncollectible")

        _peppol_invoice(api, today, subsidiary)


def _subsidiary(api: _Api) -> dict[str, Any]:
    """A German subsidiary that invoices on Peppol: the e-invoicing branch."""
    return api.post(
        "/v1/legal_entities",
        {
            "name": "Example Europe GmbH",
            "country": "DE",
            "address": {
                "line1": "Friedrichstraße 10",
                "city": "Berlin",
                "postal_code": "10117",
                "country": "DE",
            },
            "tax_ids": [{"type": "eu_vat", "value": "DE136695976"}],
            "peppol_id": "0088:7300010000001",
            "registration_id": "HRB 123456 B",
            "bank_account": {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
            "contact": {
                "name": "Accounts receivable",
                "email": "ar@example.eu",
                "phone": "+49 30 1234567",
            },
            "number_prefix": "EU",
        },
    )


def _peppol_invoice(api: _Api, today: date, subsidiary: dict[str, Any]) -> None:
    initech = api.post(
        "/v1/customers",
        {
            "name": "Initech B.V.",
            "email": "crediteuren@initech.example",
            "address": {
                "line1": "Damrak 1",
                "city": "Amsterdam",
                "postal_code": "1012 LG",
                "country": "NL",
            },
            "tax_ids": [{"type": "eu_vat", "value": "NL004495445B01"}],
            "peppol_id": "0088:4000001000005",
        },
    )
    drafted = api.post(
        "/v1/invoices",
        {
            "customer": initech["id"],
            "legal_entity": subsidiary["id"],
            "currency": "eur",
            "collection_method": "send_invoice",
            "due_date": (today + timedelta(days=30)).isoformat(),
            "buyer_reference": "INITECH-PO-7781",
            "external_reference": "demo-peppol",
            "lines": [
                {
                    "description": "Implementation services",
                    "quantity": "10",
                    "unit_amount": 12000,
                    "tax_rate": "0",
                    "tax_category": "AE",
                    "tax_exemption_reason": "Reverse charge",
                }
            ],
        },
    )
    # Finalize generates the UBL document; the worker validates it and submits it (sandbox).
    api.post(f"/v1/invoices/{drafted['id']}/finalize")
