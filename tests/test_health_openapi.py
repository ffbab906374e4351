"""Health probes, storage outages answered 503, and the OpenAPI document."""

from __future__ import annotations

import socket
from typing import Any

from openapi_spec_validator import validate
from starlette.testclient import TestClient

from conftest import Api
from invoicetrail.api import create_app
from invoicetrail.core.config import Settings


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_health_and_ready(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.headers["Request-Id"].startswith("req_")
    assert client.get("/readyz").status_code == 200


def test_unreachable_database_is_503_never_500() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nothing"
    app = create_app(Settings(database_url=url, db_pool_timeout_seconds=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "storage_unavailable"
        headers = {"Authorization": "Bearer sk_" + "a" * 48, "Idempotency-Key": "k"}
        for response in (
            client.get("/v1/invoices", headers=headers),
            client.post("/v1/customers", json={"name": "x"}, headers=headers),
        ):
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "storage_unavailable"
            assert error["retryable"] is True
            assert error["request_id"] == response.headers["Request-Id"]


def _openapi(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_openapi_is_valid_3_1(client: TestClient) -> None:
    document = _openapi(client)
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_openapi_lists_every_v1_route_with_error_shapes(client: TestClient) -> None:
    document = _openapi(client)
    paths = document["paths"]
    expected = {
        ("post", "/v1/customers"),
        ("get", "/v1/customers"),
        ("get", "/v1/customers/{customer_id}"),
        ("patch", "/v1/customers/{customer_id}"),
        ("post", "/v1/invoices"),
        ("get", "/v1/invoices"),
        ("get", "/v1/invoices/{invoice_id}"),
        ("patch", "/v1/invoices/{invoice_id}"),
        ("post", "/v1/invoices/{invoice_id}/finalize"),
        ("post", "/v1/invoices/{invoice_id}/send"),
        ("post", "/v1/invoices/{invoice_id}/void"),
        ("post", "/v1/invoices/{invoice_id}/mark_uncollectible"),
        ("post", "/v1/invoices/{invoice_id}/pay"),
        ("get", "/v1/payments"),
        ("get", "/v1/payments/{payment_id}"),
        ("get", "/v1/events"),
        ("get", "/v1/events/{event_id}"),
        ("post", "/v1/legal_entities"),
        ("get", "/v1/legal_entities"),
        ("get", "/v1/legal_entities/{entity_id}"),
        ("post", "/v1/api_keys/rotate"),
    }
    listed = {(m, p) for p, item in paths.items() for m in item if p.startswith("/v1")}
    assert expected <= listed, expected - listed
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for method, path in listed:
        operation = paths[path][method]
        responses = operation["responses"]
        if path.startswith("/v1/providers/"):
            # Authenticated by signature, deduped by event id: no key, no Idempotency-Key.
            for status in ("400", "413", "500", "503"):
                ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorOut", (method, path, status)
            continue
        for status in ("401", "404", "500", "503"):
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorOut", (method, path, status)
        if method in ("post", "patch"):
            names = [p["name"] for p in operation.get("parameters", [])]
            assert "Idempotency-Key" in names, (method, path)
            body_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert body_ref.rsplit("/", 1)[1] in schemas
            for status in ("400", "409", "413", "415", "422"):
                assert status in responses, (method, path, status)


def test_documented_request_body_rejects_what_the_api_rejects(api: Api) -> None:
    document = _openapi(api.client)
    invoice_create = document["components"]["schemas"]["InvoiceCreate"]
    assert invoice_create["additionalProperties"] is False
    assert set(invoice_create["required"]) == {"customer", "currency", "lines"}
