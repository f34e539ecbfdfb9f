"""Idempotency keys: a write a client may retry is done once, and every retry gets the first answer.

A request with an ``Idempotency-Key`` runs under a transaction-scoped advisory lock on (caller,
operation, key). The first to hold it finds no record, does the write, and records its answer in the
same transaction; a concurrent retry waits for that transaction, then finds the record (or nothing,
if the first one failed and rolled back, and then does the write itself). A record answers only the
request it was made for: the same key with another request is ``409 idempotency_key_reused``.

Only successful answers are kept: a refused write changed nothing, so its retry is decided afresh.
Answers are kept sealed (they may hold a redemption code) for ``CARBON_IDEMPOTENCY_RETENTION_S``,
then deleted by housekeeping. Requests without a key are simply done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from litestar import Response
from sqlalchemy import Column, Index, Integer, LargeBinary, String, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from api.columns import timestamp
from api.keys import ServerSecret
from domain.errors import Conflict
from domain.identity import Principal

T = TypeVar("T")

#: Advisory-lock class of "an idempotency key is being used" (the two-int lock space).
_LOCK_CLASS = 0x69646B31  # "idk1"
REPLAYED_HEADER = "Idempotent-Replayed"


class IdempotencyRecord(SQLModel, table=True):
    """The answer to the first request made with a key."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    owner: str = Field(sa_column=Column(String(100), primary_key=True))
    operation: str = Field(sa_column=Column(String(64), primary_key=True))
    key: str = Field(sa_column=Column(String(200), primary_key=True))
    request_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status_code: int = Field(sa_column=Column(Integer, nullable=False))
    response_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = timestamp()


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used for a different request"


@dataclass(frozen=True)
class Idempotent:
    """One retryable write: who asks, for which operation, under which key, and what the request says."""

    owner: str
    operation: str
    key: str | None
    request_hash: bytes

    @classmethod
    def of(cls, principal: Principal, operation: str, key: str | None, *request: Any) -> Idempotent:
        """``request`` is everything that makes the request what it is: path parameters and body."""
        digest = hashlib.sha256(msgspec.json.encode([operation, *request])).digest()
        return cls(f"{principal.role.value}:{principal.subject_id}", operation, key, digest)


async def once(
    session: AsyncSession,
    secret: ServerSecret,
    call: Idempotent,
    write: Callable[[], Awaitable[T]],
    answer_type: type[T],
    status_code: int,
) -> Response[T]:
    """``write()``'s answer as a response, done once per key; a retry answers what the first request did."""
    if call.key is None:
        return Response(await write(), status_code=status_code)
    lock = int.from_bytes(hashlib.sha256(f"{call.owner}|{call.operation}|{call.key}".encode()).digest()[:4], "big")
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:class, :key)"), {"class": _LOCK_CLASS, "key": lock - 2**31}
    )
    earlier = await session.get(IdempotencyRecord, (call.owner, call.operation, call.key))
    if earlier is not None:
        if earlier.request_hash != call.request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was first used with another request; use a new key for a new request"
            )
        body = msgspec.json.decode(secret.unseal(earlier.response_sealed), type=answer_type)
        return Response(body, status_code=earlier.status_code, headers={REPLAYED_HEADER: "true"})
    answer = await write()
    session.add(
        IdempotencyRecord(
            owner=call.owner,
            operation=call.operation,
            key=call.key,
            request_hash=call.request_hash,
            status_code=status_code,
            response_sealed=secret.seal(msgspec.json.encode(answer).decode()),
        )
    )
    await session.flush()
    return Response(answer, status_code=status_code)
