"""Time-ordered ids (UUID version 7, RFC 9562) for transfers and accounts.

Transfer ids are chosen by callers and are the primary key. Random (v4) ids scatter inserts across
the whole index, so every insert dirties a different page and, after each checkpoint, writes a full
page image to the WAL; time-ordered ids keep inserts on the rightmost pages. TigerBeetle gives the
same advice for its ids. Any UUID is accepted; these are the ones to prefer.
"""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48-bit Unix time in milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & (2**48 - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & (2**62 - 1)  # rand_b, 62 bits
    return uuid.UUID(int=value)
