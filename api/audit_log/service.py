"""Recording operators' writes, and reading them back, in the caller's transaction (flush only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_log.models import OperatorAuditEntry
from api.request_meta import RequestMeta


@dataclass(frozen=True)
class Actor:
    """Who an entry names: an operator (``operator_id`` and username), or a tool such as ``cli``."""

    operator_id: UUID | None
    name: str


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any],
    meta: RequestMeta,
) -> None:
    """Append one entry; it commits or rolls back with the write it describes."""
    session.add(
        OperatorAuditEntry(
            operator_id=actor.operator_id,
            operator_username=actor.name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details,
            client_ip=meta.client_ip,
        )
    )
    await session.flush()


async def recorded_at(session: AsyncSession, action: str, details: Mapping[str, str]) -> datetime | None:
    """When an entry of ``action`` whose details hold all of ``details`` was recorded, if one was.

    Lets a write with an idempotency key find the entry of its first execution.
    """
    query = select(OperatorAuditEntry.at).where(OperatorAuditEntry.action == action)
    for key, value in details.items():
        query = query.where(OperatorAuditEntry.details[key].astext == value)
    return (await session.execute(query.limit(1))).scalar_one_or_none()


async def entries(session: AsyncSession, before_id: int | None, limit: int) -> Sequence[OperatorAuditEntry]:
    """Newest entries first; page with ``before_id`` (the smallest id of the previous page)."""
    query = select(OperatorAuditEntry).order_by(OperatorAuditEntry.id.desc()).limit(limit)  # type: ignore[union-attr]
    if before_id is not None:
        query = query.where(OperatorAuditEntry.id < before_id)  # type: ignore[operator]
    return (await session.execute(query)).scalars().all()
