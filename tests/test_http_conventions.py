"""SPEC "HTTP conventions": bodies, Unicode, size limits, Request-Id, error shape, keys, lists."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Api, row_counts

ERROR_KEYS = {"type", "code", "message", "param", "retryable", "request_id"}
REQUEST_ID = re.compile(r"^req_[0-9A-Za-z]+$")
BODY_BYTES_MAX = 1_048_576
JSON_DEPTH_MAX = 64


def send(
    api: Api,
    method: str,
    path: str,
    content: bytes | Iterator[bytes] | None,
    content_type: str | None = "application/json",
    *,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A raw request with the account's key and a fresh Idempotency-Key."""
    sent = {**api.auth, "Idempotency-Key": uuid.uuid4().hex, **(headers or {})}
    if content_type is not None:
        sent["Content-Type"] = content_type
    return api.client.request(method, path, content=content, headers=sent)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The SPEC error shape, with `request_id` equal to the `Request-Id` header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error.keys() >= ERROR_KEYS, error
    assert error["code"] == code, error
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] is None or isinstance(error["param"], str)
    assert isinstance(error["retryable"], bool)
    assert REQUEST_ID.match(response.headers["Request-Id"])
    assert error["request_id"] == response.headers["Request-Id"]
    return error


def nested_objects(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def nested_lists(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def as_bytes(body: Any) -> bytes:
    return json.dumps(body).encode()


# --- content type and JSON -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/jsonx",
        None,
    ],
)
def test_a_body_in_another_content_type_is_415(api: Api, content_type: str | None) -> None:
    before = row_counts(api)
    response = send(api, "POST", "/v1/customers", b'{"name": "Plain"}', content_type)
    error = error_of(response, 415, "unsupported_media_type")
    assert error["retryable"] is False
    assert row_counts(api) == before


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json"]
)
def test_json_with_or_without_charset_is_accepted(api: Api, content_type: str) -> None:
    response = send(api, "POST", "/v1/customers", b'{"name": "Typed"}', content_type)
    assert response.status_code in (200, 201), response.text
    assert response.json()["name"] == "Typed"


INVALID_JSON: list[tuple[str, bytes]] = [
    ("truncated", b'{"name": '),
    ("trailing-comma", b'{"name": "x",}'),
    ("single-quotes", b"{'name': 'x'}"),
    ("unquoted-key", b'{name: "x"}'),
    ("two-documents", b'{"name": "x"}{"name": "y"}'),
    ("invalid-utf8", b'{"name": "\xff\xfe"}'),
    ("invalid-utf8-continuation", b'{"name": "\xc3\x28"}'),
    ("overlong-utf8", b'{"name": "\xc0\xaf"}'),
    ("utf8-encoded-surrogate", b'{"name": "\xed\xa0\x80"}'),
    ("top-level-null", b"null"),
    ("top-level-array", b'[{"name": "x"}]'),
    ("top-level-string", b'"x"'),
    ("top-level-number", b"1"),
    ("top-level-true", b"true"),
    ("nan", b'{"name": "x", "metadata": {"a": NaN}}'),
    ("infinity", b'{"name": "x", "metadata": {"a": Infinity}}'),
    ("minus-infinity", b'{"name": "x", "metadata": {"a": -Infinity}}'),
    ("objects-65-deep", as_bytes({"metadata": nested_objects(JSON_DEPTH_MAX)})),
    ("lists-65-deep", as_bytes({"metadata": nested_lists(JSON_DEPTH_MAX)})),
    ("lists-100000-deep", b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
]


@pytest.mark.parametrize("body", [b for _, b in INVALID_JSON], ids=[n for n, _ in INVALID_JSON])
def test_malformed_json_is_400_invalid_json(api: Api, body: bytes) -> None:
    before = row_counts(api)
    error = error_of(send(api, "POST", "/v1/customers", body), 400, "invalid_json")
    assert error["retryable"] is False
    assert row_counts(api) == before


def test_invalid_json_also_on_actions_and_patch(api: Api) -> None:
    draft = api.draft()
    before = row_counts(api)
    for method, path in (
        ("POST", f"/v1/invoices/{draft['id']}/finalize"),
        ("PATCH", f"/v1/invoices/{draft['id']}"),
        ("POST", "/v1/legal_entities"),
    ):
        error_of(send(api, method, path, b"[1, 2"), 400, "invalid_json")
        error_of(send(api, method, path, b"null"), 400, "invalid_json")
    assert row_counts(api) == before
    assert api.get(f"/v1/invoices/{draft['id']}").json()["status"] == "draft"


@pytest.mark.parametrize(
    "body",
    [
        {"metadata": nested_objects(JSON_DEPTH_MAX - 1)},
        {"metadata": nested_lists(JSON_DEPTH_MAX - 1)},
    ],
    ids=["objects-64-deep", "lists-64-deep"],
)
def test_64_levels_are_parsed_and_then_validated(api: Api, body: dict[str, Any]) -> None:
    """64 levels is within the limit: the body is parsed and refused by validation instead."""
    before = row_counts(api)
    error = error_of(send(api, "POST", "/v1/customers", as_bytes(body)), 400, "parameter_invalid")
    assert error["param"] is not None and error["param"].startswith("metadata")
    assert row_counts(api) == before


# --- Unicode -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"name": "a\\u0000b"}', "name"),
        (b'{"name": "x", "metadata": {"k\\u0000": "v"}}', "metadata*"),
        (b'{"name": "x", "metadata": {"k": "\\u0000"}}', "metadata.k"),
        (b'{"name": "\\ud800"}', "name"),
        (b'{"name": "\\udc00"}', "name"),
        (b'{"name": "\\udc00\\ud800"}', "name"),
        (b'{"name": "x", "address": {"country": "DE", "city": "\\ud83d"}}', "address.city"),
    ],
    ids=[
        "nul-in-value",
        "nul-in-key",
        "nul-in-metadata-value",
        "lone-high-surrogate",
        "lone-low-surrogate",
        "reversed-pair",
        "nested-lone-surrogate",
    ],
)
def test_nul_and_lone_surrogates_are_400(api: Api, raw: bytes, param: str) -> None:
    before = row_counts(api)
    response = send(api, "POST", "/v1/customers", raw)
    assert response.status_code == 400, response.text
    error = error_of(response, 400, response.json()["error"]["code"])
    assert error["code"] != "internal_error"
    if param.endswith("*"):  # the key itself is at fault: named under its parent
        assert error["param"].startswith(param[:-1])
    else:
        assert error["param"] == param
    assert row_counts(api) == before


