"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

import asyncpg
from litestar import Controller, get
from litestar.di import NamedDependency
from msgspec import Struct

from api.database import current_revision, head_revision
from api.settings import Settings
from domain.errors import ServiceUnavailable
from ledger import Ledger


class LiveStatus(Struct):
    status: str


class ReadyStatus(Struct):
    status: str
    database: str
    schema_revision: str | None
    expected_revision: str | None


class DatabaseNotReady(ServiceUnavailable):
    code = "database_not_ready"
    title = "The database is not ready"


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="The process is up")
    async def live(self) -> LiveStatus:
        return LiveStatus(status="ok")

    @get("/ready", summary="The database is reachable and migrated to the latest revision")
    async def ready(self, ledger: NamedDependency[Ledger], settings: NamedDependency[Settings]) -> ReadyStatus:
        expected = head_revision()
        try:
            async with asyncio.timeout(settings.ready_timeout_s):
                async with ledger.pool.acquire() as conn:
                    revision = await current_revision(conn)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseNotReady(f"database unreachable: {type(exc).__name__}") from exc
        if revision != expected:
            raise DatabaseNotReady(
                f"schema at revision {revision}, expected {expected}",
                schema_revision=revision,
                expected_revision=expected,
            )
        return ReadyStatus(status="ok", database="reachable", schema_revision=revision, expected_revision=expected)
