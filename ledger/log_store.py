"""PostgreSQL storage of the Merkle log: leaves, stored subtree hashes, checkpoints, keys, and proofs.

Functions take an asyncpg connection; writers run inside the sealer's transaction. A proof needs
the hashes of at most ``2 log2 n`` complete aligned subtrees: those of ``STORED_NODE_MIN_LEVEL``
leaves or more are read from ``ledger_tree_nodes``, smaller ones are hashed from their leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from ledger import merkle
from ledger.checkpoint import Checkpoint, PublicKey
from ledger.errors import CheckpointRejected, TransferNotSealed, TreeSizeNotFound
from ledger.leaf import LeafFields, encode
from ledger.models import STORED_NODE_MIN_LEVEL

#: Fields of a transfer that its leaf commits to, with the metadata as PostgreSQL renders it.
LEAF_COLUMNS = (
    "t.id, t.debit_account_id, t.credit_account_id, t.amount, t.ledger, t.code, t.pending, t.post_pending, "
    "t.void_pending, t.linked, t.pending_id, t.timeout_s, t.timestamp, t.reference, t.metadata::text AS metadata_json"
)
_CHECKPOINT_COLUMNS = "tree_size, root_hash, timestamp, key_id, signature"


def leaf_fields(row: asyncpg.Record) -> LeafFields:
    return LeafFields(
        id=row["id"],
        debit_account_id=row["debit_account_id"],
        credit_account_id=row["credit_account_id"],
        amount=row["amount"],
        ledger=row["ledger"],
        code=row["code"],
        pending=row["pending"],
        post_pending=row["post_pending"],
        void_pending=row["void_pending"],
        linked=row["linked"],
        pending_id=row["pending_id"],
        timeout_s=row["timeout_s"],
        timestamp=row["timestamp"],
        reference=row["reference"],
        metadata_json=row["metadata_json"],
    )


def leaf_hash_of(fields: LeafFields) -> bytes:
    return merkle.leaf_hash(encode(fields))


def _checkpoint(row: asyncpg.Record) -> Checkpoint:
    return Checkpoint(
        row["tree_size"], bytes(row["root_hash"]), row["timestamp"], row["key_id"], bytes(row["signature"])
    )


# ------------------------------------------------------------------------------------------- sealing


@dataclass(frozen=True, slots=True)
class LogHead:
    """Where the log ends: its size and the (xact_id, transfer id) of its last leaf."""

    size: int
    last_xact_id: int
    last_transfer_id: UUID


EMPTY_HEAD = LogHead(0, -1, UUID(int=0))


async def log_head(conn: asyncpg.Connection) -> LogHead:
    row = await conn.fetchrow("SELECT position, xact_id, transfer_id FROM ledger_log ORDER BY position DESC LIMIT 1")
    return EMPTY_HEAD if row is None else LogHead(row["position"] + 1, row["xact_id"], row["transfer_id"])


async def seal_horizon(conn: asyncpg.Connection) -> int:
    """The oldest transaction id still running: every transaction below it has committed or aborted."""
    return await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")


async def ready_transfers(conn: asyncpg.Connection, head: LogHead, horizon: int, limit: int) -> list[asyncpg.Record]:
    """Transfers after the log's head whose transactions have finished, in seal order."""
    return await conn.fetch(
        f"""
        SELECT {LEAF_COLUMNS}, t.xact_id FROM ledger_transfers AS t
        WHERE (t.xact_id, t.id) > ($1, $2) AND t.xact_id < $3
        ORDER BY t.xact_id, t.id LIMIT $4
        """,
        head.last_xact_id,
        head.last_transfer_id,
        horizon,
        limit,
    )


async def count_unsealed(conn: asyncpg.Connection, head: LogHead, limit: int) -> int:
    """Committed transfers after the log's head (at most ``limit``): the sealer's lag, on the sealer's index."""
    return await conn.fetchval(
        """
        SELECT count(*) FROM (
            SELECT 1 FROM ledger_transfers AS t WHERE (t.xact_id, t.id) > ($1, $2) LIMIT $3
        ) AS unsealed
        """,
        head.last_xact_id,
        head.last_transfer_id,
        limit,
    )


