"""Payment evidence from providers: signed webhooks in, payments and invoice state out.

Signatures are made by the official `stripe` and `standardwebhooks` libraries."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient
from stripe import WebhookSignature

from conftest import Api, create_account, make_settings, row_counts
from invoicetrail.api import create_app
from invoicetrail.core.clock import ManualClock
from invoicetrail.worker import Worker

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STRIPE_SECRET = "whsec_test_stripe_secret_for_invoicetrail"


class Provider:
    """A provider endpoint of one account and a sender that signs like the real thing."""

    def __init__(self, api: Api, provider: str, secret: str) -> None:
        self.api = api
        self.provider = provider
        self.secret = secret
        created = api.ok(
            api.post("/v1/provider_endpoints", {"provider": provider, "secret": secret})
        )
        self.endpoint = created
        self.url = created["url"]

    def send_stripe(
        self,
        event: dict[str, Any],
        *,
        secret: str | None = None,
        at: int | None = None,
        tamper: bool = False,
    ) -> Any:
        body = json.dumps(event)
        header = WebhookSignature.generate_signature_header(
            body, secret or self.secret, timestamp=at or int(time.time())
        )
        if tamper:
            body = body.replace('"amount_received": ', '"amount_received": 1')
        return self.api.client.post(
            self.url, content=body.encode(), headers={"Stripe-Signature": header}
        )

    def send_sw(
        self,
        event: dict[str, Any],
        *,
        msg_id: str | None = None,
        secret: str | None = None,
        at: datetime | None = None,
        extra_signature: str | None = None,
    ) -> Any:
        body = json.dumps(event)
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        when = at or datetime.now(UTC)
        signature = Webhook(secret or self.secret).sign(msg_id=msg_id, timestamp=when, data=body)
        if extra_signature:
            signature = f"{extra_signature} {signature}"
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature,
            "Content-Type": "text/plain",  # ignored: the raw bytes are what counts
        }
        return self.api.client.post(self.url, content=body.encode(), headers=headers)


def pi_event(
    event_type: str,
    invoice: dict[str, Any],
    *,
    pi: str,
    amount: int,
    method: str = "card",
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "type": event_type,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": pi,
                "object": "payment_intent",
                "amount": amount,
                "amount_received": amount if event_type.endswith("succeeded") else 0,
                "currency": invoice["currency"],
                "metadata": {"invoice": invoice["id"]},
                "payment_method_types": [method],
            }
        },
    }


def sw_event(
    event_type: str,
    *,
    reference: str,
    amount: int,
    currency: str = "eur",
    invoice: str | None = None,
    method: str = "ach",
    reference_code: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "payment_reference": reference,
        "amount": amount,
        "currency": currency,
        "method": method,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    if invoice:
        data["invoice"] = invoice
    if reference_code is not None:
        data["reference_code"] = reference_code
    return {"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": data}


@pytest.fixture
def stripe_endpoint(api: Api) -> Provider:
    return Provider(api, "stripe", STRIPE_SECRET)


@pytest.fixture
def sw_endpoint(api: Api) -> Provider:
    return Provider(api, "standard_webhooks", SW_SECRET)


def payments_of(api: Api, invoice_id: str) -> list[dict[str, Any]]:
    return api.ok(api.get("/v1/payments", {"invoice": invoice_id}))["data"]


def items(api: Api, **filters: str) -> list[dict[str, Any]]:
    return api.ok(api.get("/v1/exception_items", {"limit": 100, **filters}))["data"]


def test_endpoint_secret_is_never_returned(api: Api) -> None:
    given = api.ok(api.post("/v1/provider_endpoints", {"provider": "stripe", "secret": "whsec_x1"}))
    assert given["id"].startswith("pe_")
    assert given["url"] == f"/v1/providers/stripe/webhooks/{given['id']}"
    assert given["secret"] is None
    generated = api.ok(api.post("/v1/provider_endpoints", {"provider": "standard_webhooks"}))
    assert generated["secret"].startswith("whsec_")
    fetched = api.ok(api.get(f"/v1/provider_endpoints/{generated['id']}"))
    assert fetched["secret"] is None
    bad = api.post("/v1/provider_endpoints", {"provider": "standard_webhooks", "secret": "plain"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "secret"


def test_stripe_card_payment_pays_the_invoice_once(api: Api, stripe_endpoint: Provider) -> None:
    invoice = api.open_invoice()
    event = pi_event("payment_intent.succeeded", invoice, pi="pi_card_1", amount=invoice["total"])
    first = stripe_endpoint.send_stripe(event)
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "applied"
    paid = api.ok(api.get(f"/v1/invoices/{invoice['id']}"))
    assert paid["status"] == "paid"
    [payment] = payments_of(api, invoice["id"])
    assert payment["reference"] == "pi_card_1"
    assert payment["provider"] == "stripe"
    assert payment["method"] == "card"
    assert payment["provider_event_ids"] == [event["id"]]
    before = row_counts(api)

    again = stripe_endpoint.send_stripe(event)
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    after = row_counts(api)
    assert {k: v for k, v in after.items() if k != "events"} == {
        k: v for k, v in before.items() if k != "events"
    }
    assert after["events"] == before["events"]
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}")) == paid


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("tamper", "signature_invalid"),
        ("wrong_secret", "signature_invalid"),
        ("stale", "timestamp_out_of_tolerance"),
        ("future", "timestamp_out_of_tolerance"),
        ("no_header", "signature_invalid"),
    ],
)
def test_bad_stripe_requests_are_kept_and_change_nothing(
    api: Api, stripe_endpoint: Provider, change: str, code: str
) -> None:
    invoice = api.open_invoice()
    event = pi_event("payment_intent.succeeded", invoice, pi="pi_bad", amount=invoice["total"])
    before = row_counts(api)
    if change == "no_header":
        response = api.client.post(stripe_endpoint.url, content=json.dumps(event).encode())
    else:
        response = stripe_endpoint.send_stripe(
            event,
            tamper=change == "tamper",
            secret="whsec_wrong" if change == "wrong_secret" else None,
            # 30 s past the 300 s tolerance: int() truncation and a slow request cannot bring
            # a "future" signature back inside it.
            at={"stale": int(time.time()) - 330, "future": int(time.time()) + 330}.get(change),
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["Request-Id"]
    assert row_counts(api) == before
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["status"] == "open"
    kept = api.ok(api.get("/v1/provider_events", {"verification": code}))["data"]
    assert kept and kept[0]["id"] == error["provider_event"]
    assert kept[0]["outcome"] == "refused"

    genuine = stripe_endpoint.send_stripe(event)
    assert genuine.status_code == 200
    assert genuine.json()["outcome"] == "applied"


def test_unknown_endpoint_and_too_large(api: Api, client: TestClient) -> None:
    unknown = client.post("/v1/providers/stripe/webhooks/pe_nope", content=b"{}")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_endpoint"
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    wrong_provider = client.post(endpoint.url.replace("standard_webhooks", "stripe"), content=b"{}")
    assert wrong_provider.json()["error"]["code"] == "unknown_endpoint"
    huge = client.post(endpoint.url, content=b"x" * (1_048_576 + 1))
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"


def test_secret_rotation_overlaps(api: Api, sw_endpoint: Provider) -> None:
    new_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    rotated = api.ok(
        api.post(
            f"/v1/provider_endpoints/{sw_endpoint.endpoint['id']}/rotate_secret",
            {"secret": new_secret},
        )
    )
    assert rotated["previous_secret_expires_at"] is not None
    invoice = api.open_invoice()
    old = sw_endpoint.send_sw(
        sw_event("payment.processing", reference="r-old", amount=100, invoice=invoice["id"])
    )
    new = sw_endpoint.send_sw(
        sw_event("payment.processing", reference="r-new", amount=100, invoice=invoice["id"]),
        secret=new_secret,
    )
    both = sw_endpoint.send_sw(
        sw_event("payment.processing", reference="r-both", amount=100, invoice=invoice["id"]),
        secret=new_secret,
        extra_signature="v1,bm90IGEgc2lnbmF0dXJl",
    )
    assert (old.status_code, new.status_code, both.status_code) == (200, 200, 200)

    api.ok(
        api.post(
            f"/v1/provider_endpoints/{sw_endpoint.endpoint['id']}/rotate_secret",
            {"secret": SW_SECRET, "expire_previous_after_seconds": 0},
        )
    )
    refused = sw_endpoint.send_sw(
        sw_event("payment.processing", reference="r-x", amount=100, invoice=invoice["id"]),
        secret=new_secret,
    )
    assert refused.status_code == 400


def test_ach_processing_then_succeeded(api: Api, sw_endpoint: Provider) -> None:
    invoice = api.open_invoice()
    body = {"reference": "ach-1", "amount": invoice["total"], "invoice": invoice["id"]}
    processing = sw_endpoint.send_sw(sw_event("payment.processing", **body))
    assert processing.status_code == 200
    still_open = api.ok(api.get(f"/v1/invoices/{invoice['id']}"))
    assert (still_open["status"], still_open["amount_paid"]) == ("open", 0)
    [payment] = payments_of(api, invoice["id"])
    assert (payment["status"], payment["method"]) == ("processing", "ach")

    assert sw_endpoint.send_sw(sw_event("payment.succeeded", **body)).status_code == 200
    paid = api.ok(api.get(f"/v1/invoices/{invoice['id']}"))
    assert paid["status"] == "paid"
    [payment] = payments_of(api, invoice["id"])
    assert payment["status"] == "succeeded"
    assert len(payment["provider_event_ids"]) == 2


def test_ach_failure_leaves_the_invoice_open(api: Api, sw_endpoint: Provider) -> None:
    invoice = api.open_invoice()
    body = {"reference": "ach-2", "amount": invoice["total"], "invoice": invoice["id"]}
    sw_endpoint.send_sw(sw_event("payment.processing", **body))
    sw_endpoint.send_sw(sw_event("payment.failed", **body))
    after = api.ok(api.get(f"/v1/invoices/{invoice['id']}"))
    assert (after["status"], after["amount_paid"]) == ("open", 0)
    assert payments_of(api, invoice["id"])[0]["status"] == "failed"
    failed_events = api.ok(api.get("/v1/events", {"type": "payment.failed"}))["data"]
    assert failed_events[0]["data"]["object"]["reference"] == "ach-2"


@pytest.mark.parametrize(
    ("sequence", "final", "kind"),
    [
        (["succeeded", "processing"], "succeeded", "stale_event"),
        (["succeeded", "failed"], "succeeded", "contradictory_event"),
        (["failed", "succeeded"], "failed", "contradictory_event"),
        (["failed", "processing"], "failed", "stale_event"),
        (["refunded", "succeeded"], "refunded", "stale_event"),
    ],
)
def test_late_and_contradictory_events_never_move_backward(
    api: Api, sw_endpoint: Provider, sequence: list[str], final: str, kind: str
) -> None:
    invoice = api.open_invoice()
    body = {"reference": "ooo", "amount": invoice["total"], "invoice": invoice["id"]}
    responses = [sw_endpoint.send_sw(sw_event(f"payment.{s}", **body)) for s in sequence]
    assert all(r.status_code == 200 for r in responses)
    [payment] = payments_of(api, invoice["id"])
    assert payment["status"] == final
    assert len(payment["provider_event_ids"]) == len(sequence)
    [item] = items(api, kind=kind)
    assert item["refs"]["invoice"] == invoice["id"]
    assert item["refs"]["payment"] == payment["id"]
    assert item["refs"]["provider_event"] == responses[-1].json()["provider_event"]
    assert item["next_action"]
    money_in = final in ("succeeded", "refunded")
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["amount_paid"] == (
        invoice["total"] if money_in else 0
    )


def test_manual_pay_and_provider_event_with_one_reference_are_one_payment(
    api: Api, stripe_endpoint: Provider
) -> None:
    invoice = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{invoice['id']}/pay", {"reference": "pi_shared"}))
    event = pi_event("payment_intent.succeeded", invoice, pi="pi_shared", amount=invoice["total"])
    assert stripe_endpoint.send_stripe(event).json()["outcome"] == "repeat"
    [payment] = payments_of(api, invoice["id"])
    assert payment["provider_event_ids"] == [event["id"]]
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["amount_paid"] == invoice["total"]


def test_transfers_match_by_reference_code(api: Api, sw_endpoint: Provider) -> None:
    exact = api.open_invoice()
    partial = api.open_invoice()
    over = api.open_invoice()
    messy = exact["bank_transfer_reference"].lower().replace("-", " ")
    sw_endpoint.send_sw(
        sw_event(
            "transfer.received",
            reference="bt-1",
            amount=exact["total"],
            method="bank_transfer",
            reference_code=messy,
        )
    )
    sw_endpoint.send_sw(
        sw_event(
            "transfer.received",
            reference="bt-2",
            amount=100,
            method="bank_transfer",
            reference_code=partial["bank_transfer_reference"],
        )
    )
    sw_endpoint.send_sw(
        sw_event(
            "transfer.received",
            reference="bt-3",
            amount=over["total"] + 77,
            method="bank_transfer",
            reference_code=over["bank_transfer_reference"],
        )
    )
    assert api.ok(api.get(f"/v1/invoices/{exact['id']}"))["status"] == "paid"
    part = api.ok(api.get(f"/v1/invoices/{partial['id']}"))
    assert (part["status"], part["amount_paid"]) == ("open", 100)
    assert api.ok(api.get(f"/v1/invoices/{over['id']}"))["status"] == "paid"
    credit = api.ok(api.get(f"/v1/customers/{over['customer']}"))["credit_balance"]
    assert credit == {"eur": 77}
    assert payments_of(api, exact["id"])[0]["reference"] == "bt-1"


def test_unmatched_transfer_is_parked_then_applied(api: Api, sw_endpoint: Provider) -> None:
    invoice = api.open_invoice()
    typo = list(invoice["bank_transfer_reference"])
    typo[0] = "1" if typo[0] != "1" else "2"
    response = sw_endpoint.send_sw(
        sw_event(
            "transfer.received",
            reference="bt-lost",
            amount=invoice["total"],
            method="bank_transfer",
            reference_code="".join(typo),
        )
    )
    assert response.json()["outcome"] == "unmatched"
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["status"] == "open"
    [item] = items(api, kind="unmatched_transfer")
    parked = api.ok(api.get(f"/v1/payments/{item['refs']['payment']}"))
    assert (parked["invoice"], parked["status"], parked["amount"]) == (
        None,
        "succeeded",
        invoice["total"],
    )
    assert item["detail"]["payment_reference"] == "bt-lost"
    assert item["detail"]["reference_code"] == "".join(typo)
    assert item["refs"]["provider_event"] == response.json()["provider_event"]
    assert api.ok(api.get(f"/v1/customers/{invoice['customer']}"))["credit_balance"] == {}

    applied = api.ok(api.post(f"/v1/payments/{parked['id']}/apply", {"invoice": invoice["id"]}))
    assert applied["invoice"] == invoice["id"]
    assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["status"] == "paid"
    assert api.ok(api.get(f"/v1/exception_items/{item['id']}"))["status"] == "resolved"
    again = api.post(f"/v1/payments/{parked['id']}/apply", {"invoice": invoice["id"]})
    assert again.status_code == 409


def test_refund_and_dispute_never_revert_the_invoice(api: Api, stripe_endpoint: Provider) -> None:
    invoice = api.open_invoice()
    stripe_endpoint.send_stripe(
        pi_event("payment_intent.succeeded", invoice, pi="pi_r", amount=invoice["total"])
    )
    refund = {
        "id": f"evt_{uuid.uuid4().hex[:20]}",
        "type": "charge.refunded",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": "ch_1",
                "payment_intent": "pi_r",
                "amount": invoice["total"],
                "amount_refunded": invoice["total"],
                "refunded": True,
                "currency": "eur",
            }
        },
    }
    assert stripe_endpoint.send_stripe(refund).json()["outcome"] == "applied"
    [payment] = payments_of(api, invoice["id"])
    assert payment["status"] == "refunded"
    after = api.ok(api.get(f"/v1/invoices/{invoice['id']}"))
    assert (after["status"], after["amount_paid"]) == ("paid", invoice["total"])

    other = api.open_invoice()
    stripe_endpoint.send_stripe(
        pi_event("payment_intent.succeeded", other, pi="pi_d", amount=other["total"])
    )
    dispute = {
        **refund,
        "id": f"evt_{uuid.uuid4().hex[:20]}",
        "type": "charge.dispute.created",
        "data": {
            "object": {
                "id": "dp_1",
                "payment_intent": "pi_d",
                "amount": other["total"],
                "currency": "eur",
            }
        },
    }
    stripe_endpoint.send_stripe(dispute)
    assert payments_of(api, other["id"])[0]["status"] == "disputed"
    assert api.ok(api.get(f"/v1/invoices/{other['id']}"))["status"] == "paid"


def test_unknown_types_are_stored_and_acknowledged(api: Api, stripe_endpoint: Provider) -> None:
    before = row_counts(api)
    event = {
        "id": "evt_unknown_1",
        "type": "customer.created",
        "created": 1,
        "data": {"object": {}},
    }
    response = stripe_endpoint.send_stripe(event)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert row_counts(api) == before
    stored = api.ok(api.get(f"/v1/provider_events/{response.json()['provider_event']}"))
    assert (stored["provider_event_id"], stored["type"]) == ("evt_unknown_1", "customer.created")


def test_forged_copy_never_blocks_the_genuine_event(api: Api, sw_endpoint: Provider) -> None:
    invoice = api.open_invoice()
    event = sw_event(
        "payment.succeeded",
        reference="r-f",
        amount=invoice["total"],
        invoice=invoice["id"],
        method="card",
    )
    forged = sw_endpoint.send_sw(event, msg_id="msg_same", secret="whsec_" + "Zm9yZ2VyeQ==" * 3)
    assert forged.status_code == 400
    genuine = sw_endpoint.send_sw(event, msg_id="msg_same")
    assert genuine.json()["outcome"] == "applied"
    assert sw_endpoint.send_sw(event, msg_id="msg_same").json()["outcome"] == "duplicate"


def test_events_for_another_accounts_invoice_change_nothing_there(api: Api, other_api: Api) -> None:
    victim = other_api.open_invoice()
    endpoint = Provider(api, "standard_webhooks", SW_SECRET)
    response = endpoint.send_sw(
        sw_event(
            "payment.succeeded",
            reference="r-x",
            amount=victim["total"],
            invoice=victim["id"],
            method="card",
        )
    )
    assert response.status_code == 200
    assert response.json()["outcome"] == "unmatched"
    assert other_api.ok(other_api.get(f"/v1/invoices/{victim['id']}"))["status"] == "open"
    [item] = items(api, kind="payment_without_invoice")
    assert item["refs"]["invoice"] is None


def test_simulated_provider_through_the_worker(db_url: str) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    settings = make_settings(db_url)
    app = create_app(settings, clock)
    worker = Worker(settings, clock)
    with TestClient(app) as client:
        account_id, key = create_account(app.state.invoicetrail)
        api = Api(client=client, account_id=account_id, secret_key=key)
        card = api.open_invoice()
        ach = api.open_invoice()
        transfer = api.open_invoice()
        api.ok(api.post("/v1/simulated/payments", {"invoice": card["id"], "method": "card"}))
        api.ok(
            api.post(
                "/v1/simulated/payments",
                {"invoice": ach["id"], "method": "ach", "settle_after_seconds": 3600},
            )
        )
        api.ok(
            api.post(
                "/v1/simulated/payments", {"invoice": transfer["id"], "method": "bank_transfer"}
            )
        )
        assert api.ok(api.get(f"/v1/invoices/{card['id']}"))["status"] == "open"

        report = worker.run_once()
        assert report.simulated_events_sent == 3
        assert api.ok(api.get(f"/v1/invoices/{card['id']}"))["status"] == "paid"
        assert api.ok(api.get(f"/v1/invoices/{transfer['id']}"))["status"] == "paid"
        assert payments_of(api, ach["id"])[0]["status"] == "processing"
        assert api.ok(api.get(f"/v1/invoices/{ach['id']}"))["status"] == "open"

        assert worker.run_once().simulated_events_sent == 0
        clock.advance(timedelta(seconds=3601))
        assert worker.run_once().simulated_events_sent == 1
        assert api.ok(api.get(f"/v1/invoices/{ach['id']}"))["status"] == "paid"
        [payment] = payments_of(api, card["id"])
        assert payment["provider"] == "simulated"
        events = api.ok(api.get("/v1/provider_events", {"invoice": card["id"]}))["data"]
        assert [e["verification"] for e in events] == ["verified"]
    worker.close()


def test_money_an_invoice_cannot_take_becomes_credit_with_an_item(
    api: Api, sw_endpoint: Provider
) -> None:
    paid = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{paid['id']}/pay", {"reference": "first"}))
    late = sw_endpoint.send_sw(
        sw_event(
            "payment.succeeded", reference="second", amount=300, invoice=paid["id"], method="card"
        )
    )
    assert late.status_code == 200
    [closed] = items(api, kind="payment_for_closed_invoice")
    assert closed["refs"]["invoice"] == paid["id"]
    other_currency = api.open_invoice()
    sw_endpoint.send_sw(
        sw_event(
            "payment.succeeded",
            reference="usd-1",
            amount=400,
            currency="usd",
            invoice=other_currency["id"],
            method="card",
        )
    )
    [mismatch] = items(api, kind="amount_mismatch")
    assert mismatch["refs"]["invoice"] == other_currency["id"]
    assert api.ok(api.get(f"/v1/invoices/{other_currency['id']}"))["amount_paid"] == 0
    paid_customer = api.ok(api.get(f"/v1/customers/{paid['customer']}"))["credit_balance"]
    assert paid_customer == {"eur": 300}
    other_customer = api.ok(api.get(f"/v1/customers/{other_currency['customer']}"))
    assert other_customer["credit_balance"] == {"usd": 400}
    receipts = api.ok(api.get("/v1/journal_entries", {"invoice": paid["id"], "limit": 100}))
    keys = {e["business_key"] for e in receipts["data"]}
    assert f"receipt:{paid['id']}:second" in keys
