"""Operators' oversight: reversals of actions (append-only), operators' jobs, and the indexes operators'
lists of actions and the reduction statistics read.

Revision ID: 0008_oversight
Revises: 0007_redemptions_webhooks
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.common import app_role, make_append_only

revision: str = "0008_oversight"
down_revision: str | None = "0007_redemptions_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "action_reversals",
        sa.Column("action_id", sa.Uuid(), nullable=False),
        sa.Column("operator_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("grams_co2e", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("points_recovered", sa.BigInteger(), nullable=False),
        sa.Column("points_owed", sa.BigInteger(), nullable=False),
        sa.Column("reversed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("action_id"),
    )
    op.create_index("ix_action_reversals_reversed_at", "action_reversals", ["reversed_at"], unique=False)
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("done", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_status_heartbeat", "jobs", ["status", "heartbeat_at"], unique=False)
    op.create_index(
        "ix_actions_decided_credited",
        "actions",
        ["decided_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('credited', 'reversed')"),
    )
    op.create_index("ix_actions_received", "actions", ["received_at", "id"], unique=False)
    make_append_only("action_reversals")
    role = app_role()
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON jobs TO {role}")
    op.execute(f"GRANT SELECT, INSERT ON action_reversals TO {role}")


def downgrade() -> None:
    role = app_role()
    op.execute(f"REVOKE ALL ON jobs, action_reversals FROM {role}")
    op.drop_index("ix_actions_received", table_name="actions")
    op.drop_index(
        "ix_actions_decided_credited",
        table_name="actions",
        postgresql_where=sa.text("status IN ('credited', 'reversed')"),
    )
    op.drop_index("ix_jobs_status_heartbeat", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_action_reversals_reversed_at", table_name="action_reversals")
    op.drop_table("action_reversals")
