"""Cursor pagination shared by every listing: pages keyed by ``(moment, id)``, newest first.

A cursor is the key of the last item of a page, opaque to clients (URL-safe base64). Keyed pages
stay stable while rows are appended: nothing is skipped or repeated across pages.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from domain.errors import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(at: datetime, item_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{item_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The key a cursor names, or None for the first page; ``InvalidInput`` for one we did not issue."""
    if not cursor:
        return None
    try:
        at, _, item = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(item)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("the cursor is not one this service issued", field="cursor") from None


def page_of(rows: Sequence[T], limit: int, key: Callable[[T], tuple[datetime, uuid.UUID]]) -> Page[T]:
    """A page from up to ``limit + 1`` rows read: an extra row only says that a next page exists, whose
    cursor is the ``key`` of this page's last item."""
    items = list(rows[:limit])
    return Page(items, encode_cursor(*key(items[-1])) if len(rows) > limit else None)
