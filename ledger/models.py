"""The ledger's tables.

``ledger_accounts`` and ``ledger_transfers`` are append-only (PostgreSQL triggers and privileges
enforce it, see the first migration). References from a transfer to its accounts (on the
transfer's ledger) and to the pending transfer it resolves are checked once per INSERT statement by
a trigger rather than by foreign keys: a foreign key locks the referenced row for every inserted
transfer, and the issuance account is referenced by nearly all of them. ``ledger_balances`` is a
projection written in the same transaction as the transfers, striped into slots so that accounts
without balance limits (the issuance account every credit touches) never serialise concurrent writers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

#: Balance slots of an account without balance limits; writers pick one at random.
BALANCE_SLOTS = 16
#: Lowest level of Merkle subtree whose hash is stored (2**4 = 16 leaves).
STORED_NODE_MIN_LEVEL = 4


class LedgerAccount(SQLModel, table=True):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint(
            "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
            name="ck_ledger_accounts_one_limit",
        ),
        Index("ix_ledger_accounts_owner_ref", "owner_ref"),
        Index("ix_ledger_accounts_seal_order", "xact_id", "id"),
    )

    id: UUID = Field(primary_key=True)
    ledger: str = Field(sa_column=Column(String(16), nullable=False))
    code: str = Field(sa_column=Column(String(64), nullable=False))
    owner_ref: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    debits_must_not_exceed_credits: bool = Field(default=False)
    credits_must_not_exceed_debits: bool = Field(default=False)
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=text("now()"))
    )
    #: The creating transaction (the accounts' seal order, like transfers'); set by the database.
    xact_id: int = Field(
        sa_column=Column(BigInteger, nullable=False, server_default=text("(pg_current_xact_id()::text)::bigint"))
    )


class LedgerTransfer(SQLModel, table=True):
    __tablename__ = "ledger_transfers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="ck_ledger_transfers_amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="ck_ledger_transfers_accounts_differ"),
        CheckConstraint(
            "pending::int + post_pending::int + void_pending::int <= 1", name="ck_ledger_transfers_one_phase_flag"
        ),
        CheckConstraint(
            "(pending_id IS NOT NULL) = (post_pending OR void_pending)", name="ck_ledger_transfers_pending_id"
        ),
        CheckConstraint("timeout_s >= 0 AND (timeout_s = 0 OR pending)", name="ck_ledger_transfers_timeout"),
        Index(
            "uq_ledger_transfers_one_resolution",
            "pending_id",
            unique=True,
            postgresql_where=text("pending_id IS NOT NULL"),
        ),
        Index("ix_ledger_transfers_expiry", "expires_at", postgresql_where=text("expires_at IS NOT NULL")),
        Index("ix_ledger_transfers_debit_account", "debit_account_id", "timestamp"),
        Index("ix_ledger_transfers_credit_account", "credit_account_id", "timestamp"),
        Index("ix_ledger_transfers_seal_order", "xact_id", "id"),
    )

    id: UUID = Field(primary_key=True)
    debit_account_id: UUID = Field(nullable=False)
    credit_account_id: UUID = Field(nullable=False)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    ledger: str = Field(sa_column=Column(String(16), nullable=False))
    code: str = Field(sa_column=Column(String(64), nullable=False))
    reference: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    metadata_: dict[str, Any] | None = Field(default=None, sa_column=Column("metadata", JSONB, nullable=True))
    pending: bool = Field(default=False)
    post_pending: bool = Field(default=False)
    void_pending: bool = Field(default=False)
    linked: bool = Field(default=False)
    pending_id: UUID | None = Field(default=None)
    timeout_s: int = Field(default=0)
    timestamp: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    #: The id of the transaction that wrote the row, set by the database (the service role may not).
    #: The sealer takes rows in (xact_id, id) order, only from transactions older than every running one.
    xact_id: int = Field(
        sa_column=Column(BigInteger, nullable=False, server_default=text("(pg_current_xact_id()::text)::bigint"))
    )


class LedgerBalance(SQLModel, table=True):
    """One slot of an account's balance; the balance is the sum of its slots.

    Balance-limited accounts have exactly one slot (0), locked while a transfer is checked against it.
    """

    __tablename__ = "ledger_balances"
    __table_args__ = (
        ForeignKeyConstraint(["account_id"], ["ledger_accounts.id"], name="fk_ledger_balances_account"),
        CheckConstraint(f"slot >= 0 AND slot < {BALANCE_SLOTS}", name="ck_ledger_balances_slot"),
    )

    account_id: UUID = Field(primary_key=True)
    slot: int = Field(sa_column=Column(SmallInteger, primary_key=True, nullable=False))
    debits_pending: int = Field(sa_column=Column(BigInteger, nullable=False, server_default=text("0")))
    debits_posted: int = Field(sa_column=Column(BigInteger, nullable=False, server_default=text("0")))
    credits_pending: int = Field(sa_column=Column(BigInteger, nullable=False, server_default=text("0")))
    credits_posted: int = Field(sa_column=Column(BigInteger, nullable=False, server_default=text("0")))


class LedgerAccountLogEntry(SQLModel, table=True):
    """Position ``position`` of the accounts' hash chain: which account, its leaf and the chain so far."""

    __tablename__ = "ledger_account_log"
    __table_args__ = (UniqueConstraint("account_id", name="uq_ledger_account_log_account"),)

    position: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    account_id: UUID = Field(nullable=False)
    xact_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    chain_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class LedgerAccountCheckpoint(SQLModel, table=True):
    """The accounts' chain head at ``size`` accounts, signed with the transfers' checkpoint (append-only)."""

    __tablename__ = "ledger_account_checkpoints"

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    chain_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    timestamp: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    key_id: str = Field(sa_column=Column(String(16), nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class LedgerLogEntry(SQLModel, table=True):
    """Position ``position`` of the Merkle log: which transfer, and its leaf hash (append-only)."""

    __tablename__ = "ledger_log"
    __table_args__ = (UniqueConstraint("transfer_id", name="uq_ledger_log_transfer"),)

    position: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    transfer_id: UUID = Field(nullable=False)
    xact_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class LedgerTreeNode(SQLModel, table=True):
    """Hash of the complete subtree of ``2**level`` leaves starting at leaf ``index * 2**level``.

    Only levels from ``STORED_NODE_MIN_LEVEL`` up are kept (one row per 16 leaves at most); smaller
    subtrees are hashed from their leaves when a proof needs them.
    """

    __tablename__ = "ledger_tree_nodes"

    level: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class LedgerCheckpoint(SQLModel, table=True):
    """A signed tree head (append-only)."""

    __tablename__ = "ledger_checkpoints"

    tree_size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    timestamp: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    key_id: str = Field(sa_column=Column(String(16), nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class LedgerSigningKey(SQLModel, table=True):
    """Every public key that has signed checkpoints; rotation adds rows, never removes them."""

    __tablename__ = "ledger_signing_keys"

    key_id: str = Field(sa_column=Column(String(16), primary_key=True))
    algorithm: str = Field(sa_column=Column(String(16), nullable=False))
    public_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=text("now()"))
    )