async def append_leaves(
    conn: asyncpg.Connection, first_position: int, leaves: Sequence[tuple[UUID, int, bytes]]
) -> None:
    """Store leaves ``(transfer_id, xact_id, leaf_hash)`` at consecutive positions."""
    await conn.execute(
        """
        INSERT INTO ledger_log (position, transfer_id, xact_id, leaf_hash)
        SELECT $1 + o - 1, t, x, h FROM unnest($2::uuid[], $3::bigint[], $4::bytea[]) WITH ORDINALITY AS v(t, x, h, o)
        """,
        first_position,
        [leaf[0] for leaf in leaves],
        [leaf[1] for leaf in leaves],
        [leaf[2] for leaf in leaves],
    )


async def store_nodes(conn: asyncpg.Connection, nodes: Sequence[tuple[int, int, bytes]]) -> None:
    if nodes:
        await conn.execute(
            'INSERT INTO ledger_tree_nodes (level, "index", hash) '
            "SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
            [n[0] for n in nodes],
            [n[1] for n in nodes],
            [n[2] for n in nodes],
        )


# Keyed reads probe the primary key once per key (see ledger/store.py): a plan cached while the log
# was empty would otherwise go on scanning it whole, and a proof's cost would grow with the log.
SUBTREE_NODES = """
    SELECT n.* FROM unnest($1::smallint[], $2::bigint[]) AS w(level, i)
    CROSS JOIN LATERAL (
        SELECT level, "index", hash FROM ledger_tree_nodes WHERE level = w.level AND "index" = w.i OFFSET 0
    ) AS n
"""
LEAF_HASHES = """
    SELECT l.* FROM unnest($1::bigint[]) AS k(position)
    CROSS JOIN LATERAL (SELECT position, leaf_hash FROM ledger_log WHERE position = k.position OFFSET 0) AS l
"""


