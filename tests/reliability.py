"""How hard the reliability suite pushes: a fast subset in `make test`, everything in
`make reliability` (INVOICETRAIL_RELIABILITY_FULL=1). Tests never time things; they only
scale how many runs, examples and steps they make."""

from __future__ import annotations

import os

FULL = os.environ.get("INVOICETRAIL_RELIABILITY_FULL", "").lower() in ("1", "true", "yes")


def scaled(fast: int, full: int) -> int:
    """`full` in `make reliability`, `fast` in `make test`."""
    return full if FULL else fast
