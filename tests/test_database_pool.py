"""The service's SQLAlchemy pool: a fixed number of connections, and a clear answer when all are busy."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import text

from api.app import create_app
from api.database import open_engine
from tests.helpers import app_settings, served


async def test_a_burst_waits_for_pooled_connections_instead_of_opening_more(database_url: str) -> None:
    """Twelve concurrent sessions on a pool of two are served by the same two server processes: an
    overflow connection would be opened (a backend start and asyncpg's type introspection) for one use."""
    engine = open_engine(app_settings(db_pool_size=2), database_url)
    try:

        async def backend() -> int:
            async with engine.connect() as conn:
                pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                await asyncio.sleep(0.05)  # hold it, so that the others want connections meanwhile
                return int(pid)

        pids = await asyncio.gather(*(backend() for _ in range(12)))
    finally:
        await engine.dispose()
    assert len(set(pids)) == 2


async def test_a_request_that_finds_every_connection_in_use_is_told_to_retry(database_url: str) -> None:
    """Past the pool's wait, a request answers 503 ``database_busy`` with Retry-After, not a 500."""
    app = create_app(app_settings(db_pool_size=1, db_pool_timeout_s=0.3), database_url)
    login = {"username": "nobody-here", "password": "not the password at all"}
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        async with app.state.sessionmaker() as holder:
            await holder.execute(text("SELECT 1"))  # holds the only connection until the block ends
            busy = await client.post("/v1/auth/operator/login", json=login)
        assert busy.status_code == 503, busy.text
        assert busy.headers["content-type"].startswith("application/problem+json")
        assert busy.json()["code"] == "database_busy"
        assert busy.headers["retry-after"] == "1"
        assert (await client.post("/v1/auth/operator/login", json=login)).status_code == 401


@pytest.mark.parametrize("pool", ["requests", "ledger"])
async def test_not_ready_while_a_pool_has_no_connection_to_give(database_url: str, pool: str) -> None:
    """Readiness probes the pool requests wait on as well as the ledger's: either one exhausted is a 503
    naming it. (With only the ledger's pool probed, a held requests' pool still answered ready.)"""
    app = create_app(app_settings(db_pool_size=1, ready_timeout_s=0.5, seal_poll_interval_s=3600), database_url)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        if pool == "requests":
            async with app.state.sessionmaker() as holder:
                await holder.execute(text("SELECT 1"))  # holds the only connection until the block ends
                response = await client.get("/health/ready")
        else:
            async with app.state.ledger.pool.acquire():
                response = await client.get("/health/ready")
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_not_ready"
    assert f"unreachable from the {pool}" in response.json()["detail"]
