"""Tenancy: another account's objects answer exactly like unknown ids and are never touched."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import Api, create_account, row_counts
from invoicetrail.core.ids import new_id


@dataclass(frozen=True)
class World:
    """Account A's objects, each in a distinct state, all carrying a secret marker."""

    marker: str
    customer: str
    draft: str
    open: str
    paid: str
    payment: str
    entity: str
    default_entity: str
    event: str
    number: str

    def ids(self) -> set[str]:
        return {
            self.customer,
            self.draft,
            self.open,
            self.paid,
            self.payment,
            self.entity,
            self.default_entity,
            self.event,
        }

    def paths(self) -> list[str]:
        return [
            f"/v1/customers/{self.customer}",
            f"/v1/invoices/{self.draft}",
            f"/v1/invoices/{self.open}",
            f"/v1/invoices/{self.paid}",
            f"/v1/payments/{self.payment}",
            f"/v1/legal_entities/{self.entity}",
            f"/v1/legal_entities/{self.default_entity}",
            f"/v1/events/{self.event}",
        ]


def build_world(api: Api) -> World:
    marker = f"SECRET{uuid.uuid4().hex[:12]}"
    customer = api.customer(
        name=f"{marker} GmbH",
        email=f"{marker.lower()}@example.com",
        external_reference=f"{marker}-customer",
        metadata={"secret": marker},
    )
    draft = api.draft(customer["id"], external_reference=f"{marker}-draft")
    opened = api.ok(
        api.post(f"/v1/invoices/{api.draft(customer['id'], metadata={'m': marker})['id']}/finalize")
    )
    to_pay = api.ok(api.post(f"/v1/invoices/{api.draft(customer['id'])['id']}/finalize"))
    paid = api.ok(api.post(f"/v1/invoices/{to_pay['id']}/pay", {"reference": f"{marker}-wire"}))
    assert paid["status"] == "paid"
    payment = api.get("/v1/payments", {"invoice": paid["id"]}).json()["data"][0]
    entity = api.ok(api.post("/v1/legal_entities", {"name": f"{marker} Seller", "country": "FR"}))
    event = api.get("/v1/events", {"limit": 1}).json()["data"][0]
    return World(
        marker=marker,
        customer=customer["id"],
        draft=draft["id"],
        open=opened["id"],
        paid=paid["id"],
        payment=payment["id"],
        entity=entity["id"],
        default_entity=draft["legal_entity"],
        event=event["id"],
        number=opened["number"],
    )


@dataclass(frozen=True)
class Tenants:
    a: Api
    b: Api
    world: World
    a_objects: dict[str, bytes]  # A's view of its objects before B tried anything


@pytest.fixture(scope="module")
def tenants(client: TestClient) -> Tenants:
    """A with its world and B with its own objects, built once per backend: every test still
    compares counts and A's objects before and after, so later tests see earlier leaks."""
    state = client.app.state.invoicetrail  # type: ignore[attr-defined]
    a = Api(client, *create_account(state))
    b = Api(client, *create_account(state))
    world = build_world(a)
    b_invoice = b.open_invoice()
    b.ok(b.post(f"/v1/invoices/{b_invoice['id']}/pay", {"reference": "b-1"}))
    b.ok(b.post("/v1/legal_entities", {"name": "B Seller", "country": "DE"}))
    return Tenants(a=a, b=b, world=world, a_objects=snapshot(a, world))


def snapshot(api: Api, world: World) -> dict[str, bytes]:
    """A's view of every one of its objects (reads are byte-stable, so equal means untouched)."""
    out: dict[str, bytes] = {}
    for path in world.paths():
        response = api.get(path)
        assert response.status_code == 200, response.text
        out[path] = response.content
    return out


def call(api: Api, method: str, path: str, body: Any) -> httpx.Response:
    if method == "GET":
        return api.get(path)
    if method == "PATCH":
        return api.patch(path, body)
    return api.post(path, body)


