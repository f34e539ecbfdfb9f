"""The database down: every request answers 503 with Retry-After (never a 500 with a traceback), the
log says so once per outage (requests and background loops alike), and says when it is back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.database import migrate
from integrations.embedded_postgres import EmbeddedPostgres, ensure_database, with_database
from tests.helpers import APP_ROLE, app_settings, kept_logs


@pytest.fixture
def own_server(tmp_path: Path) -> Any:
    """A PostgreSQL of this test's own, which it may stop and start again (same socket, same data)."""
    embedded = EmbeddedPostgres(tmp_path / "data")
    url = embedded.start()
    try:
        yield embedded, url
    finally:
        embedded.stop()


async def test_requests_and_loops_say_503_and_the_log_says_it_once_per_outage(own_server: Any) -> None:
    embedded, server_url = own_server
    await ensure_database(server_url, "outage")
    url = with_database(server_url, "outage")
    await migrate(url, APP_ROLE)
    app = create_app(app_settings(seal_poll_interval_s=0.05, housekeeping_interval_s=0.05), url)
    login = {"username": "nobody-here", "password": "not the password at all"}
    async with AsyncTestClient(app=app) as client:
        assert (await client.post("/v1/auth/operator/login", json=login)).status_code == 401
        with kept_logs() as caplog:
            await asyncio.to_thread(embedded.stop)
            answers = [await client.post("/v1/auth/operator/login", json=login) for _ in range(5)]
            await asyncio.sleep(0.5)  # the sealer and housekeeping fail a few rounds meanwhile
            for answer in answers:
                assert answer.status_code == 503 and answer.json()["code"] == "database_unavailable", answer.text
                assert answer.headers["Retry-After"] == "5"
                assert answer.headers["content-type"].startswith("application/problem+json")
            down = [r for r in caplog.records if "database unreachable" in r.getMessage()]
            assert len(down) == 1, [(r.name, r.getMessage()[:100]) for r in caplog.records]
            assert not any(r.exc_info for r in caplog.records), [
                (r.name, r.getMessage()[:150]) for r in caplog.records if r.exc_info
            ]
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r not in down]

            await asyncio.to_thread(embedded.start)
            for _ in range(100):  # the pool replaces its dead connections as they are tried
                if (await client.post("/v1/auth/operator/login", json=login)).status_code == 401:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the service did not recover when the database came back")
            assert any("database reachable again" in r.getMessage() for r in caplog.records)
