"""e-invoicing: submissions, signing certificates, MyInvois party data

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("legal_entities") as batch:
        batch.add_column(sa.Column("myinvois", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("contact", sa.JSON(), nullable=True))
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("myinvois", sa.JSON(), nullable=True))
    op.create_table(
        "einvoices",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("legal_entity_id", sa.String(length=40), nullable=False),
        sa.Column("regime", sa.String(length=16), nullable=False),
        sa.Column("market", sa.String(length=2), nullable=False),
        sa.Column("document_type", sa.String(length=16), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("credit_note_id", sa.String(length=40), nullable=True),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("media_type", sa.String(length=64), nullable=False),
        sa.Column("document_sha256", sa.String(length=64), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=True),
        sa.Column("validated_at", INSTANT, nullable=True),
        sa.Column("failure", sa.JSON(), nullable=True),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", INSTANT, nullable=True),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("external_detail", sa.JSON(), nullable=True),
        sa.Column("submitted_at", INSTANT, nullable=True),
        sa.Column("accepted_at", INSTANT, nullable=True),
        sa.Column("cancellation_deadline_at", INSTANT, nullable=True),
        sa.Column("cancel_requested_at", INSTANT, nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("cancelled_at", INSTANT, nullable=True),
        sa.Column("supersedes_id", sa.String(length=40), nullable=True),
        sa.Column("superseded_by_id", sa.String(length=40), nullable=True),
        sa.Column("correction_requested_by", sa.String(length=80), nullable=True),
        sa.Column("approved_by", sa.String(length=80), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "status IN ('awaiting_approval', 'pending', 'submitted', 'accepted', 'rejected', "
            "'cancelled')",
            name="ck_einvoices_status",
        ),
        sa.CheckConstraint(
            "document_type IN ('invoice', 'credit_note', 'payment')",
            name="ck_einvoices_document_type",
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["legal_entity_id"], ["legal_entities.id"]),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"]),
        sa.ForeignKeyConstraint(["credit_note_id"], ["credit_notes.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_einvoices_account_seq", "einvoices", ["account_id", "seq"])
    op.create_index("ix_einvoices_invoice", "einvoices", ["invoice_id"])
    op.create_index("ix_einvoices_due", "einvoices", ["regime", "status", "next_attempt_at"])
    op.create_table(
        "einvoice_certificates",
        sa.Column("legal_entity_id", sa.String(length=40), nullable=False),
        sa.Column("regime", sa.String(length=16), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("private_key_pem", sa.LargeBinary(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.ForeignKeyConstraint(["legal_entity_id"], ["legal_entities.id"]),
        sa.PrimaryKeyConstraint("legal_entity_id", "regime"),
    )


def downgrade() -> None:
    op.drop_table("einvoice_certificates")
    op.drop_index("ix_einvoices_due", table_name="einvoices")
    op.drop_index("ix_einvoices_invoice", table_name="einvoices")
    op.drop_index("ix_einvoices_account_seq", table_name="einvoices")
    op.drop_table("einvoices")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("myinvois")
    with op.batch_alter_table("legal_entities") as batch:
        batch.drop_column("contact")
        batch.drop_column("myinvois")
