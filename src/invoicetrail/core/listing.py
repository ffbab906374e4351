"""Cursor pagination over a table with `seq` (creation order) and `account_id`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm.interfaces import ORMOption

from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import NotFound
from invoicetrail.core.http import Page

Row = TypeVar("Row")


def list_page(
    ctx: Ctx,
    model: type[Row],
    page: Page,
    *filters: ColumnElement[bool],
    object_name: str,
    options: Sequence[ORMOption] = (),
) -> tuple[list[Row], bool]:
    """Newest first by `seq`: a total order, so paging never skips or repeats."""
    table: Any = model
    stmt = select(model).where(table.account_id == ctx.account_id, *filters).options(*options)
    if page.starting_after is not None:
        cursor_seq = ctx.session.execute(
            select(table.seq).where(
                table.id == page.starting_after, table.account_id == ctx.account_id
            )
        ).scalar_one_or_none()
        if cursor_seq is None:
            raise NotFound(object_name, page.starting_after, param="starting_after")
        stmt = stmt.where(table.seq < cursor_seq)
    rows = list(
        ctx.session.execute(stmt.order_by(table.seq.desc()).limit(page.limit + 1)).scalars()
    )
    return rows[: page.limit], len(rows) > page.limit
