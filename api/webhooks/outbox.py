"""The transactional outbox: events are written in the same transaction as the change they report.

A feature loads its caller's ``Outbox`` (one query: the owner's endpoint and the events it
subscribed to), builds the events it wants, and emits them on the transaction's connection (one
statement for the events and their deliveries). Nothing is written for an owner without an
endpoint, or for events it did not subscribe to. An event written twice (a retried transaction) is
held once: its id is its primary key. The dispatcher delivers what is committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import msgspec

from api.webhooks.events import Event, EventType

_ENDPOINT = """
    SELECT id, events FROM webhook_endpoints WHERE owner_role = $1 AND owner_id = $2 AND removed_at IS NULL
"""
_EMIT = """
    WITH new AS (
        INSERT INTO outbox_events (id, owner_role, owner_id, type, payload)
        SELECT u.id, $1, $2, u.type, u.payload::jsonb
        FROM unnest($3::uuid[], $4::text[], $5::text[]) AS u(id, type, payload)
        ORDER BY u.id
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    INSERT INTO webhook_deliveries (id, event_id, endpoint_id, status, next_attempt_at)
    SELECT gen_random_uuid(), new.id, $6, 'pending', now() FROM new
"""


class Outbox:
    """The outbox of one owner (a merchant or a partner), on a transaction's connection."""

    def __init__(self, conn: asyncpg.Connection, owner_role: str, owner_id: uuid.UUID) -> None:
        self.conn = conn
        self.owner_role = owner_role
        self.owner_id = owner_id
        self.endpoint_id: uuid.UUID | None = None
        self.subscribed: frozenset[str] = frozenset()

    @classmethod
    async def of(cls, conn: asyncpg.Connection, owner_role: str, owner_id: uuid.UUID) -> Outbox:
        outbox = cls(conn, owner_role, owner_id)
        row = await conn.fetchrow(_ENDPOINT, owner_role, owner_id)
        if row is not None:
            outbox.endpoint_id, outbox.subscribed = row["id"], frozenset(row["events"])
        return outbox

    def wants(self, type: EventType) -> bool:
        return type.value in self.subscribed

    async def emit(self, events: Sequence[Event]) -> None:
        """Write the subscribed ones of ``events`` and a delivery of each to the owner's endpoint."""
        wanted = [e for e in events if e.type.value in self.subscribed]
        if not wanted or self.endpoint_id is None:
            return
        await self.conn.execute(
            _EMIT,
            self.owner_role,
            self.owner_id,
            [e.id for e in wanted],
            [e.type.value for e in wanted],
            [msgspec.json.encode(e.data).decode() for e in wanted],
            self.endpoint_id,
        )
