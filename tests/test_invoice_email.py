"""Invoice e-mail and dunning against a real local SMTP server (aiosmtpd), with a ManualClock.

The worker jobs are called directly with the app's session factory and clock. Each backend
gets a database of its own, so other tests' invoices never reach these SMTP sinks."""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import update
from starlette.testclient import TestClient

from conftest import (
    PG_TEST_DB,
    Api,
    create_account,
    make_settings,
    prepare_postgres_database,
    prepare_sqlite_database,
)
from invoicetrail.api import create_app
from invoicetrail.core.clock import ManualClock
from invoicetrail.core.config import Settings
from invoicetrail.core.http import AppState
from invoicetrail.core.money import format_display
from invoicetrail.invoices import dunning
from invoicetrail.invoices import email as invoice_email
from invoicetrail.invoices.models import InvoiceEmail
from servers import free_port

START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def email_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return prepare_sqlite_database(tmp_path_factory.mktemp("email"))
    return prepare_postgres_database(PG_TEST_DB + "_mail")


class Sink:
    """Records every accepted message; refuses the recipients in `refuse` with a 550."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []
        self.refuse: set[str] = set()
        self.defer_once: set[str] = set()  # greylisting: 450 the first time

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 <" + address + ">: mailbox unavailable"
        if address in self.defer_once:
            self.defer_once.discard(address)
            return "450 4.2.0 <" + address + ">: greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.received.append((list(envelope.rcpt_tos), content))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [
            email.message_from_bytes(content, policy=email.policy.default)
            for recipients, content in self.received
            if address in recipients
        ]


@dataclass
class Mail:
    """One account on an app whose SMTP URL points at `port`, and the worker jobs."""

    api: Api
    clock: ManualClock
    settings: Settings
    state: AppState
    sink: Sink
    port: int
    controller: Controller | None = None
    addresses: list[str] = field(default_factory=list)

    def start_server(self) -> None:
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop_server(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def send_due(self) -> int:
        return invoice_email.send_due_emails(self.state.sessions, self.clock, self.settings)

    def remind(self) -> int:
        return dunning.queue_due_reminders(self.state.sessions, self.clock, self.settings)

    def day(self, days: int = 1) -> None:
        """A day passes: the worker queues reminders and sends what is due."""
        self.clock.advance(timedelta(days=days))
        self.remind()
        self.send_due()

    def today(self) -> date:
        return self.clock.now().date()

    def address(self) -> str:
        address = f"ap-{uuid.uuid4().hex[:10]}@buyer.example"
        self.addresses.append(address)
        return address

    def invoice(self, address: str | None, *, due_in_days: int = 30) -> dict[str, Any]:
        fields: dict[str, Any] = {"email": address} if address else {}
        customer = self.api.customer(**fields)
        return self.api.open_invoice(
            customer_id=customer["id"],
            collection_method="send_invoice",
            due_date=(self.today() + timedelta(days=due_in_days)).isoformat(),
        )

    def get(self, invoice: dict[str, Any]) -> dict[str, Any]:
        return self.api.ok(self.api.get(f"/v1/invoices/{invoice['id']}"))

    def emails(self, invoice: dict[str, Any]) -> list[dict[str, Any]]:
        path = f"/v1/invoices/{invoice['id']}/emails"
        listed = self.api.ok(self.api.get(path, {"limit": 100}))
        return list(reversed(listed["data"]))  # the API lists newest first

    def send(self, invoice: dict[str, Any]) -> dict[str, Any]:
        return self.api.ok(self.api.post(f"/v1/invoices/{invoice['id']}/send"))

    def delivered(self, address: str | None = None, *, due_in_days: int = 30) -> dict[str, Any]:
        invoice = self.invoice(address or self.address(), due_in_days=due_in_days)
        self.send(invoice)
        self.send_due()
        assert self.get(invoice)["delivered_at"] is not None
        return invoice

    def events(self, invoice: dict[str, Any], event_type: str) -> list[dict[str, Any]]:
        params = {"type": event_type, "object": invoice["id"], "limit": 100}
        return self.api.ok(self.api.get("/v1/events", params))["data"]


@pytest.fixture
def mail_factory(email_db_url: str) -> Iterator[Any]:
    made: list[tuple[Mail, TestClient]] = []

    def make(*, server_up: bool = True, smtp: bool = True, mail_dir: str | None = None) -> Mail:
        port = free_port()
        clock = ManualClock(START)
        overrides: dict[str, Any] = {"smtp_url": f"smtp://127.0.0.1:{port}"} if smtp else {}
        if mail_dir is not None:
            overrides["mail_dir"] = mail_dir
        settings = make_settings(email_db_url, mail_from="billing@seller.example", **overrides)
        client = TestClient(create_app(settings, clock), base_url="http://testserver")
        client.__enter__()
        state: AppState = client.app.state.invoicetrail  # type: ignore[attr-defined]
        account_id, secret_key = create_account(state)
        mail = Mail(Api(client, account_id, secret_key), clock, settings, state, Sink(), port)
        made.append((mail, client))
        if server_up:
            mail.start_server()
        return mail

    yield make
    for mail, client in made:
        mail.stop_server()
        # Leave nothing for the next test's worker: its mail and reminders stop here.
        client.put(
            "/v1/dunning_settings",
            json={"enabled": False, "reminder_offsets_days": []},
            headers={**mail.api.auth, "Idempotency-Key": uuid.uuid4().hex},
        )
        with mail.state.sessions() as session:
            session.execute(
                update(InvoiceEmail)
                .where(InvoiceEmail.status == "pending")
                .values(status="cancelled", next_attempt_at=None)
            )
            session.commit()
        client.__exit__(None, None, None)


@pytest.fixture
def mail(mail_factory: Any) -> Mail:
    made: Mail = mail_factory()
    return made


def attachments(message: EmailMessage) -> list[EmailMessage]:
    return list(message.iter_attachments())


# --- sending -----------------------------------------------------------------------------


def test_send_mails_the_invoice_with_its_pdf_and_delivers_only_then(mail: Mail) -> None:
    address = mail.address()
    invoice = mail.invoice(address)
    sent = mail.send(invoice)
    assert sent["delivered_at"] is None
    assert [e["type"] for e in mail.events(invoice, "invoice.sent")] == ["invoice.sent"]
    (queued,) = mail.emails(invoice)
    assert (queued["purpose"], queued["status"], queued["to_address"]) == (
        "invoice",
        "pending",
        address,
    )
    assert mail.sink.to(address) == []  # nothing leaves the process inside the request

    mail.clock.advance(timedelta(seconds=30))
    assert mail.send_due() >= 1
    (message,) = mail.sink.to(address)
    (pdf,) = attachments(message)
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_filename() == f"{invoice['number']}.pdf"
    assert pdf.get_content().startswith(b"%PDF")
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert invoice["number"] in text
    assert format_display(invoice["total"], invoice["currency"]) in text
    assert invoice["due_date"] in text
    assert invoice["bank_transfer_reference"] in text
    assert invoice["number"] in message["Subject"]
    assert message["To"] == address
    assert "billing@seller.example" in message["From"]

    (row,) = mail.emails(invoice)
    assert row["status"] == "sent"
    assert row["message_id"] == message["Message-ID"]
    assert row["message_id"] == f"<{row['id']}@seller.example>"
    assert row["attempt_count"] == 1
    delivered = mail.get(invoice)
    assert delivered["delivered_at"] == "2030-01-07T09:00:30.000Z"
    assert len(mail.events(invoice, "invoice.updated")) == 1


def test_send_twice_sends_one_email(mail: Mail) -> None:
    address = mail.address()
    invoice = mail.invoice(address)
    mail.send(invoice)
    mail.send(invoice)
    assert len(mail.emails(invoice)) == 1
    mail.send_due()
    mail.send(invoice)  # after it went out: still nothing more
    mail.send_due()
    assert len(mail.sink.to(address)) == 1
    assert [row["status"] for row in mail.emails(invoice)] == ["sent"]
    assert len(mail.events(invoice, "invoice.sent")) == 3


def test_send_needs_the_customers_email(mail: Mail) -> None:
    invoice = mail.invoice(None)
    response = mail.api.post(f"/v1/invoices/{invoice['id']}/send")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["object"]) == ("customer.email", "invoice")
    assert mail.get(invoice)["delivered_at"] is None


def test_refused_recipient_fails_once_with_an_exception_item(mail: Mail) -> None:
    address = mail.address()
    mail.sink.refuse.add(address)
    invoice = mail.invoice(address)
    mail.send(invoice)
    mail.send_due()
    assert mail.sink.to(address) == []
    (row,) = mail.emails(invoice)
    assert row["status"] == "failed"
    assert row["attempt_count"] == 1  # a 5xx is permanent: no retries
    assert "550" in row["error"]
    assert address in row["error"]
    assert mail.get(invoice)["delivered_at"] is None
    items = mail.api.ok(
        mail.api.get(
            "/v1/exception_items", {"invoice": invoice["id"], "kind": "invoice_delivery_failed"}
        )
    )["data"]
    (item,) = items
    assert item["refs"]["invoice"] == invoice["id"]
    assert address in item["next_action"]
    assert "550" in item["next_action"]

    # Fixed address, sent again: the failed e-mail is queued again and goes out.
    mail.sink.refuse.clear()
    mail.send(invoice)
    mail.send_due()
    assert len(mail.sink.to(address)) == 1
    assert mail.get(invoice)["delivered_at"] is not None
    fixed = mail.api.ok(mail.api.get(f"/v1/exception_items/{item['id']}"))
    assert fixed["status"] == "resolved"
    assert fixed["history"][-1]["action"] == "resolved"


def test_server_down_is_retried_by_the_schedule_then_succeeds(mail_factory: Any) -> None:
    mail: Mail = mail_factory(server_up=False)
    address = mail.address()
    invoice = mail.invoice(address)
    mail.send(invoice)
    mail.send_due()  # connection refused
    (row,) = mail.emails(invoice)
    assert (row["status"], row["attempt_count"]) == ("pending", 1)
    assert row["next_attempt_at"] == "2030-01-07T09:01:00.000Z"
    assert "cannot reach the mail server" in row["error"]

    mail.send_due()  # not due yet: no attempt
    assert mail.emails(invoice)[0]["attempt_count"] == 1
    mail.clock.advance(timedelta(minutes=1))
    mail.send_due()
    (row,) = mail.emails(invoice)
    assert (row["status"], row["attempt_count"]) == ("pending", 2)
    assert row["next_attempt_at"] == "2030-01-07T09:06:00.000Z"

    mail.start_server()
    mail.clock.advance(timedelta(minutes=4, seconds=59))
    mail.send_due()
    assert mail.sink.to(address) == []
    mail.clock.advance(timedelta(seconds=1))
    mail.send_due()
    assert len(mail.sink.to(address)) == 1
    (row,) = mail.emails(invoice)
    assert (row["status"], row["attempt_count"], row["error"]) == ("sent", 3, None)
    assert mail.get(invoice)["delivered_at"] == "2030-01-07T09:06:00.000Z"


def test_a_4xx_reply_is_retried(mail: Mail) -> None:
    address = mail.address()
    mail.sink.defer_once.add(address)
    invoice = mail.invoice(address)
    mail.send(invoice)
    mail.send_due()
    (row,) = mail.emails(invoice)
    assert (row["status"], row["attempt_count"]) == ("pending", 1)
    assert "450" in row["error"]
    mail.clock.advance(timedelta(minutes=1))
    mail.send_due()
    assert len(mail.sink.to(address)) == 1
    assert mail.emails(invoice)[0]["status"] == "sent"


def test_server_down_for_good_fails_after_the_last_attempt(mail_factory: Any) -> None:
    mail: Mail = mail_factory(server_up=False)
    invoice = mail.invoice(mail.address())
    mail.send(invoice)
    mail.send_due()
    for delay in invoice_email.RETRY_DELAYS:
        assert mail.emails(invoice)[0]["status"] == "pending"
        mail.clock.advance(delay)
        mail.send_due()
    (row,) = mail.emails(invoice)
    assert (row["status"], row["attempt_count"]) == ("failed", invoice_email.ATTEMPTS_MAX)
    assert mail.get(invoice)["delivered_at"] is None
    items = mail.api.ok(
        mail.api.get(
            "/v1/exception_items", {"invoice": invoice["id"], "kind": "invoice_delivery_failed"}
        )
    )["data"]
    assert len(items) == 1
    assert "after 6 attempts" in items[0]["next_action"]


def test_without_smtp_send_writes_the_eml_at_once(mail_factory: Any, tmp_path: Path) -> None:
    """SPEC "E-mail": unset SMTP, each message with its PDF is an .eml under the mail directory,
    accepted at once; reminders go the same way."""
    mail: Mail = mail_factory(smtp=False, mail_dir=str(tmp_path))
    address = mail.address()
    invoice = mail.invoice(address, due_in_days=1)
    assert mail.send(invoice)["delivered_at"] == "2030-01-07T09:00:00.000Z"
    (sent,) = mail.emails(invoice)
    assert sent["status"] == "sent"
    files = sorted(tmp_path.glob("*.eml"))
    assert [f.name for f in files] == [f"{sent['id']}.eml"]
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == address
    (attachment,) = list(message.iter_attachments())  # type: ignore[attr-defined]
    assert attachment.get_content().startswith(b"%PDF")
    # A second send changes nothing; the reminder due tomorrow lands in the directory too.
    mail.send(invoice)
    assert len(list(tmp_path.glob("*.eml"))) == 1
    mail.day(1)
    assert len(list(tmp_path.glob("*.eml"))) == 2


def test_invoice_emails_of_another_account_are_not_found(mail_factory: Any) -> None:
    mail: Mail = mail_factory()
    other: Mail = mail_factory()
    invoice = mail.invoice(mail.address())
    response = other.api.get(f"/v1/invoices/{invoice['id']}/emails")
    assert response.status_code == 404


def test_parse_smtp_url() -> None:
    plain = invoice_email.parse_smtp_url("smtp://127.0.0.1:8025")
    assert (plain.host, plain.port, plain.starttls, plain.implicit_tls) == (
        "127.0.0.1",
        8025,
        False,
        False,
    )
    assert plain.username is None
    tls = invoice_email.parse_smtp_url("smtp://u%40x:p%3Aw@mail.example?starttls=true")
    assert (tls.port, tls.starttls, tls.username, tls.password) == (587, True, "u@x", "p:w")
    implicit = invoice_email.parse_smtp_url("smtps://mail.example")
    assert (implicit.port, implicit.implicit_tls, implicit.starttls) == (465, True, False)
    with pytest.raises(ValueError):
        invoice_email.parse_smtp_url("http://mail.example")


# --- dunning -----------------------------------------------------------------------------


def reminder_days(mail: Mail, address: str, invoice: dict[str, Any]) -> list[int]:
    """Days relative to the due date on which reminders reached the address."""
    due = date.fromisoformat(invoice["due_date"])
    return [
        (email.utils.parsedate_to_datetime(m["Date"]).date() - due).days
        for m in mail.sink.to(address)
        if "invoice" not in m["Subject"].split(" ", 1)[0].lower()
    ]


def test_reminders_go_out_on_the_schedule_days_once_each(mail: Mail) -> None:
    address = mail.address()
    invoice = mail.delivered(address, due_in_days=10)
    assert mail.api.ok(mail.api.get("/v1/dunning_settings")) == {
        "object": "dunning_settings",
        "enabled": True,
        "reminder_offsets_days": [-3, 0, 7, 14],
        "mark_uncollectible_after_days": None,
        "updated": None,
    }
    for _ in range(40):
        mail.day()
        mail.remind()  # a second pass on the same day changes nothing
        mail.send_due()
    assert reminder_days(mail, address, invoice) == [-3, 0, 7, 14]
    subjects = [m["Subject"] for m in mail.sink.to(address)[1:]]
    assert subjects[0].startswith("Reminder:") and subjects[2].startswith("Overdue:")
    assert all(attachments(m)[0].get_content().startswith(b"%PDF") for m in mail.sink.to(address))
    assert [row["purpose"] for row in mail.emails(invoice)] == [
        "invoice",
        "reminder:-3",
        "reminder:0",
        "reminder:7",
        "reminder:14",
    ]
    assert len(mail.events(invoice, "invoice.reminder_sent")) == 4
    assert mail.get(invoice)["status"] == "open"


def test_no_reminder_after_payment(mail: Mail) -> None:
    address = mail.address()
    invoice = mail.delivered(address, due_in_days=5)
    mail.day(2)  # due - 3
    assert reminder_days(mail, address, invoice) == [-3]
    mail.clock.advance(timedelta(days=3))  # due day: the reminder is queued …
    mail.remind()
    assert mail.emails(invoice)[-1]["status"] == "pending"
    paid = mail.api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "wire-7781"})
    assert mail.api.ok(paid)["status"] == "paid"
    mail.send_due()  # … and cancelled, not sent, once the invoice is paid
    assert mail.emails(invoice)[-1]["status"] == "cancelled"
    for _ in range(30):
        mail.day()
    assert reminder_days(mail, address, invoice) == [-3]
    assert len(mail.events(invoice, "invoice.reminder_sent")) == 1


def test_a_late_invoice_gets_only_the_latest_reminder(mail: Mail) -> None:
    address = mail.address()
    invoice = mail.delivered(address, due_in_days=-10)
    mail.remind()
    mail.send_due()
    # Due 10 days ago: the +7 reminder goes out now; -3 and 0 are skipped, not sent in a burst.
    assert reminder_days(mail, address, invoice) == [10]
    assert [row["purpose"] for row in mail.emails(invoice)] == ["invoice", "reminder:7"]
    for _ in range(3):
        mail.day()
    assert reminder_days(mail, address, invoice) == [10]
    mail.day()  # due + 14
    assert reminder_days(mail, address, invoice) == [10, 14]
    assert [row["purpose"] for row in mail.emails(invoice)][-1] == "reminder:14"


def test_no_reminder_for_an_invoice_never_sent(mail: Mail) -> None:
    address = mail.address()
    invoice = mail.invoice(address, due_in_days=1)
    mail.day(5)
    assert mail.emails(invoice) == []
    assert mail.sink.to(address) == []


def test_disabled_dunning_sends_nothing(mail: Mail) -> None:
    address = mail.address()
    mail.api.ok(
        mail.api.client.put(
            "/v1/dunning_settings",
            json={"enabled": False, "reminder_offsets_days": [0]},
            headers={**mail.api.auth, "Idempotency-Key": uuid.uuid4().hex},
        )
    )
    invoice = mail.delivered(address, due_in_days=1)
    mail.day(3)
    assert reminder_days(mail, address, invoice) == []


def test_auto_mark_uncollectible_after_n_days(mail: Mail) -> None:
    response = mail.api.client.put(
        "/v1/dunning_settings",
        json={"enabled": True, "reminder_offsets_days": [], "mark_uncollectible_after_days": 30},
        headers={**mail.api.auth, "Idempotency-Key": uuid.uuid4().hex},
    )
    settings = mail.api.ok(response)
    assert settings["mark_uncollectible_after_days"] == 30
    assert settings["updated"] == "2030-01-07T09:00:00.000Z"
    invoice = mail.delivered(due_in_days=0)
    mail.day(29)
    assert mail.get(invoice)["status"] == "open"
    mail.day()
    marked = mail.get(invoice)
    assert marked["status"] == "uncollectible"
    assert marked["marked_uncollectible_at"] == "2030-02-06T09:00:00.000Z"
    assert len(mail.events(invoice, "invoice.marked_uncollectible")) == 1
    mail.day()
    assert len(mail.events(invoice, "invoice.marked_uncollectible")) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"enabled": True, "reminder_offsets_days": [1, 1]}, "reminder_offsets_days"),
        ({"enabled": True, "reminder_offsets_days": [-61]}, "reminder_offsets_days[0]"),
        ({"enabled": True, "reminder_offsets_days": [366]}, "reminder_offsets_days[0]"),
        ({"enabled": True, "reminder_offsets_days": list(range(11))}, "reminder_offsets_days"),
        ({"enabled": True, "reminder_offsets_days": ["3"]}, "reminder_offsets_days[0]"),
        ({"reminder_offsets_days": [3]}, "enabled"),
        (
            {"enabled": True, "reminder_offsets_days": [], "mark_uncollectible_after_days": 0},
            "mark_uncollectible_after_days",
        ),
        ({"enabled": True, "reminder_offsets_days": [], "extra": 1}, "extra"),
    ],
)
def test_dunning_settings_are_validated(mail: Mail, body: dict[str, Any], param: str) -> None:
    response = mail.api.client.put(
        "/v1/dunning_settings",
        json=body,
        headers={**mail.api.auth, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["object"]) == (param, "dunning_settings")


def test_dunning_settings_round_trip(mail: Mail) -> None:
    body = {
        "enabled": True,
        "reminder_offsets_days": [14, -5, 0],
        "mark_uncollectible_after_days": 90,
    }
    response = mail.api.client.put(
        "/v1/dunning_settings",
        json=body,
        headers={**mail.api.auth, "Idempotency-Key": uuid.uuid4().hex},
    )
    put = mail.api.ok(response)
    got = mail.api.ok(mail.api.get("/v1/dunning_settings"))
    assert put == got
    assert got["reminder_offsets_days"] == [-5, 0, 14]
    assert got["mark_uncollectible_after_days"] == 90


def test_worker_ignores_a_bad_smtp_url(mail: Mail) -> None:
    bad = mail.settings.model_copy(update={"smtp_url": "mailto:nobody"})
    assert invoice_email.send_due_emails(mail.state.sessions, mail.clock, bad) == 0
