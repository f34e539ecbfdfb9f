"""Ledger core: accounts, append-only transfers, striped balances, and the service role.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.common import app_role, make_append_only

revision: str = "0001_ledger"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("ledger_accounts", "ledger_transfers")


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("ledger", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("owner_ref", sa.String(length=200), nullable=True),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean(), nullable=False),
        sa.Column("credits_must_not_exceed_debits", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
            name="ck_ledger_accounts_one_limit",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ledger_accounts_owner_ref", "ledger_accounts", ["owner_ref"])

    op.create_table(
        "ledger_transfers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("debit_account_id", sa.Uuid(), nullable=False),
        sa.Column("credit_account_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("ledger", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("post_pending", sa.Boolean(), nullable=False),
        sa.Column("void_pending", sa.Boolean(), nullable=False),
        sa.Column("linked", sa.Boolean(), nullable=False),
        sa.Column("pending_id", sa.Uuid(), nullable=True),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name="ck_ledger_transfers_amount_positive"),
        sa.CheckConstraint("debit_account_id <> credit_account_id", name="ck_ledger_transfers_accounts_differ"),
        sa.CheckConstraint(
            "pending::int + post_pending::int + void_pending::int <= 1", name="ck_ledger_transfers_one_phase_flag"
        ),
        sa.CheckConstraint(
            "(pending_id IS NOT NULL) = (post_pending OR void_pending)", name="ck_ledger_transfers_pending_id"
        ),
        sa.CheckConstraint("timeout_s >= 0 AND (timeout_s = 0 OR pending)", name="ck_ledger_transfers_timeout"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_ledger_transfers_one_resolution",
        "ledger_transfers",
        ["pending_id"],
        unique=True,
        postgresql_where=sa.text("pending_id IS NOT NULL"),
    )
    op.create_index(
        "ix_ledger_transfers_expiry",
        "ledger_transfers",
        ["expires_at"],
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )
    op.create_index("ix_ledger_transfers_debit_account", "ledger_transfers", ["debit_account_id", "timestamp"])
    op.create_index("ix_ledger_transfers_credit_account", "ledger_transfers", ["credit_account_id", "timestamp"])

    op.create_table(
        "ledger_balances",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("slot >= 0 AND slot < 16", name="ck_ledger_balances_slot"),
        sa.ForeignKeyConstraint(["account_id"], ["ledger_accounts.id"], name="fk_ledger_balances_account"),
        sa.PrimaryKeyConstraint("account_id", "slot"),
    )

    # Append-only, enforced by the database for every role, the owner included.
    op.execute(
        """
        CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger table % is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in APPEND_ONLY:
        make_append_only(table)

    # References of new transfers, checked once per statement (no per-row locks on the accounts,
    # which cannot change anyway): both accounts exist on the transfer's ledger, and a post/void
    # names a pending transfer between the same accounts.
    op.execute(
        """
        CREATE FUNCTION ledger_check_new_transfers() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            bad uuid;
        BEGIN
            SELECT n.id INTO bad FROM new_transfers AS n
            WHERE NOT EXISTS (SELECT FROM ledger_accounts AS a
                              WHERE a.id = n.debit_account_id AND a.ledger = n.ledger)
               OR NOT EXISTS (SELECT FROM ledger_accounts AS a
                              WHERE a.id = n.credit_account_id AND a.ledger = n.ledger)
               OR (n.pending_id IS NOT NULL AND NOT EXISTS (
                      SELECT FROM ledger_transfers AS p
                      WHERE p.id = n.pending_id AND p.pending AND p.ledger = n.ledger
                        AND p.debit_account_id = n.debit_account_id
                        AND p.credit_account_id = n.credit_account_id))
            LIMIT 1;
            IF bad IS NOT NULL THEN
                RAISE EXCEPTION 'transfer % refers to a missing account, an account on another ledger, '
                                'or a pending transfer it does not match', bad
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_transfers_check_references AFTER INSERT ON ledger_transfers "
        "REFERENCING NEW TABLE AS new_transfers FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_new_transfers()"
    )

    # The service role: may read and append the ledger, may maintain the balance projection.
    role = app_role()
    op.execute(
        f"""
        DO $$ BEGIN
            -- Roles are shared by every database of the server: another database's migration may be
            -- creating or granting the same role at this moment, and either of them winning is fine.
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                BEGIN
                    CREATE ROLE {role} NOLOGIN;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END;
            END IF;
            IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
                BEGIN
                    EXECUTE format('GRANT {role} TO %I', current_user);
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END;
            END IF;
        END $$
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    op.execute(f"GRANT SELECT ON alembic_version TO {role}")
    op.execute(f"GRANT SELECT, INSERT ON ledger_accounts, ledger_transfers TO {role}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON ledger_balances TO {role}")


def downgrade() -> None:
    role = app_role()
    op.execute(f"REVOKE ALL ON ledger_accounts, ledger_transfers, ledger_balances FROM {role}")
    op.execute(f"REVOKE ALL ON alembic_version FROM {role}")
    op.drop_table("ledger_balances")
    op.drop_table("ledger_transfers")
    op.drop_table("ledger_accounts")
    op.execute("DROP FUNCTION ledger_reject_change()")
    op.execute("DROP FUNCTION ledger_check_new_transfers()")
