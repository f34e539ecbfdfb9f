"""Response bodies of the audit log's routes."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from msgspec import Struct

from api.audit_log.models import OperatorAuditEntry


class AuditEntryOut(Struct):
    id: int
    at: datetime
    operator_id: UUID | None
    operator_username: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, object]
    client_ip: str | None

    @classmethod
    def of(cls, entry: OperatorAuditEntry) -> AuditEntryOut:
        return cls(
            id=entry.id or 0,
            at=entry.at,
            operator_id=entry.operator_id,
            operator_username=entry.operator_username,
            action=entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            details=entry.details,
            client_ip=entry.client_ip,
        )
