"""Where the database is, how to migrate it, and whether it is ready.

``resolve_database`` turns settings into a running server: the one in ``DATABASE_URL``, or an
embedded PostgreSQL started in the data directory. The caller owns what it returns and stops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.settings import Settings
from domain.errors import ServiceUnavailable
from integrations.embedded_postgres import (
    EMBEDDED_DATABASE,
    EmbeddedPostgres,
    ensure_database,
    with_database,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DatabaseBusy(ServiceUnavailable):
    """Every pooled connection stayed in use for ``CARBON_DB_POOL_TIMEOUT_S``: a burst beyond capacity."""

    code = "database_busy"
    title = "Every database connection is in use; retry shortly"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` as SQLAlchemy's asyncpg dialect spells it."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must start with postgresql://")


def open_engine(settings: Settings, database_url: str) -> AsyncEngine:
    """The SQLAlchemy engine of the non-ledger tables, assuming the service role on every connection.

    The pool has a fixed size: a burst beyond it waits for a connection instead of opening "overflow"
    connections that are closed after one use. Each new connection costs PostgreSQL a backend start
    and asyncpg's type introspection (~60 ms of server time here), so under load the overflow
    connections had cost more than the requests they served.
    """
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout_s,
        connect_args={"server_settings": {"role": settings.db_app_role, "jit": "off"}},
    )


def alembic_config(url: str, app_role: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    config.attributes["app_role"] = app_role
    return config


async def migrate(url: str, app_role: str, revision: str = "head") -> None:
    """Upgrade the schema (Alembic runs its own event loop, hence the thread)."""
    await asyncio.to_thread(command.upgrade, alembic_config(url, app_role), revision)


async def migrate_if_behind(url: str, app_role: str) -> None:
    """Migrate unless the schema is at head already: checking costs one query, Alembic seconds of start-up."""
    conn = await asyncpg.connect(url)
    try:
        at_head = await current_revision(conn) == head_revision()
    finally:
        await conn.close()
    if not at_head:
        await migrate(url, app_role)


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


async def current_revision(conn: asyncpg.Connection) -> str | None:
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.exceptions.UndefinedTableError:
        return None


async def start_embedded_database(embedded: EmbeddedPostgres) -> str:
    """Start ``embedded`` and create the service's database on it if needed; returns that database's URL.

    The caller stops the server, also when this fails.
    """
    admin_url = await asyncio.to_thread(embedded.start)
    await ensure_database(admin_url, EMBEDDED_DATABASE)
    return with_database(admin_url, EMBEDDED_DATABASE)


@asynccontextmanager
async def resolve_database(settings: Settings) -> AsyncIterator[str]:
    """Yield the URL of the database to use; with no ``DATABASE_URL``, run an embedded server meanwhile."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir / "pg")
    try:
        yield await start_embedded_database(embedded)
    finally:
        await asyncio.to_thread(embedded.stop)
