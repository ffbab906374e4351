"""Tax id pre-checks with python-stdnum, where a regime's rules are known."""

from __future__ import annotations

from collections.abc import Sequence

from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.mx import rfc as mx_rfc

from invoicetrail.core.errors import ValidationFailed
from invoicetrail.core.fields import TaxIdIn

# SAT's generic RFCs (público en general, extranjero) carry no real check digit.
MX_GENERIC_RFCS = frozenset({"XAXX010101000", "XEXX010101000"})


def normalize_mx_rfc(value: str) -> str:
    compact = str(mx_rfc.compact(value))
    if compact in MX_GENERIC_RFCS:
        return compact
    return str(mx_rfc.validate(compact, validate_check_digits=True))


def check_tax_ids(
    tax_ids: Sequence[TaxIdIn], *, param_prefix: str, object_name: str
) -> list[dict[str, str]]:
    checked: list[dict[str, str]] = []
    for index, tax_id in enumerate(tax_ids):
        value = tax_id.value
        if tax_id.type == "mx_rfc":
            try:
                value = normalize_mx_rfc(value)
            except StdnumValidationError as exc:
                raise ValidationFailed(
                    f"{param_prefix}[{index}].value '{tax_id.value}' is not a valid Mexican RFC: "
                    f"{exc}",
                    param=f"{param_prefix}[{index}].value",
                    object_name=object_name,
                    code="invalid_tax_id",
                ) from None
        checked.append({"type": tax_id.type, "value": value})
    return checked
