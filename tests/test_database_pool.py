"""The service's SQLAlchemy pool: a fixed number of connections, reused under a burst."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from api.database import open_engine
from tests.helpers import app_settings


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
