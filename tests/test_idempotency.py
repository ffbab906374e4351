"""Idempotency as SPEC fixes it: stored with the write, replayed byte for byte, per account."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from conftest import Api, create_account, make_settings, row_counts
from invoicetrail.api import create_app
from invoicetrail.core.clock import ManualClock
from invoicetrail.core.config import Settings
from invoicetrail.core.idempotency import advisory_lock_key
from invoicetrail.worker import Worker


def _invoice_body(api: Api, **extra: object) -> dict[str, object]:
    return {
        "customer": api.customer()["id"],
        "currency": "usd",
        "lines": [{"description": "Seat", "quantity": "3", "unit_amount": 999, "tax_rate": "0"}],
        **extra,
    }


def test_replay_is_byte_identical_and_marked(api: Api) -> None:
    body = _invoice_body(api)
    first = api.post("/v1/invoices", body, key="create-1")
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    before = row_counts(api)

    replay = api.post("/v1/invoices", body, key="create-1")
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Request-Id"] != first.headers["Request-Id"]
    assert row_counts(api) == before


def test_replay_ignores_json_key_order_and_spacing(api: Api) -> None:
    body = _invoice_body(api)
    first = api.post("/v1/invoices", body, key="order-1")
    reordered = dict(reversed(list(body.items())))
    replay = api.client.post(
        "/v1/invoices",
        content=(" " + json.dumps(reordered, indent=2)).encode(),
        headers={**api.auth, "Idempotency-Key": "order-1", "Content-Type": "application/json"},
    )
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_same_key_different_body_is_422_even_if_the_new_body_is_invalid(api: Api) -> None:
    body = _invoice_body(api)
    assert api.post("/v1/invoices", body, key="k-422").status_code == 200
    before = row_counts(api)
    changed = api.post("/v1/invoices", {**body, "currency": "eur"}, key="k-422")
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    invalid = api.post("/v1/invoices", {"nonsense": True}, key="k-422")
    assert invalid.status_code == 422
    other_path = api.post("/v1/customers", {"name": "x"}, key="k-422")
    assert other_path.status_code == 422
    assert row_counts(api) == before


def test_missing_and_invalid_keys_are_400(api: Api) -> None:
    before = row_counts(api)
    missing = api.client.post("/v1/customers", json={"name": "n"}, headers=api.auth)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "idempotency_key_required"
    too_long = api.post("/v1/customers", {"name": "n"}, key="k" * 256)
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "idempotency_key_invalid"
    ok = api.post("/v1/customers", {"name": "n"}, key="k" * 255)
    assert ok.status_code == 200
    assert row_counts(api)["customers"] == before["customers"] + 1


def test_keys_are_scoped_per_account(api: Api, other_api: Api) -> None:
    a = api.post("/v1/customers", {"name": "Same key A"}, key="shared-key")
    b = other_api.post("/v1/customers", {"name": "Same key B"}, key="shared-key")
    assert a.status_code == b.status_code == 200
    assert a.json()["id"] != b.json()["id"]
    assert "Idempotent-Replayed" not in b.headers
    assert other_api.get(f"/v1/customers/{a.json()['id']}").status_code == 404


def test_refused_write_stores_no_key_and_a_retry_can_succeed(api: Api) -> None:
    draft = api.draft(collection_method="send_invoice")
    refused = api.post(f"/v1/invoices/{draft['id']}/finalize", key="fin-1")
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "due_date"
    api.ok(api.patch(f"/v1/invoices/{draft['id']}", {"due_date": "2030-01-31"}))
    retried = api.post(f"/v1/invoices/{draft['id']}/finalize", key="fin-1")
    assert retried.status_code == 200
    assert retried.json()["status"] == "open"
    assert "Idempotent-Replayed" not in retried.headers


def test_business_key_holds_across_fresh_idempotency_keys(api: Api) -> None:
    body = _invoice_body(api, external_reference="order-77")
    first = api.ok(api.post("/v1/invoices", body))
    second = api.post("/v1/invoices", body)
    assert second.status_code == 409
    error = second.json()["error"]
    assert error["code"] == "duplicate_external_reference"
    assert error["existing_id"] == first["id"]
    assert first["id"] in error["message"]


def test_key_in_flight_is_409_retryable(client: TestClient, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("on SQLite a second writer waits for the write lock instead (SPEC)")
    account_id, secret_key = create_account(client.app.state.invoicetrail)  # type: ignore[attr-defined]
    api = Api(client=client, account_id=account_id, secret_key=secret_key)
    dsn = db_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn, autocommit=True) as holder:
        # Another request holding the key: the same lock a live request takes.
        holder.execute("SELECT pg_advisory_lock(%s)", (advisory_lock_key(account_id, "busy"),))
        in_flight = api.post("/v1/customers", {"name": "n"}, key="busy")
        holder.execute("SELECT pg_advisory_unlock_all()")
    assert in_flight.status_code == 409
    error = in_flight.json()["error"]
    assert error["code"] == "idempotency_key_in_use"
    assert error["retryable"] is True
    assert api.post("/v1/customers", {"name": "n"}, key="busy").status_code == 200


def test_retention_floor_is_one_day() -> None:
    with pytest.raises(ValidationError):
        Settings(idempotency_retention_days=0)


def test_worker_prunes_expired_keys_then_the_key_is_free(db_url: str) -> None:
    clock = ManualClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    settings = make_settings(db_url, idempotency_retention_days=2)
    app = create_app(settings, clock)
    with TestClient(app) as client:
        account_id, secret_key = create_account(app.state.invoicetrail)
        api = Api(client=client, account_id=account_id, secret_key=secret_key)
        key = f"prune-{uuid.uuid4().hex}"
        api.ok(api.post("/v1/customers", {"name": "first"}, key=key))

        clock.advance(timedelta(days=1))
        Worker(settings, clock).run_once()
        assert api.post("/v1/customers", {"name": "second"}, key=key).status_code == 422

        clock.advance(timedelta(days=1, seconds=1))
        report = Worker(settings, clock).run_once()
        assert report.idempotency_keys_pruned >= 1
        reused = api.post("/v1/customers", {"name": "second"}, key=key)
        assert reused.status_code == 200
        assert reused.json()["name"] == "second"