async def subtree_hashes(conn: asyncpg.Connection, pieces: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Hashes of complete aligned subtrees ``(level, index)``, from stored nodes or from their leaves."""
    pieces = set(pieces)
    stored = [(level, index) for level, index in pieces if level >= STORED_NODE_MIN_LEVEL]
    small = [(level, index) for level, index in pieces if level < STORED_NODE_MIN_LEVEL]
    result: dict[tuple[int, int], bytes] = {}
    if stored:
        rows = await conn.fetch(SUBTREE_NODES, [p[0] for p in stored], [p[1] for p in stored])
        result.update({(r["level"], r["index"]): bytes(r["hash"]) for r in rows})
    if small:
        positions = sorted({p for level, index in small for p in range(index << level, (index + 1) << level)})
        rows = await conn.fetch(LEAF_HASHES, positions)
        leaves = {r["position"]: bytes(r["leaf_hash"]) for r in rows}
        for level, index in small:
            span = [leaves.get(p) for p in range(index << level, (index + 1) << level)]
            if all(h is not None for h in span):
                result[(level, index)] = merkle.root(span)  # type: ignore[arg-type]
    missing = pieces - result.keys()
    if missing:
        raise LookupError(f"the log has no subtree hash for {sorted(missing)[:3]}")
    return result


async def resolve_ranges(conn: asyncpg.Connection, ranges: Sequence[merkle.Range]) -> list[bytes]:
    """Tree hashes of leaf ranges (proof elements), fetched in two queries."""
    pieces = [merkle.aligned_pieces(start, end) for start, end in ranges]
    hashes = await subtree_hashes(conn, (p for group in pieces for p in group))
    return [merkle.fold_pieces([hashes[p] for p in group]) for group in pieces]


async def compact_range(conn: asyncpg.Connection, size: int) -> merkle.CompactRange:
    """The right edge of the stored tree of ``size`` leaves (to resume sealing after a restart)."""
    hashes = await subtree_hashes(conn, merkle.aligned_pieces(0, size))
    return merkle.CompactRange.for_size(size, lambda level, index: hashes[(level, index)])


# -------------------------------------------------------------------------------- checkpoints, keys


async def latest_checkpoint(conn: asyncpg.Connection) -> Checkpoint | None:
    row = await conn.fetchrow(f"SELECT {_CHECKPOINT_COLUMNS} FROM ledger_checkpoints ORDER BY tree_size DESC LIMIT 1")
    return None if row is None else _checkpoint(row)


async def checkpoint_at(conn: asyncpg.Connection, tree_size: int) -> Checkpoint:
    row = await conn.fetchrow(f"SELECT {_CHECKPOINT_COLUMNS} FROM ledger_checkpoints WHERE tree_size = $1", tree_size)
    if row is None:
        raise TreeSizeNotFound(f"no checkpoint has tree size {tree_size}", tree_size=tree_size)
    return _checkpoint(row)


async def all_checkpoints(conn: asyncpg.Connection) -> list[Checkpoint]:
    rows = await conn.fetch(f"SELECT {_CHECKPOINT_COLUMNS} FROM ledger_checkpoints ORDER BY tree_size")
    return [_checkpoint(r) for r in rows]


async def insert_checkpoint(conn: asyncpg.Connection, cp: Checkpoint) -> None:
    await conn.execute(
        f"INSERT INTO ledger_checkpoints ({_CHECKPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
        cp.tree_size,
        cp.root_hash,
        cp.timestamp,
        cp.key_id,
        cp.signature,
    )


async def register_key(conn: asyncpg.Connection, key: PublicKey) -> None:
    await conn.execute(
        "INSERT INTO ledger_signing_keys (key_id, algorithm, public_key) VALUES ($1, $2, $3) "
        "ON CONFLICT (key_id) DO NOTHING",
        key.key_id,
        key.algorithm,
        key.public_key,
    )


async def public_keys(conn: asyncpg.Connection) -> dict[str, PublicKey]:
    rows = await conn.fetch("SELECT key_id, algorithm, public_key FROM ledger_signing_keys ORDER BY created_at")
    return {r["key_id"]: PublicKey(r["key_id"], bytes(r["public_key"]), r["algorithm"]) for r in rows}


# ------------------------------------------------------------------------------------------- proofs


@dataclass(frozen=True, slots=True)
class InclusionProof:
    checkpoint: Checkpoint
    position: int
    leaf_data: bytes
    leaf_hash: bytes
    hashes: list[bytes]


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    first: Checkpoint
    second: Checkpoint
    hashes: list[bytes]


SEALED_TRANSFER = f"""
    SELECT l.position, l.leaf_hash, {LEAF_COLUMNS} FROM ledger_log AS l
    JOIN ledger_transfers AS t ON t.id = l.transfer_id WHERE l.transfer_id = $1::uuid
    AND ($2::text IS NULL OR EXISTS (SELECT FROM ledger_accounts AS a
                                     WHERE a.id IN (t.debit_account_id, t.credit_account_id) AND a.owner_ref = $2))
"""


async def count_in_tree(conn: asyncpg.Connection, transfer_ids: Sequence[UUID], tree_size: int) -> int:
    """How many of these transfers are leaves of the tree of ``tree_size`` leaves."""
    return await conn.fetchval(
        "SELECT count(*) FROM ledger_log WHERE transfer_id = ANY($1::uuid[]) AND position < $2",
        list(transfer_ids),
        tree_size,
    )


async def inclusion_proof(
    conn: asyncpg.Connection, transfer_id: UUID, tree_size: int, *, owner_ref: str | None = None
) -> InclusionProof:
    """Proof that a transfer is leaf ``position`` of the checkpointed tree of ``tree_size`` leaves.

    With ``owner_ref``, only a transfer debiting or crediting an account of that owner is found;
    anyone else's transfer is reported exactly like a transfer that does not exist.
    """
    cp = await checkpoint_at(conn, tree_size)
    row = await conn.fetchrow(SEALED_TRANSFER, transfer_id, owner_ref)
    if row is None or row["position"] >= tree_size:
        raise TransferNotSealed(
            f"transfer {transfer_id} is not in the log at tree size {tree_size}",
            transfer_id=str(transfer_id),
            tree_size=tree_size,
        )
    hashes = await resolve_ranges(conn, merkle.inclusion_path(row["position"], tree_size))
    return InclusionProof(cp, row["position"], encode(leaf_fields(row)), bytes(row["leaf_hash"]), hashes)


async def consistency_proof(conn: asyncpg.Connection, first: int, second: int) -> ConsistencyProof:
    """Proof that the checkpointed tree of ``second`` leaves extends the one of ``first`` leaves."""
    if first > second:
        raise CheckpointRejected("size_went_backwards", f"tree size {first} is larger than {second}")
    first_cp = await checkpoint_at(conn, first)
    second_cp = await checkpoint_at(conn, second)
    hashes = await resolve_ranges(conn, merkle.consistency_path(first, second))
    return ConsistencyProof(first_cp, second_cp, hashes)
