"""The canonical, versioned byte encoding of a transfer: the data of its Merkle leaf.

An outside verifier must be able to rebuild these bytes from a transfer's fields with nothing but
this description (also in docs/ledger-verification.md). Version 1, all integers big-endian:

    magic      4 bytes  b"CRTX"
    version    u8       1
    id         16 bytes UUID
    debit      16 bytes UUID of the debit account
    credit     16 bytes UUID of the credit account
    amount     u64
    ledger     u8 length + UTF-8
    code       u8 length + UTF-8
    flags      u8       1 = pending, 2 = post_pending, 4 = void_pending, 8 = linked
    pending_id 16 bytes UUID, all zero when absent
    timeout_s  u32
    timestamp  i64      microseconds since 1970-01-01T00:00:00Z
    reference  u32 length + UTF-8, or the length 0xFFFFFFFF alone when absent
    metadata   u32 length + UTF-8, or 0xFFFFFFFF alone when absent: the JSON text exactly as
               PostgreSQL's jsonb renders it (``metadata::text``), which is deterministic

Length prefixes make the encoding unambiguous: no two different transfers share bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from ledger.types import ZERO_ID

LEAF_MAGIC = b"CRTX"
LEAF_VERSION = 1
_ABSENT = 0xFFFFFFFF
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLAG_BITS = (("pending", 1), ("post_pending", 2), ("void_pending", 4), ("linked", 8))


@dataclass(frozen=True, slots=True)
class LeafFields:
    """Exactly the fields a leaf commits to, with metadata as its stored JSON text."""

    id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: int
    ledger: str
    code: str
    pending: bool
    post_pending: bool
    void_pending: bool
    linked: bool
    pending_id: UUID | None
    timeout_s: int
    timestamp: datetime
    reference: str | None
    metadata_json: str | None


def epoch_micros(moment: datetime) -> int:
    """Exact microseconds since the Unix epoch (no float rounding)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _short(text: str) -> bytes:
    data = text.encode()
    return bytes([len(data)]) + data


def _optional(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">I", _ABSENT)
    data = text.encode()
    return struct.pack(">I", len(data)) + data


def encode(f: LeafFields) -> bytes:
    """Version-1 leaf data of a transfer."""
    flags = sum(bit for name, bit in _FLAG_BITS if getattr(f, name))
    return b"".join(
        (
            LEAF_MAGIC,
            bytes([LEAF_VERSION]),
            f.id.bytes,
            f.debit_account_id.bytes,
            f.credit_account_id.bytes,
            struct.pack(">Q", f.amount),
            _short(f.ledger),
            _short(f.code),
            bytes([flags]),
            (f.pending_id or ZERO_ID).bytes,
            struct.pack(">Iq", f.timeout_s, epoch_micros(f.timestamp)),
            _optional(f.reference),
            _optional(f.metadata_json),
        )
    )


class LeafDecodeError(ValueError):
    pass


def decode(data: bytes) -> LeafFields:
    """Parse version-1 leaf data (for verifiers that receive the bytes with a proof)."""
    view = memoryview(data)
    offset = 0

    def take(n: int) -> bytes:
        nonlocal offset
        if offset + n > len(view):
            raise LeafDecodeError("leaf data is truncated")
        chunk = bytes(view[offset : offset + n])
        offset += n
        return chunk

    def optional() -> str | None:
        (length,) = struct.unpack(">I", take(4))
        return None if length == _ABSENT else take(length).decode()

    if take(4) != LEAF_MAGIC:
        raise LeafDecodeError("not a carbon-rewards transfer leaf")
    if (version := take(1)[0]) != LEAF_VERSION:
        raise LeafDecodeError(f"unknown leaf version {version}")
    ids = [UUID(bytes=take(16)) for _ in range(3)]
    (amount,) = struct.unpack(">Q", take(8))
    ledger = take(take(1)[0]).decode()
    code = take(take(1)[0]).decode()
    flags = take(1)[0]
    pending_id = UUID(bytes=take(16))
    timeout_s, micros = struct.unpack(">Iq", take(12))
    reference = optional()
    metadata_json = optional()
    if offset != len(view):
        raise LeafDecodeError("trailing bytes after the leaf")
    return LeafFields(
        id=ids[0],
        debit_account_id=ids[1],
        credit_account_id=ids[2],
        amount=amount,
        ledger=ledger,
        code=code,
        pending=bool(flags & 1),
        post_pending=bool(flags & 2),
        void_pending=bool(flags & 4),
        linked=bool(flags & 8),
        pending_id=None if pending_id == ZERO_ID else pending_id,
        timeout_s=timeout_s,
        timestamp=_EPOCH + timedelta(microseconds=micros),
        reference=reference,
        metadata_json=metadata_json,
    )
