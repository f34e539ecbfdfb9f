"""Shared fixtures: one real PostgreSQL per test run, a fresh database migrated by Alembic.

With ``DATABASE_URL`` set, that server is used (a new database is created on it and dropped after).
Otherwise each test process (each xdist worker) starts an embedded PostgreSQL of its own in a
temporary directory and deletes it at the end, whether the tests pass or fail. Workers do not share a
server: the Merkle log's seal horizon is the server-wide oldest running transaction, so one worker's
open transactions would hold back another's sealing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    # Imported inside the fixtures instead: the xdist controller loads this file too, and never needs
    # the service, which takes tens of seconds to import on a small machine.
    import asyncpg
    from litestar.testing import AsyncTestClient

    from integrations.embedded_postgres import EmbeddedPostgres
    from integrations.simulators.city_idp import CityIdpSimulator
    from integrations.simulators.sms_gateway import SmsGatewaySimulator
    from ledger.service import Ledger

#: Files that each take minutes (the service run and restarted as real processes). They are handed
#: out first (with ``--no-loadscope-reorder``), so they run beside the rest instead of alone at the end.
LONG_FILES = ("test_cli.py", "test_simulate_cli.py")


def pytest_configure(config: pytest.Config) -> None:
    """Let Python cache bytecode for this run, even where the environment turns that off.

    The suite starts Python many times: each xdist worker, and the service and simulators as real
    processes. With ``PYTHONDONTWRITEBYTECODE`` set (some sandboxes set it), each would compile its
    ~1,100 imported modules again. The controller runs this before it starts the workers, which
    inherit its environment, as do the processes they start.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONG_FILES)  # stable: the rest keep their order


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for ``-n auto``: one per core, at most four, since each starts its own PostgreSQL.

    Test files stay whole on one worker (``--dist=loadfile``), so module fixtures are built once.
    ``-n 0`` runs everything in this process.
    """
    return max(1, min(4, os.cpu_count() or 1))


# Wall-clock deadlines only measure this machine's load (CPU steal here reaches 60 %), not the code.
settings.register_profile("carbon", deadline=None)
settings.load_profile("carbon")


#: A throw-away cluster need not survive a power cut; with these, commits stop waiting on the disk
#: (a few hundred fsyncs per second on a small machine). Benchmarks and the service keep the defaults.
THROWAWAY_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


async def _tune_for_tests(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for name, value in THROWAWAY_SETTINGS.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = {value}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def start_throwaway_server(base: Path) -> tuple[EmbeddedPostgres, str]:
    """An embedded PostgreSQL in ``base`` that deletes its cluster when stopped; returns it and its URL."""
    from integrations.embedded_postgres import EmbeddedPostgres

    embedded = EmbeddedPostgres(base / "data", ephemeral=True)
    url = embedded.start()
    asyncio.run(_tune_for_tests(url))
    return embedded, url


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Superuser URL of the PostgreSQL server the tests use."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    # A run stopped by SIGTERM (a CI timeout, `timeout`) unwinds like Ctrl-C, so the server still stops.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    embedded, url = start_throwaway_server(Path(tmp_path_factory.mktemp("pg")))
    try:
        yield url
    finally:
        embedded.stop()
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """URL (as the migrating owner) of the database this run's tests share, migrated to head."""
    from tests.helpers import scratch_database

    async with scratch_database(server_url) as url:
        yield url


@pytest.fixture
async def fresh_database_url(server_url: str) -> AsyncIterator[str]:
    """A database for one test that damages it or needs it empty."""
    from tests.helpers import scratch_database

    async with scratch_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    """The ledger as the service runs it: restricted role, group commit, no background expiry."""
    from tests.helpers import open_ledger

    async with open_ledger(database_url) as ledger:
        yield ledger


@pytest.fixture
async def owner_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the database owner (superuser for the embedded server)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def app_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the service role."""
    import asyncpg

    from tests.helpers import APP_ROLE

    conn = await asyncpg.connect(database_url, server_settings={"role": APP_ROLE})
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sms_gateway() -> Iterator[SmsGatewaySimulator]:
    """The SMS gateway simulator, a real HTTP server on 127.0.0.1."""
    from integrations.simulators.sms_gateway import SmsGatewaySimulator

    with SmsGatewaySimulator() as gateway:
        yield gateway  # type: ignore[misc]


@pytest.fixture(scope="session")
def city_idp() -> Iterator[CityIdpSimulator]:
    """The city identity provider simulator, a real HTTP server on 127.0.0.1."""
    from integrations.simulators.city_idp import CityIdpSimulator

    with CityIdpSimulator() as idp:
        yield idp  # type: ignore[misc]


@pytest.fixture(scope="session")
async def api(
    database_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator
) -> AsyncIterator[AsyncTestClient]:
    """The app wired to the simulators, shared by the run's tests (each test uses its own phones and clients)."""
    from litestar.testing import AsyncTestClient

    from api.app import create_app
    from tests.helpers import identity_settings

    app = create_app(identity_settings(sms_gateway, city_idp), database_url)
    async with AsyncTestClient(app=app) as client:
        yield client
