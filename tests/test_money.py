"""Money math as SPEC fixes it, checked through the real API against expectations computed
here with Python's Decimal (never with our own helpers): per-line half-up rounding, tax per
line, totals, ISO 4217 exponents and currency codes."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iso4217 import Currency

from conftest import Api
from invoicetrail.core.money import currency_exponent, format_major, is_known_currency

AMOUNT_ABS_MAX = 10**15

QUANTITIES = ["0", "0.5", "1", "1.333", "2", "12.5", "0.125", "3.14159", "100", "0.005", "7.25"]
TAX_RATES = ["0", "19", "7.7", "7", "5.5", "100", "0.5", "12.345", "20", "50"]

API_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def expected_half_up(value: Decimal) -> int:
    """Half-up (away from zero at .5), with enough precision that nothing is rounded early."""
    with localcontext() as context:
        context.prec = 100
        return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def expected_line(line: dict[str, Any]) -> tuple[int, int]:
    with localcontext() as context:
        context.prec = 100
        amount = expected_half_up(Decimal(line["quantity"]) * Decimal(line["unit_amount"]))
        tax = expected_half_up(Decimal(amount) * Decimal(line["tax_rate"]) / Decimal(100))
    return amount, tax


def decimal_strings(max_int: int, max_places: int) -> st.SearchStrategy[str]:
    """Plain decimal strings as the API takes them: `12`, `0.5`, `1.333`."""

    def render(parts: tuple[int, str]) -> str:
        whole, fraction = parts
        return f"{whole}.{fraction}" if fraction else str(whole)

    fraction = st.text(alphabet="0123456789", min_size=0, max_size=max_places)
    return st.tuples(st.integers(0, max_int), fraction).map(render)


quantities = st.one_of(st.sampled_from(QUANTITIES), decimal_strings(1000, 4))
tax_rates = st.one_of(
    st.sampled_from(TAX_RATES),
    decimal_strings(99, 3),
)
unit_amounts = st.one_of(
    st.integers(-100_000, 1_000_000),
    st.sampled_from([1, -1, 3, -3, 5, 7, 99, 101, 1050, 2000]),
)
lines_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "description": st.just("Item"),
            "quantity": quantities,
            "unit_amount": unit_amounts,
            "tax_rate": tax_rates,
        }
    ),
    min_size=1,
    max_size=5,
)


def create_invoice(
    api: Api, customer: str, lines: list[dict[str, Any]], currency: str = "eur"
) -> httpx.Response:
    return api.post("/v1/invoices", {"customer": customer, "currency": currency, "lines": lines})


def assert_totals(invoice: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    expected = [expected_line(line) for line in lines]
    assert len(invoice["lines"]) == len(lines)
    for sent, got, (amount, tax) in zip(lines, invoice["lines"], expected, strict=True):
        assert got["quantity"] == sent["quantity"]
        assert got["unit_amount"] == sent["unit_amount"]
        assert got["tax_rate"] == sent["tax_rate"]
        assert (got["amount"], got["tax"]) == (amount, tax), (sent, got)
    subtotal = sum(amount for amount, _ in expected)
    tax_total = sum(tax for _, tax in expected)
    assert invoice["subtotal"] == subtotal
    assert invoice["tax"] == tax_total
    assert invoice["total"] == subtotal + tax_total
    assert invoice["amount_paid"] == 0
    assert invoice["amount_remaining"] == invoice["total"]


# --- the reference arithmetic of this file, pinned to hand-computed values ---


@pytest.mark.parametrize(
    ("value", "rounded"),
    [("0.5", 1), ("1.5", 2), ("2.5", 3), ("-0.5", -1), ("-2.5", -3), ("0.49", 0), ("-0.49", 0)],
)
def test_reference_rounding_is_half_up_away_from_zero(value: str, rounded: int) -> None:
    assert expected_half_up(Decimal(value)) == rounded


# --- through the API ---


@pytest.mark.parametrize(
    ("quantity", "unit_amount", "tax_rate", "amount", "tax"),
    [
        ("0.5", 1, "0", 1, 0),  # 0.5 → 1
        ("0.5", 3, "0", 2, 0),  # 1.5 → 2
        ("0.5", 5, "0", 3, 0),  # 2.5 → 3 (not banker's 2)
        ("0.5", -1, "0", -1, 0),  # −0.5 → −1, away from zero
        ("0.5", -5, "0", -3, 0),  # −2.5 → −3
        ("1", 50, "1", 50, 1),  # tax 0.5 → 1
        ("1", -50, "1", -50, -1),  # tax −0.5 → −1
        ("1", 250, "19", 250, 48),  # tax 47.5 → 48
        ("1.333", 100, "0", 133, 0),  # 133.3 → 133
        ("12.5", 3, "7.7", 38, 3),  # 37.5 → 38; 2.926 → 3
        ("2", 1050, "19", 2100, 399),
        ("1", 999, "100", 999, 999),
    ],
)
def test_half_up_rounding_at_exact_halves(
    api: Api, quantity: str, unit_amount: int, tax_rate: str, amount: int, tax: int
) -> None:
    line = {"description": "x", "quantity": quantity, "unit_amount": unit_amount}
    line["tax_rate"] = tax_rate
    invoice = api.ok(create_invoice(api, api.customer()["id"], [line]))
    assert (invoice["lines"][0]["amount"], invoice["lines"][0]["tax"]) == (amount, tax)
    assert invoice["subtotal"] == amount
    assert invoice["tax"] == tax
    assert invoice["total"] == amount + tax


def test_tax_is_rounded_per_line_not_on_the_subtotal(api: Api) -> None:
    line = {"description": "x", "quantity": "1", "unit_amount": 1, "tax_rate": "50"}
    invoice = api.ok(create_invoice(api, api.customer()["id"], [line, line, line]))
    # Each line: 1 × 50 % = 0.5 → 1; on the subtotal it would be 1.5 → 2.
    assert [item["tax"] for item in invoice["lines"]] == [1, 1, 1]
    assert invoice["tax"] == 3
    assert invoice["total"] == 6


def test_generated_lines_total_as_spec_says(api: Api) -> None:
    customer = api.customer()["id"]

    @API_SETTINGS
    @given(lines=lines_strategy, currency=st.sampled_from(["eur", "usd", "jpy", "kwd"]))
    def check(lines: list[dict[str, Any]], currency: str) -> None:
        invoice = api.ok(create_invoice(api, customer, lines, currency))
        assert invoice["status"] == "draft"
        assert invoice["number"] is None
        assert invoice["currency"] == currency
        assert_totals(invoice, lines)
        # Reading it back gives the same numbers (they were stored, not only computed).
        stored = api.ok(api.get(f"/v1/invoices/{invoice['id']}"))
        assert_totals(stored, lines)

    check()


def test_patched_lines_are_recomputed(api: Api) -> None:
    draft = api.draft()

    @API_SETTINGS
    @given(lines=lines_strategy)
    def check(lines: list[dict[str, Any]]) -> None:
        updated = api.ok(api.patch(f"/v1/invoices/{draft['id']}", {"lines": lines}))
        assert_totals(updated, lines)

    check()


def test_large_amounts_are_exact_or_refused(api: Api) -> None:
    """Near 10^15 minor units: either exact to the last unit, or a 400 naming the lines."""
    customer = api.customer()["id"]
    line_strategy = st.fixed_dictionaries(
        {
            "description": st.just("Big"),
            "quantity": decimal_strings(3, 12),
            "unit_amount": st.integers(-AMOUNT_ABS_MAX, AMOUNT_ABS_MAX),
            "tax_rate": st.sampled_from(["0", "19", "7.654321", "100"]),
        }
    )

    @settings(API_SETTINGS, max_examples=30)
    @given(lines=st.lists(line_strategy, min_size=1, max_size=2))
    def check(lines: list[dict[str, Any]]) -> None:
        response = create_invoice(api, customer, lines)
        expected = [expected_line(line) for line in lines]
        subtotal = sum(amount for amount, _ in expected)
        total = subtotal + sum(tax for _, tax in expected)
        too_big = (
            any(abs(amount) > AMOUNT_ABS_MAX for amount, _ in expected)
            or max(abs(subtotal), abs(total)) > AMOUNT_ABS_MAX
        )
        if too_big:
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"].startswith("lines"), response.text
        else:
            assert_totals(api.ok(response), lines)

    check()


# --- currencies ---


@pytest.mark.parametrize(
    ("code", "exponent"), [("JPY", 0), ("EUR", 2), ("KWD", 3), ("USD", 2), ("jpy", 0), ("BHD", 3)]
)
def test_iso_4217_exponents_come_from_the_library(code: str, exponent: int) -> None:
    assert Currency[code.upper()].exponent == exponent  # the library's own table
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (163293, "eur", "1632.93"),
        (163293, "jpy", "163293"),
        (163293, "kwd", "163.293"),
        (5, "usd", "0.05"),
        (-5, "usd", "-0.05"),
        (7, "kwd", "0.007"),
        (0, "eur", "0.00"),
    ],
)
def test_major_units_use_the_exponent(amount: int, currency: str, text: str) -> None:
    assert format_major(amount, currency) == text


KNOWN_CODES = sorted(
    member.name
    for member in Currency
    if member.exponent is not None and len(member.name) == 3 and member.name.isalpha()
)


def random_case(code: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(code), max_size=len(code)).map(
        lambda uppers: "".join(
            ch.upper() if up else ch.lower() for ch, up in zip(code, uppers, strict=True)
        )
    )


def test_currencies_in_any_case_are_returned_lowercase(api: Api) -> None:
    customer = api.customer()["id"]
    line = {"description": "x", "quantity": "1", "unit_amount": 100, "tax_rate": "0"}
    assert {"EUR", "JPY", "KWD", "USD"} <= set(KNOWN_CODES)

    @API_SETTINGS
    @given(currency=st.sampled_from(KNOWN_CODES).flatmap(random_case))
    def check(currency: str) -> None:
        invoice = api.ok(create_invoice(api, customer, [line], currency))
        assert invoice["currency"] == currency.lower()
        assert api.ok(api.get(f"/v1/invoices/{invoice['id']}"))["currency"] == currency.lower()

    check()


def test_patch_currency_is_returned_lowercase(api: Api) -> None:
    draft = api.draft()
    updated = api.ok(api.patch(f"/v1/invoices/{draft['id']}", {"currency": "KwD"}))
    assert updated["currency"] == "kwd"


@pytest.mark.parametrize("currency", ["ZZZ", "abc", "EURO", "EU", "", "E1R", "XXX", "€UR", "eur "])
def test_unknown_currency_is_400_naming_currency(api: Api, currency: str) -> None:
    line = {"description": "x", "quantity": "1", "unit_amount": 100, "tax_rate": "0"}
    response = create_invoice(api, api.customer()["id"], [line], currency)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "currency"
    listed = api.ok(api.get("/v1/invoices"))
    assert listed["data"] == []


def test_generated_unknown_codes_are_refused(api: Api) -> None:
    customer = api.customer()["id"]
    line = {"description": "x", "quantity": "1", "unit_amount": 100, "tax_rate": "0"}
    known = {code.lower() for code in KNOWN_CODES}

    @API_SETTINGS
    @given(
        currency=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3).filter(
            lambda code: code.lower() not in known
        )
    )
    def check(currency: str) -> None:
        assert not is_known_currency(currency)
        response = create_invoice(api, customer, [line], currency)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "currency"

    check()
