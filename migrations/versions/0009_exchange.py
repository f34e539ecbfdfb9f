"""The carbon exchange: batches of reductions, the reductions each exports and the adjustments each
carries (both append-only: an action is exported once and adjusted once).

Revision ID: 0009_exchange
Revises: 0008_oversight
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.common import app_role, make_append_only

revision: str = "0009_exchange"
down_revision: str | None = "0008_oversight"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = "exchange_batch_items, exchange_adjustments"


def upgrade() -> None:
    op.create_table(
        "exchange_batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("actions", sa.BigInteger(), nullable=False),
        sa.Column("grams_co2e", sa.BigInteger(), nullable=False),
        sa.Column("adjustments", sa.BigInteger(), nullable=False),
        sa.Column("adjustment_g", sa.BigInteger(), nullable=False),
        sa.Column("net_g", sa.BigInteger(), nullable=False),
        sa.Column("by_kind", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("by_methodology", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("merkle_root", sa.LargeBinary(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("receipt_id", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_exchange_batches_created", "exchange_batches", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_exchange_batches_due",
        "exchange_batches",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'built'"),
    )
    op.create_table(
        "exchange_adjustments",
        sa.Column("action_id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("exported_in", sa.Uuid(), nullable=False),
        sa.Column("grams_co2e", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["exchange_batches.id"],
        ),
        sa.PrimaryKeyConstraint("action_id"),
    )
    op.create_index("ix_exchange_adjustments_batch", "exchange_adjustments", ["batch_id", "action_id"], unique=False)
    op.create_table(
        "exchange_batch_items",
        sa.Column("action_id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("grams_co2e", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["exchange_batches.id"],
        ),
        sa.PrimaryKeyConstraint("action_id"),
    )
    op.create_index("ix_exchange_batch_items_batch", "exchange_batch_items", ["batch_id", "action_id"], unique=False)

    for table in APPEND_ONLY.split(", "):
        make_append_only(table)
    role = app_role()
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON exchange_batches TO {role}")
    op.execute(f"GRANT SELECT, INSERT ON {APPEND_ONLY} TO {role}")


def downgrade() -> None:
    role = app_role()
    op.execute(f"REVOKE ALL ON exchange_batches, {APPEND_ONLY} FROM {role}")
    op.drop_index("ix_exchange_batch_items_batch", table_name="exchange_batch_items")
    op.drop_table("exchange_batch_items")
    op.drop_index("ix_exchange_adjustments_batch", table_name="exchange_adjustments")
    op.drop_table("exchange_adjustments")
    op.drop_index(
        "ix_exchange_batches_due", table_name="exchange_batches", postgresql_where=sa.text("status = 'built'")
    )
    op.drop_index("ix_exchange_batches_created", table_name="exchange_batches")
    op.drop_table("exchange_batches")
