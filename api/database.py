"""The database plumbing, in one place: where the database is, how to migrate it, the SQLAlchemy
engine and its sessions, and who owns a transaction.

``resolve_database`` turns settings into a running server: the one in ``DATABASE_URL``, or an
embedded PostgreSQL started in the data directory. The caller owns what it returns and stops it.

Transactions have one owner each. A request's transaction belongs to its scope
(``provide_db_session``): it commits when the handler returns and rolls back when it raises, before
the response is sent, so a commit failure becomes an error response rather than a false success.
A background job or a CLI command owns its own (``async with sessionmaker() as s, s.begin()``).
Services only flush. ``raw_connection`` lets a service run set-based SQL inside the request's
transaction; ``lookup_session`` reads what must be known before calling a partner, with no
connection held during the call.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from api.settings import Settings
from domain.errors import CarbonRewardsError, ServiceUnavailable
from ledger import current_outage
from integrations.embedded_postgres import (
    EMBEDDED_DATABASE,
    EmbeddedPostgres,
    ensure_database,
    with_database,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached (stopped, restarting, unreachable): retry shortly."""

    code = "database_unavailable"
    title = "The database is unavailable; retry shortly"


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


class _TimedPool(AsyncAdaptedQueuePool):
    """The requests' pool, telling ``observe_wait`` how long each checkout waited for a connection."""

    observe_wait: Callable[[float], None] | None = None
    #: Log under SQLAlchemy's own pool logger (quiet below WARNING), not under this module.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def _do_get(self):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            if self.observe_wait is not None:
                self.observe_wait(time.perf_counter() - started)

    def recreate(self):  # type: ignore[no-untyped-def]
        pool = super().recreate()
        pool.observe_wait = self.observe_wait
        return pool


def open_engine(
    settings: Settings, database_url: str, observe_wait: Callable[[float], None] | None = None
) -> AsyncEngine:
    """The SQLAlchemy engine of the non-ledger tables, assuming the service role on every connection.

    The pool has a fixed size: a burst beyond it waits for a connection instead of opening "overflow"
    connections that are closed after one use. Each new connection costs PostgreSQL a backend start
    and asyncpg's type introspection (~60 ms of server time here), so under load the overflow
    connections had cost more than the requests they served.
    """
    engine = create_async_engine(
        sqlalchemy_url(database_url),
        poolclass=_TimedPool,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout_s,
        connect_args={"server_settings": {"role": settings.db_app_role, "jit": "off"}},
    )
    engine.pool.observe_wait = observe_wait  # type: ignore[attr-defined]
    return engine


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    """The request scope's session, which owns the request's transaction.

    Errors marked ``keeps_writes`` (a wrong one-time code, a replayed refresh token) commit what the
    request recorded before the error response is sent.
    """
    async with state.sessionmaker() as session:
        try:
            yield session
        except CarbonRewardsError as exc:
            if exc.keeps_writes:
                await session.commit()
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
            (getattr(state, "outage", None) or current_outage()).recovered()


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session, inside the session's transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN only with the first statement, so one is sent through
    the session when none has been yet; otherwise statements on the raw connection would each commit
    on their own, outside the transaction that the request commits or rolls back.
    """
    connection = await session.connection()
    driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection  # type: ignore[assignment]
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver


def lookup_session(session: AsyncSession) -> AsyncSession:
    """A short read-only session beside the request's, for what must be read before calling a partner.

    The request's session keeps its connection until the request ends; a partner call made while it
    holds one would let requests waiting on a slow partner take every connection of the (fixed)
    pool from all other requests. Closing this session gives its connection back before the call.
    """
    return AsyncSession(session.bind, expire_on_commit=False)


async def engine_revision(engine: AsyncEngine) -> str | None:
    """The schema revision, read through the engine's pool: the readiness probe of the pool requests use."""
    async with engine.connect() as connection:
        driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection  # type: ignore[assignment]
        return await current_revision(driver)


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


#: The file, in the data directory, that holds the password of the service's login role (embedded mode).
LOGIN_PASSWORD_FILE = "db-service-password"


async def service_login_url(admin_url: str, settings: Settings) -> str:
    """The URL the service connects with in embedded mode: its login role (``<role>_login``, created by the
    migrations, without superuser rights), whose password is kept in the data directory (0600) and set
    here by the superuser. ``RESET ROLE`` on such a connection cannot reach the superuser's rights."""
    if not settings.db_app_role.replace("_", "").isalnum():
        raise ValueError(f"unsafe role name {settings.db_app_role!r}")
    login = f"{settings.db_app_role}_login"
    path = settings.data_dir / LOGIN_PASSWORD_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
    password = path.read_text(encoding="utf-8").strip()
    conn = await asyncpg.connect(admin_url)
    try:
        # ALTER ROLE takes no parameters; the password is URL-safe base64, and the role a checked name.
        await conn.execute(f"ALTER ROLE {login} PASSWORD '{password}'")
    finally:
        await conn.close()
    parts = urlsplit(admin_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(login)}:{quote(password)}@{host}"))


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
