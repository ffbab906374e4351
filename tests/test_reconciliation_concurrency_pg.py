"""Several reconciliation runs of one account at once (API, CLI, console, worker can overlap):
each cause still ends up as exactly one open exception item. Real server, real threads."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from conftest import create_account
from invoicetrail.api import create_app
from invoicetrail.core.config import Settings
from invoicetrail.core.db import make_engine
from servers import Server, running_server

pytestmark = pytest.mark.postgres_only

RUNS_AT_ONCE = 6


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(pg_url, workers=2, log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


def _post(client: httpx.Client, path: str, body: dict[str, object]) -> dict[str, object]:
    response = client.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code < 300, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_concurrent_runs_raise_one_item_per_cause(server: Server, pg_url: str) -> None:
    app = create_app(Settings(database_url=pg_url))
    account_id, key = create_account(app.state.invoicetrail)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as api:
        customer = _post(api, "/v1/customers", {"name": "Race", "address": {"country": "DE"}})
        invoices = []
        for n in range(3):
            draft = _post(
                api,
                "/v1/invoices",
                {
                    "customer": customer["id"],
                    "currency": "eur",
                    "lines": [
                        {"description": "x", "quantity": "1", "unit_amount": 1000, "tax_rate": "0"}
                    ],
                },
            )
            _post(api, f"/v1/invoices/{draft['id']}/finalize", {})
            _post(api, f"/v1/invoices/{draft['id']}/pay", {"reference": f"wire-{n}"})
            invoices.append(draft["id"])
    # Three planted causes: the books say one amount, the payments another.
    engine = make_engine(Settings(database_url=pg_url))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE payments SET amount_minor = amount_minor + 1 WHERE account_id = :a"),
            {"a": account_id},
        )

    barrier = threading.Barrier(RUNS_AT_ONCE)
    answers: list[int] = []

    def run() -> None:
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as client:
            barrier.wait(timeout=60)
            response = client.post(
                "/v1/reconciliation_runs", json={}, headers={"Idempotency-Key": uuid.uuid4().hex}
            )
            answers.append(response.status_code)

    threads = [threading.Thread(target=run) for _ in range(RUNS_AT_ONCE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert answers == [200] * RUNS_AT_ONCE

    with engine.connect() as conn:
        open_items = conn.execute(
            text(
                "SELECT invoice_id, count(*) FROM exception_items WHERE account_id = :a "
                "AND kind = 'amount_mismatch' AND status = 'open' GROUP BY invoice_id"
            ),
            {"a": account_id},
        ).all()
        runs = conn.execute(
            text("SELECT count(*) FROM reconciliation_runs WHERE account_id = :a"),
            {"a": account_id},
        ).scalar_one()
    engine.dispose()
    assert sorted(open_items) == sorted((invoice, 1) for invoice in invoices)
    assert runs == RUNS_AT_ONCE
