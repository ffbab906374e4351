"""The chart of accounts: names that hledger, ledger-cli and Beancount all accept
(five root types, each component capitalised, no spaces)."""

from __future__ import annotations

RECEIVABLE = "Assets:Receivable"
REVENUE = "Income:Revenue"
REFUNDS = "Income:Refunds"
TAX_PAYABLE = "Liabilities:Tax:Payable"
CUSTOMER_CREDIT = "Liabilities:CustomerCredit"
UNAPPLIED_CASH = "Liabilities:UnappliedCash"
BAD_DEBT = "Expenses:BadDebt"

_PROVIDER_NAMES = {
    "manual": "Manual",
    "stripe": "Stripe",
    "standard_webhooks": "StandardWebhooks",
    "simulated": "Simulated",
}


def clearing(provider: str) -> str:
    """Cash in transit per provider, until the bank statement confirms it."""
    return f"Assets:Clearing:{_PROVIDER_NAMES.get(provider, 'Other')}"


ROOT_TYPES = ("Assets", "Liabilities", "Equity", "Income", "Expenses")

# Roles a finance team may rename (POST /v1/ledger_settings {"accounts": {role: name}}).
ROLES: dict[str, str] = {
    "receivable": RECEIVABLE,
    "revenue": REVENUE,
    "refunds": REFUNDS,
    "tax_payable": TAX_PAYABLE,
    "customer_credit": CUSTOMER_CREDIT,
    "unapplied_cash": UNAPPLIED_CASH,
    "bad_debt": BAD_DEBT,
    **{f"clearing_{provider}": clearing(provider) for provider in _PROVIDER_NAMES},
}
# Names hledger, ledger-cli and Beancount all accept.
ACCOUNT_NAME_PATTERN = (
    r"^(Assets|Liabilities|Equity|Income|Expenses)(:[A-Z][A-Za-z0-9-]{0,40}){1,5}$"
)
