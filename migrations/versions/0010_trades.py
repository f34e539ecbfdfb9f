"""Second-hand trades: an action carries its platform's trade id, and a partner's trade is held by at most
one credited, held or reversed action (one traded item is one reduction).

Revision ID: 0010_trades
Revises: 0009_exchange
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_trades"
down_revision: str | None = "0009_exchange"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRADE_TAKEN = "trade_ref IS NOT NULL AND status IN ('credited', 'pending_review', 'reversed')"


def upgrade() -> None:
    op.add_column("actions", sa.Column("trade_ref", sa.String(length=128), nullable=True))
    op.create_index(
        "uq_actions_partner_trade",
        "actions",
        ["partner_id", "trade_ref"],
        unique=True,
        postgresql_where=sa.text(TRADE_TAKEN),
    )


def downgrade() -> None:
    op.drop_index("uq_actions_partner_trade", table_name="actions")
    op.drop_column("actions", "trade_ref")
