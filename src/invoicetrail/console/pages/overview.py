"""The overview page (filled in by the overview work)."""

from __future__ import annotations

from fastapi.responses import Response

from invoicetrail.console.web import Page


def build(current: Page) -> Response:
    return current.render("overview.html.j2", title="Overview")
