"""The audit log's route: operators (admins and auditors) read it, newest first."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_log import service
from api.audit_log.schemas import AuditEntryOut
from api.guards import ANY_OPERATOR


class AuditLogController(Controller):
    security = [{"bearer": []}]
    path = "/v1/operator"
    tags = ["operator"]
    guards = [ANY_OPERATOR]

    @get("/audit-log", summary="Operator changes, newest first")
    async def audit_log(
        self,
        db_session: NamedDependency[AsyncSession],
        before_id: Annotated[int | None, QueryParameter(gt=0, required=False)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> list[AuditEntryOut]:
        return [AuditEntryOut.of(e) for e in await service.entries(db_session, before_id, limit)]
