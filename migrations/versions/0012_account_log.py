"""Accounts in the tamper evidence: every account is sealed into a hash chain of its own, in the order
its creating transaction finished (``xact_id``, as for transfers), and the chain's head is signed
with every checkpoint. Changing an account's limit flags or owner no longer passes ``ledger verify``.

Revision ID: 0012_account_log
Revises: 0011_service_login
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.common import app_role, make_append_only

revision: str = "0012_account_log"
down_revision: str | None = "0011_service_login"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("ledger_account_log", "ledger_account_checkpoints")
ACCOUNT_COLUMNS_THE_SERVICE_WRITES = (
    "id, ledger, code, owner_ref, debits_must_not_exceed_credits, credits_must_not_exceed_debits"
)


def upgrade() -> None:
    op.add_column(
        "ledger_accounts",
        sa.Column(
            "xact_id", sa.BigInteger(), server_default=sa.text("(pg_current_xact_id()::text)::bigint"), nullable=False
        ),
    )
    op.create_index("ix_ledger_accounts_seal_order", "ledger_accounts", ["xact_id", "id"])
    op.create_table(
        "ledger_account_log",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("xact_id", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("account_id", name="uq_ledger_account_log_account"),
    )
    op.create_table(
        "ledger_account_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )
    for table in APPEND_ONLY:
        make_append_only(table)
    role = app_role()
    # The service may not choose xact_id: only the listed columns are insertable by it.
    op.execute(f"REVOKE INSERT ON ledger_accounts FROM {role}")
    op.execute(f"GRANT INSERT ({ACCOUNT_COLUMNS_THE_SERVICE_WRITES}) ON ledger_accounts TO {role}")
    op.execute(f"GRANT SELECT, INSERT ON {', '.join(APPEND_ONLY)} TO {role}")


def downgrade() -> None:
    role = app_role()
    op.execute(f"REVOKE ALL ON {', '.join(APPEND_ONLY)} FROM {role}")
    op.execute(f"REVOKE INSERT ({ACCOUNT_COLUMNS_THE_SERVICE_WRITES}) ON ledger_accounts FROM {role}")
    op.execute(f"GRANT INSERT ON ledger_accounts TO {role}")
    for table in reversed(APPEND_ONLY):
        op.drop_table(table)
    op.drop_index("ix_ledger_accounts_seal_order", table_name="ledger_accounts")
    op.drop_column("ledger_accounts", "xact_id")