def error_without_ids(response: httpx.Response, object_id: str) -> dict[str, Any]:
    """The error with the requested id masked and the per-request id dropped."""
    error = dict(response.json()["error"])
    assert error.pop("request_id") == response.headers["Request-Id"]
    error["message"] = error["message"].replace(object_id, "<id>")
    return error


# (method, path template, body); {x} names a World attribute holding one of A's ids.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/customers/{customer}", None),
    ("PATCH", "/v1/customers/{customer}", {"name": "Hijacked"}),
    ("GET", "/v1/invoices/{draft}", None),
    ("GET", "/v1/invoices/{open}", None),
    ("GET", "/v1/invoices/{paid}", None),
    ("PATCH", "/v1/invoices/{draft}", {"metadata": {"owner": "B"}}),
    ("POST", "/v1/invoices/{draft}/finalize", None),
    ("POST", "/v1/invoices/{open}/send", None),
    ("POST", "/v1/invoices/{open}/void", None),
    ("POST", "/v1/invoices/{open}/mark_uncollectible", None),
    ("POST", "/v1/invoices/{open}/pay", {"reference": "b-wire"}),
    ("POST", "/v1/invoices/{paid}/pay", {"reference": "b-wire-2", "amount": 5}),
    ("POST", "/v1/invoices/{paid}/void", None),
    ("GET", "/v1/payments/{payment}", None),
    ("GET", "/v1/events/{event}", None),
    ("GET", "/v1/legal_entities/{entity}", None),
    ("GET", "/v1/legal_entities/{default_entity}", None),
]

PREFIX_OF = {
    "customer": "cus",
    "draft": "in",
    "open": "in",
    "paid": "in",
    "payment": "pay",
    "event": "evt",
    "entity": "le",
    "default_entity": "le",
}


@pytest.mark.parametrize(
    ("method", "template", "body"),
    ROUTES,
    ids=[f"{method} {template}" for method, template, _ in ROUTES],
)
def test_another_accounts_id_answers_like_an_unknown_id(
    tenants: Tenants, method: str, template: str, body: Any
) -> None:
    api, other_api, world = tenants.a, tenants.b, tenants.world
    attribute = re.search(r"\{(\w+)\}", template)
    assert attribute is not None
    name = attribute.group(1)
    a_id: str = getattr(world, name)
    unknown_id = new_id(PREFIX_OF[name])
    a_path = next(path for path in world.paths() if path.endswith(f"/{a_id}"))
    a_before, b_before, a_object = row_counts(api), row_counts(other_api), api.get(a_path).content

    theirs = call(other_api, method, template.replace("{" + name + "}", a_id), body)
    unknown = call(other_api, method, template.replace("{" + name + "}", unknown_id), body)

    assert theirs.status_code == unknown.status_code == 404, theirs.text
    assert theirs.json()["error"]["code"] == "resource_missing"
    assert theirs.json()["error"]["retryable"] is False
    assert error_without_ids(theirs, a_id) == error_without_ids(unknown, unknown_id)
    assert set(theirs.headers) == set(unknown.headers)
    assert world.marker not in theirs.text
    assert world.number not in theirs.text
    for other_id in world.ids() - {a_id}:
        assert other_id not in theirs.text
    assert row_counts(api) == a_before
    assert row_counts(other_api) == b_before
    assert api.get(a_path).content == a_object


