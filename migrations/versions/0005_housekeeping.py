"""Housekeeping: indexes that let expired rate windows and one-time codes be deleted without a scan.

Revision ID: 0005_housekeeping
Revises: 0004_actions
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_housekeeping"
down_revision: str | None = "0004_actions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_rate_limit_windows_window_start", "rate_limit_windows", ["window_start"])
    op.create_index("ix_otp_challenges_expires_at", "otp_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_otp_challenges_expires_at", table_name="otp_challenges")
    op.drop_index("ix_rate_limit_windows_window_start", table_name="rate_limit_windows")
