"""Accounts in the tamper evidence: a hash chain over every account, signed with each checkpoint.

An account's rules (which ledger, its code, its owner, whether it may be overdrawn) decide what
transfers it accepts, so a database superuser who flips a no-overdraft flag or changes an owner must
not pass ``ledger verify``. The sealer appends every account to a hash chain of its own, in the order
its creating transaction finished (``xact_id``, the rule transfers are sealed by), storing each
account's leaf hash and the chain so far; whenever it signs a transfers' checkpoint it also signs the
chain's head, under the log's origin followed by ``/accounts``. Accounts are never updated, so the
chain only grows. The verifier recomputes each account's leaf (naming an account that changed or
went missing), the chain (naming the range a rewritten leaf hides in), each signed head, and looks
for accounts created behind the chain's back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from ledger.checkpoint import Checkpoint, PublicKey, Signer, verify_signature
from ledger.errors import CheckpointRejected
from ledger.verify import VerifyReport

#: The chain's start, before any account.
GENESIS = bytes(32)
#: Accounts sealed per round at most (the rest wait for the next).
ROUND_LIMIT = 10_000
_ACCOUNT_COLUMNS = (
    "a.id, a.ledger, a.code, a.owner_ref, a.debits_must_not_exceed_credits, a.credits_must_not_exceed_debits, "
    "a.created_at"
)


#: Accounts after the chain's last, whose creating transactions have finished, in seal order.
READY_ACCOUNTS = f"""
    SELECT {_ACCOUNT_COLUMNS}, a.xact_id FROM ledger_accounts AS a
    WHERE (a.xact_id, a.id) > ($1::bigint, $2::uuid) AND a.xact_id < $3::bigint
    ORDER BY a.xact_id, a.id LIMIT $4::int