def test_a_body_naming_another_accounts_object_is_404(tenants: Tenants) -> None:
    api, other_api, world = tenants.a, tenants.b, tenants.world
    own_customer = other_api.customer()["id"]
    own_draft = other_api.draft(own_customer)["id"]
    a_before, b_before = row_counts(api), row_counts(other_api)
    line = {"description": "x", "quantity": "1", "unit_amount": 100}
    attempts: list[tuple[str, str, dict[str, Any], str, str]] = [
        (
            "POST",
            "/v1/invoices",
            {"customer": world.customer, "currency": "eur", "lines": [line]},
            "customer",
            world.customer,
        ),
        (
            "POST",
            "/v1/invoices",
            {
                "customer": own_customer,
                "currency": "eur",
                "lines": [line],
                "legal_entity": world.entity,
            },
            "legal_entity",
            world.entity,
        ),
        (
            "PATCH",
            f"/v1/invoices/{own_draft}",
            {"customer": world.customer},
            "customer",
            world.customer,
        ),
        (
            "PATCH",
            f"/v1/invoices/{own_draft}",
            {"legal_entity": world.default_entity},
            "legal_entity",
            world.default_entity,
        ),
    ]
    for method, path, body, param, a_id in attempts:
        theirs = call(other_api, method, path, body)
        assert theirs.status_code == 404, theirs.text
        error = theirs.json()["error"]
        assert (error["code"], error["param"]) == ("resource_missing", param)
        unknown_id = new_id(a_id.split("_")[0])
        unknown = call(other_api, method, path, {**body, param: unknown_id})
        assert error_without_ids(theirs, a_id) == error_without_ids(unknown, unknown_id)
        assert world.marker not in theirs.text
    assert row_counts(api) == a_before
    assert row_counts(other_api) == b_before
    assert other_api.get(f"/v1/invoices/{own_draft}").json()["customer"] == own_customer


LISTS = ["/v1/customers", "/v1/invoices", "/v1/payments", "/v1/events", "/v1/legal_entities"]


def test_lists_never_show_another_accounts_objects(tenants: Tenants) -> None:
    api, other_api, world = tenants.a, tenants.b, tenants.world
    a_ids = world.ids()
    for path in LISTS:
        theirs = other_api.get(path, {"limit": 100})
        assert theirs.status_code == 200, theirs.text
        listed = {item["id"] for item in theirs.json()["data"]}
        assert listed, path  # B has its own objects of every kind
        assert not listed & a_ids, path
        assert world.marker not in theirs.text
        mine = {item["id"] for item in api.get(path, {"limit": 100}).json()["data"]}
        assert not listed & mine, path
    filtered = [
        ("/v1/invoices", {"customer": world.customer}),
        ("/v1/payments", {"invoice": world.paid}),
        ("/v1/events", {"object": world.paid}),
        ("/v1/customers", {"email": f"{world.marker.lower()}@example.com"}),
    ]
    for path, params in filtered:
        response = other_api.get(path, params)
        assert response.status_code == 200
        assert response.json()["data"] == [], (path, params)
        assert api.get(path, params).json()["data"] != [], (path, params)


@pytest.mark.parametrize(
    ("path", "attribute"),
    [
        ("/v1/customers", "customer"),
        ("/v1/invoices", "open"),
        ("/v1/payments", "payment"),
        ("/v1/events", "event"),
        ("/v1/legal_entities", "entity"),
    ],
)
def test_another_accounts_cursor_is_404(tenants: Tenants, path: str, attribute: str) -> None:
    other_api, world = tenants.b, tenants.world
    response = other_api.get(path, {"starting_after": getattr(world, attribute)})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("resource_missing", "starting_after")
    assert world.marker not in response.text


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
    api, world = tenants.a, tenants.world
    before = row_counts(api)
    for path in (
        f"/v1/invoices/{world.customer}",
        f"/v1/customers/{world.open}",
        f"/v1/payments/{world.paid}",
        f"/v1/events/{world.payment}",
        f"/v1/legal_entities/{world.customer}",
    ):
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "resource_missing"
    response = api.post(f"/v1/invoices/{world.customer}/finalize")
    assert response.status_code == 404
    assert row_counts(api) == before


def test_a_world_is_untouched_after_every_attempt(tenants: Tenants) -> None:
    """Runs after the matrix in this module: A still reads exactly what it wrote."""
    assert snapshot(tenants.a, tenants.world) == tenants.a_objects
