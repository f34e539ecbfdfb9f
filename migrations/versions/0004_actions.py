"""Low-carbon actions: linked partner accounts, decided actions, append-only operator reviews,
accepted request signatures (replay refusal) and partners' hourly volumes (anomaly rule).

Revision ID: 0004_actions
Revises: 0003_identity
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.common import app_role, make_append_only

revision: str = "0004_actions"
down_revision: str | None = "0003_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MUTABLE = "partner_links, actions, partner_request_signatures, partner_hourly_volume"


def upgrade() -> None:
    op.create_table(
        "action_reviews",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("action_id", sa.Uuid(), nullable=False),
        sa.Column("operator_id", sa.Uuid(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("action_id"),
    )
    op.create_table(
        "actions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("resident_id", sa.Uuid(), nullable=False),
        sa.Column("account_ref", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("local_day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("grams_co2e", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("points", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("points_withheld", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("cap_reason", sa.String(length=32), nullable=True),
        sa.Column("methodology_id", sa.String(length=64), nullable=True),
        sa.Column("methodology_version", sa.Integer(), nullable=True),
        sa.Column("factor", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("record", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("partner_id", "external_id", name="uq_actions_partner_external_id"),
    )
    op.create_index(
        "ix_actions_pending_review",
        "actions",
        ["received_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending_review'"),
    )
    op.create_index("ix_actions_resident_local_day", "actions", ["resident_id", "local_day"], unique=False)
    op.create_index("ix_actions_resident_occurred_at", "actions", ["resident_id", "occurred_at"], unique=False)
    op.create_index("ix_actions_resident_received", "actions", ["resident_id", "received_at", "id"], unique=False)
    op.create_table(
        "partner_hourly_volume",
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", "hour", "slot"),
    )
    op.create_table(
        "partner_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("resident_id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("partner_account_ref", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("unlinked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_partner_links_resident_id", "partner_links", ["resident_id"], unique=False)
    op.create_index(
        "uq_partner_links_active_account",
        "partner_links",
        ["partner_id", "partner_account_ref"],
        unique=True,
        postgresql_where=sa.text("unlinked_at IS NULL"),
    )
    op.create_table(
        "partner_request_signatures",
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", "digest"),
    )
    op.create_index("ix_partner_request_signatures_seen_at", "partner_request_signatures", ["seen_at"], unique=False)
    make_append_only("action_reviews")
    role = app_role()
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {MUTABLE} TO {role}")
    op.execute(f"GRANT SELECT, INSERT ON action_reviews TO {role}")
    op.execute(f"GRANT USAGE ON SEQUENCE action_reviews_id_seq TO {role}")


def downgrade() -> None:
    role = app_role()
    op.execute(f"REVOKE ALL ON {MUTABLE}, action_reviews FROM {role}")
    op.execute(f"REVOKE ALL ON SEQUENCE action_reviews_id_seq FROM {role}")
    op.drop_index("ix_partner_request_signatures_seen_at", table_name="partner_request_signatures")
    op.drop_table("partner_request_signatures")
    op.drop_index(
        "uq_partner_links_active_account", table_name="partner_links", postgresql_where=sa.text("unlinked_at IS NULL")
    )
    op.drop_index("ix_partner_links_resident_id", table_name="partner_links")
    op.drop_table("partner_links")
    op.drop_table("partner_hourly_volume")
    op.drop_index("ix_actions_resident_received", table_name="actions")
    op.drop_index("ix_actions_resident_occurred_at", table_name="actions")
    op.drop_index("ix_actions_resident_local_day", table_name="actions")
    op.drop_index(
        "ix_actions_pending_review", table_name="actions", postgresql_where=sa.text("status = 'pending_review'")
    )
    op.drop_table("actions")
    op.drop_table("action_reviews")
