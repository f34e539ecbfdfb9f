"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

import asyncpg
import sqlalchemy.exc
from litestar import Controller, get
from litestar.di import NamedDependency
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncEngine

from api.database import engine_revision, head_revision
from api.settings import Settings
from domain.errors import ServiceUnavailable
from ledger import Ledger

#: What a probe of a pool may fail with: no route, a refused or dropped connection, a timeout, an
#: error of the server, or the pool's own timeout.
_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlalchemy.exc.SQLAlchemyError)


class LiveStatus(Struct):
    status: str


class ReadyStatus(Struct):
    status: str
    database: str
    schema_revision: str | None
    expected_revision: str | None
    #: Each connection pool of this process and its state: ``requests`` (the pool request handlers
    #: wait on) and ``ledger`` (group commit, the sealer, the Merkle log's reads).
    pools: dict[str, str]


class DatabaseNotReady(ServiceUnavailable):
    code = "database_not_ready"
    title = "The database is not ready"


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="The process is up")
    async def live(self) -> LiveStatus:
        return LiveStatus(status="ok")

    @get(
        "/ready",
        summary="The database is reachable from every connection pool and migrated to the latest revision",
    )
    async def ready(
        self, engine: NamedDependency[AsyncEngine], ledger: NamedDependency[Ledger], settings: NamedDependency[Settings]
    ) -> ReadyStatus:
        expected = head_revision()
        try:
            async with asyncio.timeout(settings.ready_timeout_s):
                revision = await engine_revision(engine)
        except _UNREACHABLE as exc:
            raise DatabaseNotReady(f"database unreachable from the requests' pool: {type(exc).__name__}") from exc
        try:
            async with asyncio.timeout(settings.ready_timeout_s):
                await ledger.ping()
        except _UNREACHABLE as exc:
            raise DatabaseNotReady(f"database unreachable from the ledger's pool: {type(exc).__name__}") from exc
        if revision != expected:
            raise DatabaseNotReady(
                f"schema at revision {revision}, expected {expected}",
                schema_revision=revision,
                expected_revision=expected,
            )
        return ReadyStatus(
            status="ok",
            database="reachable",
            schema_revision=revision,
            expected_revision=expected,
            pools={"requests": "ok", "ledger": "ok"},
        )
