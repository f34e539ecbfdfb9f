"""Signed checkpoints (tree heads) of the ledger's Merkle log, and the keys that sign them.

A checkpoint says "the log named ``origin`` had ``tree_size`` leaves with root ``root_hash`` at
``timestamp``", signed with Ed25519. The signed bytes are a short UTF-8 text, so that anyone can
rebuild them without our code (docs/ledger-verification.md)::

    carbon-rewards checkpoint v1
    <origin>
    <tree_size in decimal>
    <root hash, standard base64>
    <timestamp, milliseconds since the Unix epoch, decimal>

A key is named by its key id: the first 8 bytes of SHA-256 over the raw 32-byte public key, in hex.
Rotating keys only adds a key: every public key ever used stays published, so old checkpoints stay
verifiable.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger.errors import CheckpointRejected

SIGNATURE_ALGORITHM = "ed25519"
_HEADER = "carbon-rewards checkpoint v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    tree_size: int
    root_hash: bytes
    timestamp: datetime
    key_id: str
    signature: bytes

    def signed_message(self, origin: str) -> bytes:
        return signed_message(origin, self.tree_size, self.root_hash, self.timestamp)


def timestamp_millis(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def to_millis_precision(moment: datetime) -> datetime:
    """Checkpoint timestamps carry whole milliseconds, so the stored and the signed value agree."""
    return _EPOCH + timedelta(milliseconds=timestamp_millis(moment))


def signed_message(origin: str, tree_size: int, root_hash: bytes, timestamp: datetime) -> bytes:
    lines = (_HEADER, origin, str(tree_size), base64.b64encode(root_hash).decode(), str(timestamp_millis(timestamp)))
    return ("\n".join(lines) + "\n").encode()


def key_id_of(public_key: bytes) -> str:
    return hashlib.sha256(public_key).digest()[:8].hex()


@dataclass(frozen=True, slots=True)
class PublicKey:
    key_id: str
    public_key: bytes
    algorithm: str = SIGNATURE_ALGORITHM


class Signer:
    """An Ed25519 private key that signs checkpoints."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    def describe(self) -> PublicKey:
        return PublicKey(self.key_id, self.public_key)

    def sign(self, origin: str, tree_size: int, root_hash: bytes, timestamp: datetime) -> Checkpoint:
        moment = to_millis_precision(timestamp)
        signature = self._key.sign(signed_message(origin, tree_size, root_hash, moment))
        return Checkpoint(tree_size, root_hash, moment, self.key_id, signature)


def verify_signature(checkpoint: Checkpoint, origin: str, keys: Mapping[str, PublicKey]) -> None:
    """Raise ``CheckpointRejected`` unless a known key signed exactly this checkpoint."""
    key = keys.get(checkpoint.key_id)
    if key is None:
        raise CheckpointRejected(
            "unknown_key", f"checkpoint {checkpoint.tree_size} is signed by unknown key {checkpoint.key_id!r}"
        )
    if key.algorithm != SIGNATURE_ALGORITHM or key_id_of(key.public_key) != key.key_id:
        raise CheckpointRejected("bad_key", f"key {key.key_id!r} is not an Ed25519 key with that id")
    try:
        verifier = Ed25519PublicKey.from_public_bytes(key.public_key)
        verifier.verify(checkpoint.signature, checkpoint.signed_message(origin))
    except (InvalidSignature, ValueError):
        raise CheckpointRejected(
            "bad_signature", f"checkpoint {checkpoint.tree_size}: the signature does not match key {key.key_id}"
        ) from None


def check_progression(older: Checkpoint, newer: Checkpoint) -> None:
    """A later checkpoint never shrinks the log or goes back in time (callers also check consistency)."""
    if newer.tree_size < older.tree_size:
        raise CheckpointRejected(
            "size_went_backwards",
            f"checkpoint of size {newer.tree_size} follows one of size {older.tree_size}: a log never shrinks",
        )
    if newer.timestamp < older.timestamp:
        raise CheckpointRejected(
            "time_went_backwards", f"checkpoint of size {newer.tree_size} is dated before its predecessor"
        )
    if newer.tree_size == older.tree_size and newer.root_hash != older.root_hash:
        raise CheckpointRejected("fork", f"two different roots for tree size {newer.tree_size}")