def test_nul_in_an_invoice_line_is_400_naming_the_line(api: Api) -> None:
    customer_id = api.customer()["id"]
    lines = [{"description": f"line {n}", "quantity": "1", "unit_amount": 1} for n in (0, 1)]
    body = {"customer": customer_id, "currency": "eur", "lines": lines}
    raw = as_bytes(body).replace(b'"line 1"', b'"line\\u00001"')
    assert b"\\u0000" in raw
    before = row_counts(api)
    error = error_of(send(api, "POST", "/v1/invoices", raw), 400, "parameter_invalid")
    assert error["param"] == "lines[1].description"
    assert row_counts(api) == before


def test_a_valid_surrogate_pair_escape_is_the_character(api: Api) -> None:
    response = send(api, "POST", "/v1/customers", b'{"name": "smile \\ud83d\\ude00"}')
    assert api.ok(response)["name"] == "smile 😀"


@pytest.mark.parametrize(
    "value",
    [
        "👩‍👩‍👧 family, 🇩🇪 flag, 😀",
        "שלום עולם مرحبا بالعالم",
        "e\u0301 A\u030a \u0915\u094d\u0937",  # combining marks, not NFC-normalised
        "\u200f\u202eRTL override\u202c",
        "漢字かなカナ 한국어",
        'tab\tnewline\nquote"backslash\\',
        "\U0001f600" * 100,
    ],
    ids=["emoji", "rtl", "combining", "bidi-controls", "cjk", "escapes", "astral"],
)
def test_other_unicode_is_stored_and_returned_unchanged(api: Api, value: str) -> None:
    created = api.customer(
        name=value[:256], address={"country": "DE", "city": value[:256]}, metadata={"note": value}
    )
    assert created["name"] == value[:256]
    assert created["address"]["city"] == value[:256]
    assert created["metadata"] == {"note": value}
    fetched = api.get(f"/v1/customers/{created['id']}").json()
    assert fetched["name"] == value[:256]
    assert fetched["metadata"]["note"] == value
    draft = api.draft(
        created["id"],
        lines=[{"description": value, "quantity": "1", "unit_amount": 100}],
        metadata={value[:40]: value},
    )
    invoice = api.get(f"/v1/invoices/{draft['id']}").json()
    assert invoice["lines"][0]["description"] == value
    assert invoice["metadata"] == {value[:40]: value}


# --- size -----------------------------------------------------------------------------------


def _padded_customer(size: int) -> bytes:
    body = b'{"name": "Padded"}'
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_body_of_exactly_the_limit_is_accepted(api: Api) -> None:
    body = _padded_customer(BODY_BYTES_MAX)
    assert len(body) == BODY_BYTES_MAX
    assert api.ok(send(api, "POST", "/v1/customers", body))["name"] == "Padded"


def test_a_body_over_the_limit_is_413(api: Api) -> None:
    before = row_counts(api)
    body = _padded_customer(BODY_BYTES_MAX + 1)
    error = error_of(send(api, "POST", "/v1/customers", body), 413, "payload_too_large")
    assert error["retryable"] is False
    assert row_counts(api) == before


