"""The last checkpoint this service signed, kept where the database cannot rewrite it.

A database superuser can cut the end off the log (and its checkpoints) or delete checkpoints; the
signatures of what remains still verify. So the sealer keeps the latest checkpoint it signed in a
file outside the database (the data directory), and before it signs another it checks that the
database's log still extends that one: at least as many leaves, the same root at that size, and the
checkpoint itself still stored. If not, it refuses to sign and says why, once. ``ledger verify``
takes the same file (or a checkpoint fetched earlier from ``GET /v1/ledger/checkpoints/latest``) as
a trusted reference and fails when the database's log does not extend it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import asyncpg

from ledger import log_store
from ledger.checkpoint import Checkpoint
from ledger.errors import TreeSizeNotFound
from ledger.verify import checkpoint_from_json, checkpoint_to_json

#: The file, in the data directory, that holds the last checkpoint the service signed.
WITNESS_FILE = "ledger-latest-checkpoint.json"

log = logging.getLogger(__name__)


class Witness(Protocol):
    """Somewhere outside the database that keeps the latest checkpoint the service signed."""

    name: str

    async def latest(self) -> Checkpoint | None: ...

    async def keep(self, checkpoint: Checkpoint) -> None: ...


async def latest_witnessed(witnesses: Sequence[Witness]) -> Checkpoint | None:
    """The largest checkpoint any witness holds (a witness that cannot answer is skipped, and said so)."""
    found: list[Checkpoint] = []
    for witness in witnesses:
        try:
            checkpoint = await witness.latest()
        except Exception as exc:  # noqa: BLE001 - one unreachable witness must not stop the others' check
            log.warning("checkpoint witness %s could not be read: %s", witness.name, exc)
            continue
        if checkpoint is not None:
            found.append(checkpoint)
    return max(found, key=lambda c: c.tree_size, default=None)


async def keep_everywhere(witnesses: Sequence[Witness], checkpoint: Checkpoint) -> None:
    for witness in witnesses:
        try:
            await witness.keep(checkpoint)
        except Exception as exc:  # noqa: BLE001 - the checkpoint is committed; the next one is offered again
            log.warning("checkpoint witness %s did not take checkpoint %d: %s", witness.name, checkpoint.tree_size, exc)


class CheckpointWitness:
    """The last signed checkpoint, in a JSON file written atomically (the format of
    ``GET /v1/ledger/checkpoints/latest``)."""

    def __init__(self, path: Path, origin: str) -> None:
        self.path = path
        self.origin = origin
        self.name = str(path)

    async def latest(self) -> Checkpoint | None:
        return self.load()

    async def keep(self, checkpoint: Checkpoint) -> None:
        self.save(checkpoint)

    def load(self) -> Checkpoint | None:
        if not self.path.exists():
            return None
        return read_trusted_checkpoint(self.path)

    def save(self, checkpoint: Checkpoint) -> None:
        current = self.load()
        if current is not None and current.tree_size > checkpoint.tree_size:
            return  # another sealer of this log already kept a later one
        document = {"origin": self.origin, **checkpoint_to_json(checkpoint)}
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(scratch, self.path)


def read_trusted_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint from a JSON file (raises ``OSError``, ``ValueError`` or ``KeyError`` if unreadable)."""
    return checkpoint_from_json(json.loads(path.read_text(encoding="utf-8")))


async def extension_problem(conn: asyncpg.Connection, trusted: Checkpoint, size: int) -> str | None:
    """Why the database's log of ``size`` leaves does not extend ``trusted``; None when it does."""
    if size < trusted.tree_size:
        return (
            f"the log has {size} leaves, fewer than the {trusted.tree_size} of the trusted checkpoint: "
            "its end was cut off"
        )
    try:
        root = (await log_store.compact_range(conn, trusted.tree_size)).root()
    except KeyError:
        root = None
    if root != trusted.root_hash:
        return (
            f"the log's root at size {trusted.tree_size} is not the trusted checkpoint's: "
            "the log was rewritten, not extended"
        )
    try:
        kept = await log_store.checkpoint_at(conn, trusted.tree_size)
    except TreeSizeNotFound:
        kept = None
    if kept is None or kept.root_hash != trusted.root_hash:
        return f"the trusted checkpoint of size {trusted.tree_size} is no longer stored: checkpoints were deleted"
    return None


__all__ = [
    "WITNESS_FILE",
    "CheckpointWitness",
    "Witness",
    "extension_problem",
    "keep_everywhere",
    "latest_witnessed",
    "read_trusted_checkpoint",
]
