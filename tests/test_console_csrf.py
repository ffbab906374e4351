"""No console form works without its CSRF token, on both backends.

Every POST route under /console is found from the app itself, so a new form is covered the
day it is added. Each is sent by a signed-in user with real ids and plausible fields but no
token, an empty one and a wrong one: 403, and not one row of the database changes. The
right token is then accepted (so the 403 is the token's doing). Sign-in has its own
double-submit token (cookie + form field); the session cookie is HttpOnly, SameSite=Strict
and Secure over https.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import inspect, text
from starlette.testclient import TestClient

from conftest import Api
from test_control import unmatched_transfer
from test_payment_evidence import SW_SECRET, Provider

SESSION_COOKIE = "it_console"
LOGIN_CSRF_COOKIE = "it_login_csrf"
CSRF_FIELD = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]*)"')
# The contract's forms (more routes are welcome; each new one is covered automatically).
REQUIRED_POSTS = {
    "/console/login",
    "/console/logout",
    "/console/exceptions/{}/assign",
    "/console/exceptions/{}/snooze",
    "/console/exceptions/{}/resolve",
    "/console/payments/{}/apply",
    "/console/reconciliation",
    "/console/exports",
}


def console_posts(client: TestClient) -> list[str]:
    paths = {
        route.path
        for route in iter_route_contexts(client.app.routes)  # type: ignore[attr-defined]
        if route.path and route.path.startswith("/console") and "POST" in (route.methods or ())
    }
    return sorted(paths)


def shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def fresh_client(client: TestClient, scheme: str = "http") -> TestClient:
    """Its own cookie jar, the shared app (already started by the session's client)."""
    return TestClient(
        client.app,  # type: ignore[arg-type]
        base_url=f"{scheme}://testserver",
        follow_redirects=False,
    )


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, "no csrf_token field on the page"
    return found.group(1)


def sign_in(browser: TestClient, secret_key: str) -> str:
    """Signs in through the form; returns the session's CSRF token (from a signed-in page)."""
    form = browser.get("/console/login")
    assert form.status_code == 200
    done = browser.post(
        "/console/login", data={"secret_key": secret_key, "csrf_token": csrf_of(form.text)}
    )
    assert done.status_code == 303 and done.headers["location"] == "/console", done.text
    overview = browser.get("/console")
    assert overview.status_code == 200
    # Signed-in pages carry the session's token in a meta tag (the page's forms repeat it).
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', overview.text)
    assert found, "no csrf-token meta on a signed-in page"
    return found.group(1)


def snapshot(client: TestClient) -> dict[str, tuple[Any, ...]]:
    """Rows per table, and the newest update where a table records one: any insert, delete
    or update by a refused form shows here."""
    engine = client.app.state.invoicetrail.engine  # type: ignore[attr-defined]
    inspector = inspect(engine)
    state: dict[str, tuple[Any, ...]] = {}
    with engine.connect() as connection:
        for table in sorted(inspector.get_table_names()):
            columns = {c["name"] for c in inspector.get_columns(table)}
            touched = [c for c in ("updated_at", "expires_at") if c in columns]
            select = ", ".join(["COUNT(*)", *(f"MAX({c})" for c in touched)])
            state[table] = tuple(connection.execute(text(f"SELECT {select} FROM {table}")).one())
    return state


def changed(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> list[str]:
    return [t for t in sorted(set(before) | set(after)) if before.get(t) != after.get(t)]


@pytest.fixture
def objects(api: Api) -> dict[str, str]:
    """Real objects of the signed-in account, for the routes' path parameters."""
    item = unmatched_transfer(api, Provider(api, "standard_webhooks", SW_SECRET))
    invoice = api.open_invoice()
    period = datetime.now(UTC).strftime("%Y-%m")
    export = api.ok(api.post("/v1/exports", {"format": "csv", "period": period}))
    run = api.ok(api.post("/v1/reconciliation_runs", {}))
    return {
        "exc": item["id"],
        "pay": item["refs"]["payment"],
        "in": invoice["id"],
        "exp": export["id"],
        "rec": run["id"],
        "period": period,
    }


PARAM_PREFIXES = (
    ("item", "exc"),
    ("exception", "exc"),
    ("payment", "pay"),
    ("invoice", "in"),
    ("export", "exp"),
    ("run", "rec"),
)


def concrete(path: str, objects: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        for word, prefix in PARAM_PREFIXES:
            if word in name:
                return objects[prefix]
        return "x_" + uuid.uuid4().hex[:12]

    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", fill, path)


def form_fields(api: Api, objects: dict[str, str]) -> dict[str, str]:
    """What a real submission of any console form could carry: were the token not checked,
    it would do something."""
    return {
        "secret_key": api.secret_key,
        "owner": "csrf_attacker",
        "note": "sent by another site",
        "hours": "24",
        "invoice": objects["in"],
        "format": "csv",
        "period": objects["period"],
        "as_of": datetime.now(UTC).date().isoformat(),
    }


@pytest.fixture
def visitor(client: TestClient) -> Iterator[TestClient]:
    with fresh_client(client) as fresh:
        yield fresh


def test_every_console_post_refuses_a_missing_or_wrong_csrf_token(
    client: TestClient, visitor: TestClient, api: Api, objects: dict[str, str]
) -> None:
    browser = visitor
    posts = console_posts(client)
    missing = REQUIRED_POSTS - {shape(p) for p in posts}
    assert not missing, f"console POST routes missing: {sorted(missing)} (have {posts})"

    token = sign_in(browser, api.secret_key)
    fields = form_fields(api, objects)
    for route in [p for p in posts if p != "/console/login"]:
        path = concrete(route, objects)
        for label, csrf in (("without", None), ("empty", ""), ("wrong", "wrong-" + token)):
            body = {**fields, "idempotency_key": f"csrf-{uuid.uuid4().hex}"}
            if csrf is not None:
                body["csrf_token"] = csrf
            before = snapshot(client)
            refused = browser.post(path, data=body)
            assert refused.status_code == 403, (route, label, refused.status_code)
            assert "csrf" in refused.text.lower(), (route, label)
            assert changed(before, snapshot(client)) == [], (route, label)

    # Still signed in: none of the refused sign-outs ended the session.
    assert browser.get("/console").status_code == 200
    # The right token is accepted by every route (whatever the action then says about it).
    for route in [p for p in posts if p not in ("/console/login", "/console/logout")]:
        body = {**fields, "csrf_token": token, "idempotency_key": f"ok-{uuid.uuid4().hex}"}
        accepted = browser.post(concrete(route, objects), data=body)
        assert accepted.status_code != 403, (route, accepted.text[:500])
        assert accepted.status_code < 500, (route, accepted.text[:500])
    signed_out = browser.post("/console/logout", data={"csrf_token": token})
    assert signed_out.status_code == 303
    assert browser.get("/console").status_code in (200, 303)
    assert browser.get("/console/exceptions").headers.get("location") == "/console/login"


def test_sign_in_needs_its_cookie_token(client: TestClient, api: Api) -> None:
    with fresh_client(client) as browser:
        form = browser.get("/console/login")
        token = csrf_of(form.text)
        cookie = browser.cookies.get(LOGIN_CSRF_COOKIE)
        assert cookie == token, "double submit: the form's token is the cookie's"
        # The jar's own spelling of the host (http.cookiejar files "testserver" as ".local").
        [domain] = {c.domain for c in browser.cookies.jar if c.name == LOGIN_CSRF_COOKIE}
        key = {"secret_key": api.secret_key}
        attempts: list[tuple[str, dict[str, str], dict[str, str]]] = [
            ("no field", key, {LOGIN_CSRF_COOKIE: token}),
            ("wrong field", {**key, "csrf_token": "wrong-" + token}, {LOGIN_CSRF_COOKIE: token}),
            ("no cookie", {**key, "csrf_token": token}, {}),
            ("empty field, no cookie", {**key, "csrf_token": ""}, {}),
            ("empty both", {**key, "csrf_token": ""}, {LOGIN_CSRF_COOKIE: ""}),
        ]
        for label, data, cookies in attempts:
            browser.cookies.clear()
            for name, value in cookies.items():
                browser.cookies.set(name, value, domain=domain, path="/console")
            before = snapshot(client)
            refused = browser.post("/console/login", data=data)
            assert refused.status_code == 403, (label, refused.status_code)
            assert SESSION_COOKIE not in refused.headers.get("set-cookie", ""), label
            assert changed(before, snapshot(client)) == [], label

        browser.cookies.clear()
        browser.cookies.set(LOGIN_CSRF_COOKIE, token, domain=domain, path="/console")
        accepted = browser.post("/console/login", data={**key, "csrf_token": token})
        assert accepted.status_code == 303, accepted.text


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_session_cookie_is_httponly_samesite_strict_and_secure_on_https(
    client: TestClient, api: Api, scheme: str
) -> None:
    with fresh_client(client, scheme) as browser:
        form = browser.get("/console/login")
        login_cookie = cookie_header(form, LOGIN_CSRF_COOKIE)
        done = browser.post(
            "/console/login", data={"secret_key": api.secret_key, "csrf_token": csrf_of(form.text)}
        )
        assert done.status_code == 303, done.text
        session = cookie_header(done, SESSION_COOKIE)
        for header in (login_cookie, session):
            attributes = {a.strip().split("=")[0].lower(): a for a in header.split(";")[1:]}
            assert "httponly" in attributes, header
            assert attributes.get("samesite", "").split("=")[1].lower() == "strict", header
            assert ("secure" in attributes) == (scheme == "https"), header
        # The session works over that scheme (a Secure cookie is sent back over https).
        assert browser.get("/console").status_code == 200


def cookie_header(response: httpx.Response, name: str) -> str:
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return header
