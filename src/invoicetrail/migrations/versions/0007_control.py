"""control: reconciliation runs, ownership, launch gates, exception item checks

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ownership",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "launch_gates",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=True),
        sa.Column("evidence_reference", sa.String(length=1000), nullable=True),
        sa.Column("note", sa.String(length=5000), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'passed', 'failed', 'not_applicable')",
            name="ck_launch_gates_status",
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("account_id", "name", name="uq_launch_gates_name"),
    )
    op.create_table(
        "reconciliation_runs",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("checks_total", sa.Integer(), nullable=False),
        sa.Column("checks_done", sa.Integer(), nullable=False),
        sa.Column("invoices_checked", sa.BigInteger(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("items_created", sa.Integer(), nullable=False),
        sa.Column("items_updated", sa.Integer(), nullable=False),
        sa.Column("items_resolved", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("completed_at", INSTANT, nullable=True),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed')",
            name="ck_reconciliation_runs_status",
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index(
        "ix_reconciliation_runs_account_seq", "reconciliation_runs", ["account_id", "seq"]
    )
    op.create_index(
        "ix_reconciliation_runs_account_as_of", "reconciliation_runs", ["account_id", "as_of"]
    )
    op.create_table(
        "reconciliation_findings",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=True),
        sa.Column("refs", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["reconciliation_runs.id"]),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_reconciliation_findings_run", "reconciliation_findings", ["run_id", "seq"])
    with op.batch_alter_table("exception_items") as batch:
        batch.add_column(sa.Column("check_name", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_exception_items_check", "exception_items", ["account_id", "check_name", "status"]
    )
    with op.batch_alter_table("provider_endpoints") as batch:
        batch.add_column(
            sa.Column("livemode", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index("ix_journal_entries_payment", "journal_entries", ["account_id", "payment_id"])


def downgrade() -> None:
    op.drop_index("ix_journal_entries_payment", table_name="journal_entries")
    with op.batch_alter_table("provider_endpoints") as batch:
        batch.drop_column("livemode")
    op.drop_index("ix_exception_items_check", table_name="exception_items")
    with op.batch_alter_table("exception_items") as batch:
        batch.drop_column("check_name")
    op.drop_index("ix_reconciliation_findings_run", table_name="reconciliation_findings")
    op.drop_table("reconciliation_findings")
    op.drop_index("ix_reconciliation_runs_account_as_of", table_name="reconciliation_runs")
    op.drop_index("ix_reconciliation_runs_account_seq", table_name="reconciliation_runs")
    op.drop_table("reconciliation_runs")
    op.drop_table("launch_gates")
    op.drop_table("ownership")
