"""ledger settings: posting policy and renamed chart accounts

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_settings",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("posting_policy", sa.String(length=16), nullable=False),
        sa.Column("account_names", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "posting_policy IN ('accrual', 'cash')", name="ck_ledger_settings_policy"
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )


def downgrade() -> None:
    op.drop_table("ledger_settings")
