"""Tamper evidence: the Merkle log over the transfers, its stored subtree hashes, signed checkpoints, keys.

Every transfer also records the id of the transaction that wrote it (``xact_id``, set by the
database), which lets the sealer take only rows whose transaction can no longer commit late.

Revision ID: 0002_merkle_log
Revises: 0001_ledger
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.common import app_role, make_append_only

revision: str = "0002_merkle_log"
down_revision: str | None = "0001_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("ledger_log", "ledger_tree_nodes", "ledger_checkpoints", "ledger_signing_keys")
TRANSFER_COLUMNS_THE_SERVICE_WRITES = (
    "id, debit_account_id, credit_account_id, amount, ledger, code, reference, metadata, pending, "
    "post_pending, void_pending, linked, pending_id, timeout_s, timestamp, expires_at"
)


def upgrade() -> None:
    op.add_column(
        "ledger_transfers",
        sa.Column(
            "xact_id",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
            nullable=False,
        ),
    )
    op.create_index("ix_ledger_transfers_seal_order", "ledger_transfers", ["xact_id", "id"])
    op.create_table(
        "ledger_log",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("transfer_id", sa.Uuid(), nullable=False),
        sa.Column("xact_id", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("transfer_id", name="uq_ledger_log_transfer"),
        sa.CheckConstraint("position >= 0 AND octet_length(leaf_hash) = 32", name="ck_ledger_log_leaf"),
    )
    op.create_table(
        "ledger_tree_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "index"),
        sa.CheckConstraint("octet_length(hash) = 32", name="ck_ledger_tree_nodes_hash"),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size"),
    )
    op.create_table(
        "ledger_signing_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    for table in APPEND_ONLY:
        make_append_only(table)

    role = app_role()
    # The service may not choose xact_id: only the listed columns are insertable by it.
    op.execute(f"REVOKE INSERT ON ledger_transfers FROM {role}")
    op.execute(f"GRANT INSERT ({TRANSFER_COLUMNS_THE_SERVICE_WRITES}) ON ledger_transfers TO {role}")
    op.execute(f"GRANT SELECT, INSERT ON {', '.join(APPEND_ONLY)} TO {role}")


def downgrade() -> None:
    role = app_role()
    op.execute(f"REVOKE ALL ON {', '.join(APPEND_ONLY)} FROM {role}")
    op.execute(f"REVOKE INSERT ({TRANSFER_COLUMNS_THE_SERVICE_WRITES}) ON ledger_transfers FROM {role}")
    op.execute(f"GRANT INSERT ON ledger_transfers TO {role}")
    for table in reversed(APPEND_ONLY):
        op.drop_table(table)
    op.drop_index("ix_ledger_transfers_seal_order", table_name="ledger_transfers")
    op.drop_column("ledger_transfers", "xact_id")