"""


def accounts_origin(origin: str) -> str:
    """What the accounts' chain heads are signed under: distinct from the transfers' checkpoints."""
    return f"{origin}/accounts"


def account_leaf(row: Any) -> bytes:
    """The leaf hash of an account: every field that decides what it accepts, canonically encoded."""
    fields = [
        str(row["id"]),
        row["ledger"],
        row["code"],
        row["owner_ref"],
        bool(row["debits_must_not_exceed_credits"]),
        bool(row["credits_must_not_exceed_debits"]),
        row["created_at"].isoformat(),
    ]
    encoded = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(b"\x02carbon-rewards-account\x00" + encoded).digest()


def chained(previous: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(previous + leaf).digest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    size: int
    head: bytes


async def seal_accounts(conn: asyncpg.Connection, horizon: int) -> ChainHead:
    """Append the accounts whose creating transactions have finished (below ``horizon``) to the chain."""
    last = await conn.fetchrow(
        "SELECT position, account_id, xact_id, chain_hash FROM ledger_account_log ORDER BY position DESC LIMIT 1"
    )
    size = 0 if last is None else last["position"] + 1
    head = GENESIS if last is None else bytes(last["chain_hash"])
    rows = await conn.fetch(
        READY_ACCOUNTS,
        -1 if last is None else last["xact_id"],
        UUID(int=0) if last is None else last["account_id"],
        horizon,
        ROUND_LIMIT,
    )
    if not rows:
        return ChainHead(size, head)
    positions, ids, xacts, leaves, heads = [], [], [], [], []
    for row in rows:
        leaf = account_leaf(row)
        head = chained(head, leaf)
        positions.append(size)
        ids.append(row["id"])
        xacts.append(row["xact_id"])
        leaves.append(leaf)
        heads.append(head)
        size += 1
    await conn.execute(
        "INSERT INTO ledger_account_log (position, account_id, xact_id, leaf_hash, chain_hash) "
        "SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bigint[], $4::bytea[], $5::bytea[])",
        positions,
        ids,
        xacts,
        leaves,
        heads,
    )
    return ChainHead(size, head)


async def sign_accounts(conn: asyncpg.Connection, signer: Signer, origin: str, chain: ChainHead, now: Any) -> None:
    """Sign the chain's head with the transfers' checkpoint, unless it is signed at this size already."""
    latest = await conn.fetchval("SELECT max(size) FROM ledger_account_checkpoints")
    if chain.size == 0 or latest == chain.size:
        return
    signed = signer.sign(accounts_origin(origin), chain.size, chain.head, now)
    await conn.execute(
        "INSERT INTO ledger_account_checkpoints (size, chain_hash, timestamp, key_id, signature) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        signed.tree_size,
        signed.root_hash,
        signed.timestamp,
        signed.key_id,
        signed.signature,
    )


async def verify_accounts(
    conn: asyncpg.Connection, origin: str, keys: dict[str, PublicKey], report: VerifyReport
) -> None:
    """Recompute every account's leaf, the chain and each signed head; add what is wrong to ``report``."""
    signed = [
        Checkpoint(r["size"], bytes(r["chain_hash"]), r["timestamp"], r["key_id"], bytes(r["signature"]))
        for r in await conn.fetch(
            "SELECT size, chain_hash, timestamp, key_id, signature FROM ledger_account_checkpoints ORDER BY size"
        )
    ]
    for checkpoint in signed:
        try:
            verify_signature(checkpoint, accounts_origin(origin), keys)
        except CheckpointRejected as exc:
            report.add("accounts_checkpoint_rejected", f"accounts' {exc.detail}")
    due = {c.tree_size: c for c in signed}
    head, last_good, expected, size = GENESIS, 0, 0, 0
    last_row: asyncpg.Record | None = None
    async for row in conn.cursor(
        f"""
        SELECT l.position, l.account_id, l.leaf_hash, l.xact_id AS sealed_xact, {_ACCOUNT_COLUMNS}
        FROM ledger_account_log AS l LEFT JOIN ledger_accounts AS a ON a.id = l.account_id
        ORDER BY l.position
        """,
        prefetch=2000,
    ):
        if row["position"] != expected:
            report.add(
                "account_position_gap", f"accounts' chain: expected position {expected}, found {row['position']}"
            )
            return
        stored_leaf = bytes(row["leaf_hash"])
        if row["id"] is None:
            report.add("account_missing", f"account {row['account_id']} was sealed but is no longer in the ledger")
            leaf = stored_leaf
        else:
            leaf = account_leaf(row)
            if leaf != stored_leaf:
                report.add(
                    "account_changed",
                    f"account {row['account_id']}: its ledger, code, owner or limits changed since it was sealed",
                )
        head = chained(head, leaf)
        expected = size = row["position"] + 1
        last_row = row
        checkpoint = due.get(size)
        if checkpoint is not None:
            if checkpoint.root_hash != head:
                report.add(
                    "accounts_chain_mismatch",
                    f"accounts' chain at size {size} differs from the signed one: an account among positions "
                    f"{last_good}..{size - 1} was changed and its leaf hash rewritten",
                )
                return
            last_good = size
    for checkpoint in signed:
        if checkpoint.tree_size > size:
            report.add(
                "accounts_checkpoint_beyond_chain",
                f"an accounts' checkpoint covers {checkpoint.tree_size} accounts but the chain has {size}",
            )
    if last_row is not None:
        strays = await conn.fetch(
            """
            SELECT a.id FROM ledger_accounts AS a
            WHERE (a.xact_id, a.id) <= ($1, $2)
              AND NOT EXISTS (SELECT FROM ledger_account_log AS l WHERE l.account_id = a.id)
            ORDER BY a.xact_id, a.id LIMIT 10
            """,
            last_row["sealed_xact"],
            last_row["account_id"],
        )
        for stray in strays:
            report.add(
                "account_unsealed_in_sealed_history",
                f"account {stray['id']} is dated inside the sealed accounts' chain but was never sealed: "
                "it was inserted behind the chain's back",
            )