def test_a_streamed_body_over_the_limit_is_413(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(17):
            yield b"a" * 65_536
        yield b'"}'

    before = row_counts(api)
    response = send(api, "POST", "/v1/customers", chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    error_of(response, 413, "payload_too_large")
    assert row_counts(api) == before


def test_a_small_streamed_body_is_read_whole(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        yield "Strömung".encode()
        yield b'"}'

    response = send(api, "POST", "/v1/customers", chunks())
    assert api.ok(response)["name"] == "Strömung"


def test_an_action_without_body_needs_no_content_type(api: Api) -> None:
    draft = api.draft()
    response = send(api, "POST", f"/v1/invoices/{draft['id']}/finalize", None, None)
    assert "content-type" not in response.request.headers
    assert api.ok(response)["status"] == "open"
    sent = send(api, "POST", f"/v1/invoices/{draft['id']}/send", b"", None)
    assert api.ok(sent)["delivered_at"] is not None
    voided = send(api, "POST", f"/v1/invoices/{draft['id']}/void", b"{}")
    assert api.ok(voided)["status"] == "void"


# --- Request-Id and the error shape ------------------------------------------------------------


def _responses_by_status(api: Api) -> dict[int, httpx.Response]:
    customer = api.customer()
    client = api.client
    return {
        200: api.get(f"/v1/customers/{customer['id']}"),
        400: api.get("/v1/customers", {"limit": 0}),
        401: client.get("/v1/customers"),
        404: api.get("/v1/customers/cus_01HZZZZZZZZZZZZZZZZZZZZZZZ"),
        405: client.put("/v1/customers", headers=api.auth),
        409: api.post(f"/v1/invoices/{api.open_invoice()['id']}/finalize"),
        413: send(api, "POST", "/v1/customers", _padded_customer(BODY_BYTES_MAX + 10)),
        415: send(api, "POST", "/v1/customers", b"name=x", "text/plain"),
        422: _reused_key(api),
    }


def _reused_key(api: Api) -> httpx.Response:
    key = uuid.uuid4().hex
    api.ok(api.post("/v1/customers", {"name": "First"}, key=key))
    return api.post("/v1/customers", {"name": "Second"}, key=key)


def test_every_response_carries_request_id_and_errors_repeat_it(api: Api) -> None:
    responses = _responses_by_status(api)
    seen: set[str] = set()
    for status, response in responses.items():
        assert response.status_code == status, (status, response.text)
        request_id = response.headers.get("Request-Id")
        assert request_id is not None and REQUEST_ID.match(request_id), status
        assert request_id not in seen
        seen.add(request_id)
        if status >= 400:
            error_of(response, status, response.json()["error"]["code"])
    assert responses[404].json()["error"]["code"] == "resource_missing"
    assert responses[405].json()["error"]["code"] != "resource_missing"
    assert responses[409].json()["error"]["code"] == "invalid_state_transition"
    assert responses[422].json()["error"]["code"] == "idempotency_key_reused"


def test_unknown_route_is_404_with_request_id(api: Api) -> None:
    response = api.get("/v1/no_such_things")
    error_of(response, 404, "resource_missing")


def test_health_answers_carry_request_id(api: Api) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert REQUEST_ID.match(response.headers["Request-Id"])


# --- authentication --------------------------------------------------------------------------


def _bad_authorizations(api: Api) -> list[dict[str, str]]:
    key = api.secret_key
    return [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {key}"},
        {"Authorization": key},
        {"Authorization": f"Bearer {key}x"},
        {"Authorization": f"Bearer {key[:-1]}"},
        {"Authorization": f"Bearer {key[:-1]}{'A' if key[-1] != 'A' else 'B'}"},
        {"Authorization": "Bearer sk_" + "A" * 48},
    ]


def test_missing_malformed_and_unknown_keys_are_401(api: Api) -> None:
    before = row_counts(api)
    for headers in _bad_authorizations(api):
        read = api.client.get("/v1/customers", headers=headers)
        error = error_of(read, 401, read.json()["error"]["code"])
        assert error["type"] == "authentication_error", headers
        assert error["retryable"] is False
        write = api.client.post(
            "/v1/customers",
            json={"name": "Intruder"},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        error_of(write, 401, write.json()["error"]["code"])
        assert api.secret_key not in read.text + write.text
    assert row_counts(api) == before
    assert api.get("/v1/customers").json()["data"] == []


def test_rotation_with_zero_overlap_retires_the_old_key(api: Api) -> None:
    customer = api.customer()
    rotated = api.ok(api.post("/v1/api_keys/rotate", {"expire_previous_after_seconds": 0}))
    new_key = rotated["secret_key"]
    assert re.fullmatch(r"sk_[A-Za-z0-9_]{24,}", new_key)
    assert new_key != api.secret_key
    assert api.get("/v1/customers").status_code == 401
    error_of(api.post("/v1/customers", {"name": "Old key"}), 401, "invalid_api_key")
    fresh = Api(client=api.client, account_id=api.account_id, secret_key=new_key)
    listed = fresh.get("/v1/customers").json()["data"]
    assert [c["id"] for c in listed] == [customer["id"]]
    assert fresh.ok(fresh.post("/v1/customers", {"name": "New key"}))["name"] == "New key"


def test_rotation_with_overlap_keeps_both_keys_working(api: Api) -> None:
    rotated = api.ok(api.post("/v1/api_keys/rotate", {"expire_previous_after_seconds": 3600}))
    assert rotated["previous_key_expires_at"] is not None
    fresh = Api(client=api.client, account_id=api.account_id, secret_key=rotated["secret_key"])
    assert api.get("/v1/customers").status_code == 200
    assert fresh.get("/v1/customers").status_code == 200


# --- lists -----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1.5", "", "1e1"])
@pytest.mark.parametrize("path", ["/v1/customers", "/v1/invoices", "/v1/events"])
def test_limit_out_of_range_is_400_param_limit(api: Api, path: str, limit: str) -> None:
    error = error_of(api.get(path, {"limit": limit}), 400, "parameter_invalid")
    assert error["param"] == "limit"


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_are_accepted(api: Api, limit: str) -> None:
    api.customer()
    response = api.get("/v1/customers", {"limit": limit})
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1


@pytest.mark.parametrize("param", ["email", "starting_after"])
def test_nul_in_a_query_parameter_is_400_not_500(api: Api, param: str) -> None:
    error = error_of(api.get("/v1/customers", {param: "a\x00b"}), 400, "parameter_invalid")
    assert error["param"] == param


def test_paging_25_customers_by_7_returns_each_once_newest_first(api: Api) -> None:
    created = [api.customer(name=f"Customer {n}")["id"] for n in range(25)]
    pages: list[list[str]] = []
    has_more_flags: list[bool] = []
    params: dict[str, Any] = {"limit": 7}
    while True:
        page = api.get("/v1/customers", params).json()
        assert page["object"] == "list"
        ids = [item["id"] for item in page["data"]]
        pages.append(ids)
        has_more_flags.append(page["has_more"])
        if not page["has_more"]:
            break
        params = {"limit": 7, "starting_after": ids[-1]}
        assert len(pages) < 10, "paging does not terminate"
    assert [len(ids) for ids in pages] == [7, 7, 7, 4]
    assert has_more_flags == [True, True, True, False]
    listed = [customer_id for ids in pages for customer_id in ids]
    assert len(listed) == len(set(listed)) == 25
    assert listed == created[::-1]
    assert listed[::-1] == created
    default = api.get("/v1/customers").json()
    assert [c["id"] for c in default["data"]] == created[::-1][:10]
    assert default["has_more"] is True


def test_starting_after_an_unknown_id_is_404(api: Api) -> None:
    api.customer()
    response = api.get("/v1/customers", {"starting_after": "cus_01HZZZZZZZZZZZZZZZZZZZZZZZ"})
    error = error_of(response, 404, "resource_missing")
    assert error["param"] == "starting_after"


# --- reads never change what they read ---------------------------------------------------------


def test_repeated_reads_are_byte_identical_and_write_nothing(api: Api) -> None:
    customer = api.customer(name="Read Me", metadata={"tier": "gold"})
    draft = api.draft(customer["id"])
    opened = api.open_invoice()
    api.ok(api.post(f"/v1/invoices/{opened['id']}/pay", {"reference": "wire-9", "amount": 100}))
    payment = api.get("/v1/payments", {"invoice": opened["id"]}).json()["data"][0]
    entity = api.ok(api.post("/v1/legal_entities", {"name": "Second Seller", "country": "FR"}))
    event = api.get("/v1/events", {"limit": 1}).json()["data"][0]
    paths = [
        f"/v1/customers/{customer['id']}",
        f"/v1/invoices/{draft['id']}",
        f"/v1/invoices/{opened['id']}",
        f"/v1/payments/{payment['id']}",
        f"/v1/legal_entities/{entity['id']}",
        f"/v1/events/{event['id']}",
        "/v1/customers",
        "/v1/invoices?limit=100",
        "/v1/payments",
        "/v1/events?limit=100",
        "/v1/legal_entities",
    ]
    before = row_counts(api)
    first = {path: api.get(path) for path in paths}
    for path, response in first.items():
        assert response.status_code == 200, (path, response.text)
    second = {path: api.get(path).content for path in paths}
    assert second == {path: response.content for path, response in first.items()}
    assert row_counts(api) == before
