"""A stateful walk of the invoice transition table through the real API.

Each run is one fresh account. The machine keeps its own model of what every invoice,
payment, number and credit balance must be — computed here from SPEC, not from our code —
and after every step reads everything back and compares.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import httpx
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from starlette.testclient import TestClient

from conftest import Api, create_account

# SPEC: draft → open → paid | void | uncollectible, uncollectible → paid.
TRANSITIONS = frozenset(
    {
        ("draft", "open"),
        ("open", "paid"),
        ("open", "void"),
        ("open", "uncollectible"),
        ("uncollectible", "paid"),
    }
)
PAYABLE = frozenset({"open", "uncollectible"})
SENDABLE = frozenset({"open", "paid", "uncollectible"})  # finalized and not void
ALL = frozenset({"draft", "open", "paid", "void", "uncollectible"})
CUSTOMERS_MAX = 3
INVOICES_MAX = 8
DUE_DATE = "2031-01-31"
NUMBER_PREFIX = "INV"


class ClientHolder:
    """The session's TestClient for the current backend, set by the test before a run."""

    client: TestClient | None = None


def half_up(value: Decimal) -> int:
    with localcontext() as context:
        context.prec = 100
        return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def expected_total(lines: list[dict[str, Any]]) -> tuple[int, int]:
    """(subtotal, tax) per SPEC: round per line, tax per line, then sum."""
    subtotal = tax = 0
    with localcontext() as context:
        context.prec = 100
        for line in lines:
            amount = half_up(Decimal(line["quantity"]) * line["unit_amount"])
            subtotal += amount
            tax += half_up(Decimal(amount) * Decimal(line["tax_rate"]) / 100)
    return subtotal, tax


@dataclass
class ModelInvoice:
    id: str
    customer: str
    currency: str
    lines: list[dict[str, Any]]
    collection_method: str
    due_date: str | None
    status: str = "draft"
    number: str | None = None
    delivered: bool = False
    payments: dict[str, int] = field(default_factory=dict)  # reference → amount

    @property
    def subtotal(self) -> int:
        return expected_total(self.lines)[0]

    @property
    def total(self) -> int:
        subtotal, tax = expected_total(self.lines)
        return subtotal + tax

    @property
    def amount_paid(self) -> int:
        return min(self.total, sum(self.payments.values())) if self.status != "draft" else 0

    @property
    def surplus(self) -> int:
        return sum(self.payments.values()) - self.amount_paid

    @property
    def owed_back(self) -> int:
        """Credit the customer holds from this invoice: overpayment, plus everything paid on
        it once it is void (a voided invoice's money is owed back)."""
        return self.surplus + (self.amount_paid if self.status == "void" else 0)


@dataclass(frozen=True)
class Write:
    method: str
    path: str
    body: dict[str, Any] | None
    key: str
    status_code: int
    content: bytes


line_strategy = st.fixed_dictionaries(
    {
        "description": st.sampled_from(["Widget", "Service", "Discount", "Ünïcode ✓"]),
        "quantity": st.sampled_from(["1", "2", "0.5", "1.333", "12.5", "3", "0", "0.125"]),
        # Mostly charges; sometimes a discount line, so a draft can total ≤ 0.
        "unit_amount": st.integers(0, 9).flatmap(
            lambda roll: st.integers(-3_000, 0) if roll == 0 else st.integers(1, 50_000)
        ),
        "tax_rate": st.sampled_from(["0", "19", "7.7", "7", "100", "5.5"]),
    }
)
lines_strategy = st.lists(line_strategy, min_size=1, max_size=3)
currency_strategy = st.sampled_from(["eur", "usd", "jpy", "EUR", "Kwd"])
method_strategy = st.sampled_from(["charge_automatically", "send_invoice"])
pick_strategy = st.integers(min_value=0, max_value=10_000)
aim_strategy = st.sampled_from(["allowed", "allowed", "refused", "any"])
amount_choice_strategy = st.sampled_from(["omit", "random", "remaining", "over", "small"])


class InvoiceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        client = ClientHolder.client
        assert client is not None
        account_id, secret_key = create_account(client.app.state.invoicetrail)  # type: ignore[attr-defined]
        self.api = Api(client=client, account_id=account_id, secret_key=secret_key)
        self.customers: list[str] = []
        self.invoices: dict[str, ModelInvoice] = {}
        self.order: list[str] = []  # creation order
        self.finalized: list[str] = []  # finalize order
        self.writes: list[Write] = []
        self.seen_status: dict[str, str] = {}
        self.references_used: list[str] = []
        self.listed: dict[str, dict[str, Any]] = {}  # invoices as the last sweep read them
        self.last_answer: dict[str, Any] | None = None  # what the last invoice write answered

    # --- helpers ---

    def write(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        key = uuid.uuid4().hex
        if method == "POST":
            response = self.api.post(path, body, key=key)
        else:
            response = self.api.patch(path, body, key=key)
        assert response.status_code < 500, response.text
        assert "Idempotent-Replayed" not in response.headers
        assert response.headers.get("Request-Id", "").startswith("req_")
        if response.status_code in (200, 201):
            self.writes.append(
                Write(method, path, body, key, response.status_code, response.content)
            )
        return response

    def pick_invoice(
        self, pick: int, aim: str = "any", allowed: frozenset[str] = ALL
    ) -> ModelInvoice:
        """Any invoice; or one the action is allowed on; or one it must refuse — then each
        refused status as likely as the others, so rare ones (paid, void) get their turn
        (drafts, common anyway, only when nothing else is refused)."""
        candidates = self.order
        if aim == "allowed":
            candidates = [i for i in self.order if self.invoices[i].status in allowed]
        elif aim == "refused":
            present = sorted({inv.status for inv in self.invoices.values()} - allowed)
            if len(present) > 1 and "draft" in present:
                present.remove("draft")
            if present:
                status = present[pick % len(present)]
                candidates = [i for i in self.order if self.invoices[i].status == status]
        candidates = candidates or self.order
        invoice = self.invoices[candidates[pick % len(candidates)]]
        return invoice

    def read_invoice(self, invoice_id: str) -> httpx.Response:
        response = self.api.get(f"/v1/invoices/{invoice_id}")
        assert response.status_code == 200, response.text
        return response

    def unchanged(self, invoice: ModelInvoice) -> bool:
        """The invoice reads exactly as the last sweep of invariants read it."""
        return bool(self.read_invoice(invoice.id).json() == self.listed[invoice.id])

    def expect_refused(self, response: httpx.Response, invoice: ModelInvoice, action: str) -> None:
        event(f"{action}: refused on {invoice.status}")
        assert response.status_code == 409, (action, invoice.status, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_state_transition"
        assert invoice.id in error["message"]
        assert invoice.status in error["message"]
        assert error["request_id"] == response.headers["Request-Id"]
        assert self.unchanged(invoice), "a refused action changed it"

    def check_answer(self, answer: dict[str, Any], invoice: ModelInvoice) -> None:
        """An action's answer is the invoice as the API reads it right after (checked by the
        invariant, which reads every invoice back)."""
        self.last_answer = answer
        assert answer["id"] == invoice.id
        assert answer["status"] == invoice.status
        assert answer["total"] == invoice.total
        assert answer["amount_paid"] == invoice.amount_paid

    def draft_body(
        self, customer: str, lines: list[dict[str, Any]], currency: str, method: str, due: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "customer": customer,
            "currency": currency,
            "lines": lines,
            "collection_method": method,
        }
        if due:
            body["due_date"] = DUE_DATE
        return body

    # --- rules ---

    @initialize()
    def first_customer(self) -> None:
        self.create_customer()

    @precondition(lambda self: len(self.customers) < CUSTOMERS_MAX)
    @rule()
    def create_customer(self) -> None:
        body = {"name": f"Buyer {len(self.customers)}", "address": {"country": "DE"}}
        response = self.write("POST", "/v1/customers", body)
        assert response.status_code in (200, 201), response.text
        customer = response.json()
        assert customer["id"].startswith("cus_")
        assert customer["credit_balance"] == {}
        self.customers.append(customer["id"])

    @precondition(lambda self: len(self.order) < INVOICES_MAX)
    @rule(
        pick=pick_strategy,
        lines=lines_strategy,
        currency=currency_strategy,
        method=method_strategy,
        due=st.sampled_from([True, True, True, False]),
        finalize_now=st.sampled_from([True, True, False]),
    )
    def create_draft(
        self,
        pick: int,
        lines: list[dict[str, Any]],
        currency: str,
        method: str,
        due: bool,
        finalize_now: bool,
    ) -> None:
        customer = self.customers[pick % len(self.customers)]
        body = self.draft_body(customer, lines, currency, method, due)
        response = self.write("POST", "/v1/invoices", body)
        assert response.status_code in (200, 201), response.text
        answer = response.json()
        invoice = ModelInvoice(
            id=answer["id"],
            customer=customer,
            currency=currency.lower(),
            lines=lines,
            collection_method=method,
            due_date=DUE_DATE if due else None,
        )
        assert answer["id"].startswith("in_")
        assert answer["status"] == "draft"
        assert answer["number"] is None
        assert answer["currency"] == invoice.currency
        assert answer["customer"] == customer
        self.invoices[invoice.id] = invoice
        self.order.append(invoice.id)
        self.check_answer(answer, invoice)
        self.listed[invoice.id] = answer
        if finalize_now:
            self.finalize_invoice(invoice)

    @precondition(lambda self: self.order)
    @rule(
        aim=aim_strategy,
        pick=pick_strategy,
        lines=st.none() | lines_strategy,
        method=st.none() | method_strategy,
        due=st.sampled_from(["keep", "set", "clear"]),
    )
    def patch_draft(
        self, aim: str, pick: int, lines: list[dict[str, Any]] | None, method: str | None, due: str
    ) -> None:
        self.patch_invoice(self.pick_invoice(pick, aim, frozenset({"draft"})), lines, method, due)

    def patch_invoice(
        self,
        invoice: ModelInvoice,
        lines: list[dict[str, Any]] | None,
        method: str | None,
        due: str,
    ) -> None:
        body: dict[str, Any] = {"metadata": {"step": uuid.uuid4().hex[:8]}}
        if lines is not None:
            body["lines"] = lines
        if method is not None:
            body["collection_method"] = method
        if due != "keep":
            body["due_date"] = DUE_DATE if due == "set" else None
        response = self.write("PATCH", f"/v1/invoices/{invoice.id}", body)
        if invoice.status != "draft":
            self.expect_refused(response, invoice, "update")
            return
        assert response.status_code == 200, response.text
        if lines is not None:
            invoice.lines = lines
        if method is not None:
            invoice.collection_method = method
        if due != "keep":
            invoice.due_date = DUE_DATE if due == "set" else None
        answer = response.json()
        assert answer["collection_method"] == invoice.collection_method
        assert answer["due_date"] == invoice.due_date
        assert [line["quantity"] for line in answer["lines"]] == [
            line["quantity"] for line in invoice.lines
        ]
        self.check_answer(answer, invoice)

    @precondition(lambda self: self.order)
    @rule(aim=aim_strategy, pick=pick_strategy)
    def finalize(self, aim: str, pick: int) -> None:
        self.finalize_invoice(self.pick_invoice(pick, aim, frozenset({"draft"})))

    def finalize_invoice(self, invoice: ModelInvoice) -> None:
        response = self.write("POST", f"/v1/invoices/{invoice.id}/finalize", None)
        if invoice.status != "draft":
            self.expect_refused(response, invoice, "finalize")
            return
        refused_params = set()
        if invoice.total <= 0:
            refused_params.add("lines")
        if invoice.collection_method == "send_invoice" and invoice.due_date is None:
            refused_params.add("due_date")
        if refused_params:
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] in refused_params, response.text
            assert self.unchanged(invoice)
            return
        assert response.status_code == 200, response.text
        answer = response.json()
        year = answer["finalized_at"][:4]
        invoice.status = "open"
        event("finalize: ok")
        invoice.number = f"{NUMBER_PREFIX}-{year}-{len(self.finalized) + 1:06d}"
        self.finalized.append(invoice.id)
        assert answer["number"] == invoice.number
        assert answer["amount_paid"] == 0
        assert answer["amount_remaining"] == invoice.total
        assert answer["bank_transfer_reference"]
        self.check_answer(answer, invoice)

    @precondition(lambda self: self.order)
    @rule(aim=aim_strategy, pick=pick_strategy)
    def send(self, aim: str, pick: int) -> None:
        self.send_invoice(self.pick_invoice(pick, aim, SENDABLE))

    def send_invoice(self, invoice: ModelInvoice) -> None:
        response = self.write("POST", f"/v1/invoices/{invoice.id}/send", None)
        if invoice.status not in SENDABLE:
            self.expect_refused(response, invoice, "send")
            return
        assert response.status_code == 200, response.text
        invoice.delivered = True
        event(f"send: ok on {invoice.status}")
        answer = response.json()
        assert answer["delivered_at"] is not None
        self.check_answer(answer, invoice)

    @precondition(lambda self: self.order)
    @rule(aim=aim_strategy, pick=pick_strategy)
    def void(self, aim: str, pick: int) -> None:
        self.void_invoice(self.pick_invoice(pick, aim, frozenset({"open"})))

    def void_invoice(self, invoice: ModelInvoice) -> None:
        response = self.write("POST", f"/v1/invoices/{invoice.id}/void", None)
        if invoice.status != "open":
            self.expect_refused(response, invoice, "void")
            return
        assert response.status_code == 200, response.text
        invoice.status = "void"
        event("void: ok")
        answer = response.json()
        assert answer["voided_at"] is not None
        assert answer["number"] == invoice.number  # void invoices keep their number
        self.check_answer(answer, invoice)

    @precondition(lambda self: self.order)
    @rule(aim=aim_strategy, pick=pick_strategy)
    def mark_uncollectible(self, aim: str, pick: int) -> None:
        self.mark_uncollectible_invoice(self.pick_invoice(pick, aim, frozenset({"open"})))

    def mark_uncollectible_invoice(self, invoice: ModelInvoice) -> None:
        response = self.write("POST", f"/v1/invoices/{invoice.id}/mark_uncollectible", None)
        if invoice.status != "open":
            self.expect_refused(response, invoice, "mark_uncollectible")
            return
        assert response.status_code == 200, response.text
        invoice.status = "uncollectible"
        event("mark_uncollectible: ok")
        self.check_answer(response.json(), invoice)

    @precondition(lambda self: self.order)
    @rule(
        aim=aim_strategy,
        pick=pick_strategy,
        reference_choice=st.sampled_from(["new", "same_invoice", "other_invoice"]),
        reference_pick=pick_strategy,
        amount_choice=amount_choice_strategy,
        amount_seed=st.integers(1, 100_000),
        split=st.booleans(),
    )
    def pay(
        self,
        aim: str,
        pick: int,
        reference_choice: str,
        reference_pick: int,
        amount_choice: str,
        amount_seed: int,
        split: bool,
    ) -> None:
        invoice = self.pick_invoice(pick, aim, PAYABLE)
        own = sorted(invoice.payments)
        if reference_choice == "same_invoice" and own:
            reference = own[reference_pick % len(own)]
        elif reference_choice == "other_invoice" and self.references_used:
            # References identify a payment within its invoice: elsewhere it is a new one.
            reference = self.references_used[reference_pick % len(self.references_used)]
        else:
            reference = f"ref-{uuid.uuid4().hex[:10]}"
        if split:
            # A part, then the rest with the amount omitted: it defaults to amount_remaining.
            self.pay_invoice(invoice, reference, "small", amount_seed)
            self.pay_invoice(invoice, f"ref-{uuid.uuid4().hex[:10]}", "omit", amount_seed)
        else:
            self.pay_invoice(invoice, reference, amount_choice, amount_seed)

    @precondition(lambda self: any(inv.payments for inv in self.invoices.values()))
    @rule(
        pick=pick_strategy,
        reference_pick=pick_strategy,
        amount_choice=amount_choice_strategy,
        amount_seed=st.integers(1, 100_000),
    )
    def pay_again_with_a_known_reference(
        self, pick: int, reference_pick: int, amount_choice: str, amount_seed: int
    ) -> None:
        paid_into = [i for i in self.order if self.invoices[i].payments]
        invoice = self.invoices[paid_into[pick % len(paid_into)]]
        own = sorted(invoice.payments)
        self.pay_invoice(invoice, own[reference_pick % len(own)], amount_choice, amount_seed)

    def pay_invoice(
        self, invoice: ModelInvoice, reference: str, amount_choice: str, amount_seed: int
    ) -> None:
        remaining = invoice.total - invoice.amount_paid
        body: dict[str, Any] = {"reference": reference, "method": "bank_transfer"}
        if amount_choice == "random":
            body["amount"] = amount_seed
        elif amount_choice == "remaining" and remaining > 0:
            body["amount"] = remaining
        elif amount_choice == "over":
            body["amount"] = max(remaining, 0) + amount_seed
        elif amount_choice == "small":
            body["amount"] = 1 + amount_seed % max(remaining, 1)
        response = self.write("POST", f"/v1/invoices/{invoice.id}/pay", body)
        if invoice.status in ("draft", "void"):
            # SPEC: pay of a draft or void invoice is refused, even with a known reference.
            event(f"pay: refused on {invoice.status}")
            self.expect_refused(response, invoice, "pay")
            return
        if reference in invoice.payments:
            # The same money reported again: one payment per (invoice, reference), nothing
            # more applied, whatever amount the repeat names.
            event("pay: known reference")
            assert response.status_code == 200, response.text
            assert response.json() == self.listed[invoice.id]
            assert self.unchanged(invoice)
            return
        if invoice.status not in PAYABLE:
            event(f"pay: refused on {invoice.status}")
            self.expect_refused(response, invoice, "pay")
            return
        assert response.status_code == 200, response.text
        amount = body.get("amount", remaining)
        was = invoice.status
        invoice.payments[reference] = amount
        self.references_used.append(reference)
        if sum(invoice.payments.values()) >= invoice.total:
            invoice.status = "paid"
        event(f"pay: {was} → {invoice.status}" + (" with surplus" if invoice.surplus else ""))
        answer = response.json()
        assert answer["amount_remaining"] == invoice.total - invoice.amount_paid
        if invoice.status == "paid":
            assert answer["paid_at"] is not None
        else:
            assert answer["paid_at"] is None
        self.check_answer(answer, invoice)
        # GET /v1/payments?invoice= lists exactly this invoice's payments, one per reference.
        listed = self.list_all("/v1/payments", {"invoice": invoice.id})
        assert all(payment["invoice"] == invoice.id for payment in listed)
        assert sorted(payment["reference"] for payment in listed) == sorted(invoice.payments)
        mine = [payment for payment in listed if payment["reference"] == reference]
        assert len(mine) == 1
        assert mine[0]["amount"] == amount
        assert mine[0]["status"] == "succeeded"
        assert mine[0]["provider"] == "manual"
        assert mine[0]["currency"] == invoice.currency

    @precondition(lambda self: any(inv.status != "draft" for inv in self.invoices.values()))
    @rule(
        pick=pick_strategy,
        action=st.sampled_from(["update", "finalize", "send", "void", "mark_uncollectible", "pay"]),
        amount_choice=amount_choice_strategy,
        amount_seed=st.integers(1, 100_000),
    )
    def act_on_a_finalized_invoice(
        self, pick: int, action: str, amount_choice: str, amount_seed: int
    ) -> None:
        """Every action against each finalized status alike, the rare ones (paid, void)
        included: the whole table, allowed and refused cells."""
        present = sorted({inv.status for inv in self.invoices.values()} - {"draft"})
        status = present[pick % len(present)]
        candidates = [i for i in self.order if self.invoices[i].status == status]
        invoice = self.invoices[candidates[pick % len(candidates)]]
        if action == "update":
            self.patch_invoice(invoice, None, None, "keep")
        elif action == "finalize":
            self.finalize_invoice(invoice)
        elif action == "send":
            self.send_invoice(invoice)
        elif action == "void":
            self.void_invoice(invoice)
        elif action == "mark_uncollectible":
            self.mark_uncollectible_invoice(invoice)
        else:
            reference = f"ref-{uuid.uuid4().hex[:10]}"
            self.pay_invoice(invoice, reference, amount_choice, amount_seed)

    @precondition(lambda self: self.writes)
    @rule(pick=pick_strategy)
    def replay(self, pick: int) -> None:
        original = self.writes[pick % len(self.writes)]
        if original.method == "POST":
            response = self.api.post(original.path, original.body, key=original.key)
        else:
            response = self.api.patch(original.path, original.body, key=original.key)
        assert response.status_code == original.status_code, response.text
        assert response.content == original.content
        assert response.headers.get("Idempotent-Replayed") == "true"

    @precondition(lambda self: self.writes)
    @rule(pick=pick_strategy, variant=st.sampled_from(["body", "path", "invalid_body"]))
    def reuse_key(self, pick: int, variant: str) -> None:
        original = self.writes[pick % len(self.writes)]
        if variant == "path" or original.body is None:
            # Another request altogether under the same key (it would create a customer).
            response = self.api.post(
                "/v1/customers", {"name": "Never", "address": {"country": "FR"}}, key=original.key
            )
        elif variant == "invalid_body":
            body = {**original.body, "not_a_field": True}
            response = self.send_as(original, body)
        elif "reference" in original.body:
            response = self.send_as(original, {**original.body, "reference": "ref-other"})
        else:
            response = self.send_as(original, {**original.body, "metadata": {"changed": "1"}})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert "Idempotent-Replayed" not in response.headers

    def send_as(self, original: Write, body: dict[str, Any]) -> httpx.Response:
        if original.method == "POST":
            return self.api.post(original.path, body, key=original.key)
        return self.api.patch(original.path, body, key=original.key)

    # --- invariants, read back through the API after every step ---

    def list_all(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": 100, **(params or {})}
        while True:
            page = self.api.ok(self.api.get(path, query))
            items.extend(page["data"])
            if not page["has_more"]:
                return items
            query["starting_after"] = page["data"][-1]["id"]

    @invariant()
    def invoices_numbers_and_payments_match_the_model(self) -> None:
        listed = {item["id"]: item for item in self.list_all("/v1/invoices")}
        assert set(listed) == set(self.invoices)
        self.listed = listed
        payments_by_invoice: dict[str, list[dict[str, Any]]] = {}
        for payment in self.list_all("/v1/payments"):
            payments_by_invoice.setdefault(payment["invoice"], []).append(payment)
        assert set(payments_by_invoice) <= set(self.invoices)
        for invoice in self.invoices.values():
            got = listed[invoice.id]
            previous = self.seen_status.get(invoice.id, "draft")
            assert got["status"] == previous or (previous, got["status"]) in TRANSITIONS, (
                f"{invoice.id} moved {previous} → {got['status']}"
            )
            self.seen_status[invoice.id] = got["status"]
            assert got["status"] == invoice.status
            assert got["subtotal"] == invoice.subtotal
            assert got["total"] == invoice.total
            assert got["subtotal"] + got["tax"] == got["total"]
            assert got["amount_paid"] + got["amount_remaining"] == got["total"]
            assert got["amount_paid"] == invoice.amount_paid
            assert got["currency"] == invoice.currency
            assert got["customer"] == invoice.customer
            assert (got["delivered_at"] is not None) == invoice.delivered
            assert (got["paid_at"] is not None) == (invoice.status == "paid")
            assert (got["voided_at"] is not None) == (invoice.status == "void")
            if invoice.status == "draft":
                assert got["number"] is None
                assert got["finalized_at"] is None
                assert got["bank_transfer_reference"] is None
                assert got["amount_paid"] == 0
            else:
                assert 0 <= got["amount_paid"] <= got["total"]
                assert got["total"] > 0
                assert got["number"] == invoice.number
                assert got["bank_transfer_reference"]
            payments = payments_by_invoice.get(invoice.id, [])
            references = [payment["reference"] for payment in payments]
            assert len(references) == len(set(references)), "two payments for one reference"
            succeeded = {
                p["reference"]: p["amount"] for p in payments if p["status"] == "succeeded"
            }
            assert succeeded == invoice.payments
            if invoice.status != "draft":
                assert got["amount_paid"] == min(got["total"], sum(succeeded.values()))

        # Numbers: unique, gapless, in finalize order, INV-YYYY-000001…
        for position, invoice_id in enumerate(self.finalized, start=1):
            got = listed[invoice_id]
            assert got["number"] == f"{NUMBER_PREFIX}-{got['finalized_at'][:4]}-{position:06d}"
        numbers = [item["number"] for item in listed.values() if item["number"] is not None]
        assert len(numbers) == len(set(numbers)) == len(self.finalized)
        references = [item["bank_transfer_reference"] for item in listed.values()]
        finalized_references = [reference for reference in references if reference is not None]
        assert len(set(finalized_references)) == len(finalized_references)

        # The last invoice write answered the invoice exactly as it now reads.
        if self.last_answer is not None:
            assert listed[self.last_answer["id"]] == self.last_answer
            self.last_answer = None

    @invariant()
    def credit_balances_hold_the_surplus(self) -> None:
        listed = {item["id"]: item for item in self.list_all("/v1/customers")}
        assert set(listed) == set(self.customers)
        for customer_id in self.customers:
            expected: dict[str, int] = {}
            for invoice in self.invoices.values():
                if invoice.customer == customer_id and invoice.owed_back > 0:
                    expected[invoice.currency] = (
                        expected.get(invoice.currency, 0) + invoice.owed_back
                    )
            balance = listed[customer_id]["credit_balance"]
            assert all(amount >= 0 for amount in balance.values())
            assert balance == expected


def test_invoice_state_machine(client: TestClient) -> None:
    ClientHolder.client = client
    try:
        run_state_machine_as_test(  # type: ignore[no-untyped-call]
            InvoiceMachine,
            settings=settings(max_examples=15, stateful_step_count=30, deadline=None),
        )
    finally:
        ClientHolder.client = None
