"""Housekeeping deletes short-lived state past its retention, as the service role, and nothing else."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import async_sessionmaker

from api.app import create_app
from api.database import open_engine
from api.housekeeping import BATCH_ROWS, Retention, sweep
from tests.helpers import app_settings, scratch_database

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def database(server_url: str) -> AsyncIterator[str]:
    """A database of this module's own: a sweep deletes expired rows of every test sharing it."""
    async with scratch_database(server_url) as url:
        yield url


async def _seed(conn: asyncpg.Connection, at: datetime, tag: str) -> None:
    """One row of every pruned table, each made useless (expired, out of window) at ``at``."""
    partner = uuid.uuid4()
    await conn.execute(
        "INSERT INTO rate_limit_windows (bucket, window_start, hits) VALUES ($1, $2, 1)", f"test:{tag}", at
    )
    await conn.execute(
        "INSERT INTO otp_challenges (id, phone_hash, code_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $4)",
        uuid.uuid4(),
        tag.encode(),
        b"code",
        at,
    )
    await conn.execute(
        "INSERT INTO partner_request_signatures (partner_id, digest, seen_at) VALUES ($1, $2, $3)", partner, tag, at
    )
    await conn.execute(
        "INSERT INTO partner_hourly_volume (partner_id, hour, slot, records) VALUES ($1, $2, 0, 1)", partner, at
    )
    await conn.execute(
        "INSERT INTO idempotency_keys (owner, operation, key, request_hash, status_code, response_sealed, created_at) "
        "VALUES ('test', 'test', $1, '', 201, '', $2)",
        tag,
        at,
    )


async def _tags_left(conn: asyncpg.Connection) -> dict[str, set[str]]:
    buckets = await conn.fetch("SELECT bucket FROM rate_limit_windows")
    return {
        "rate_limit_windows": {r[0].removeprefix("test:") for r in buckets},
        "otp_challenges": {bytes(r[0]).decode() for r in await conn.fetch("SELECT phone_hash FROM otp_challenges")},
        "partner_request_signatures": {r[0] for r in await conn.fetch("SELECT digest FROM partner_request_signatures")},
        "idempotency_keys": {r[0] for r in await conn.fetch("SELECT key FROM idempotency_keys")},
    }


async def test_a_sweep_deletes_exactly_the_rows_past_their_retention(database: str) -> None:
    settings = app_settings()
    retention = Retention.from_settings(settings)
    conn = await asyncpg.connect(database)
    engine = open_engine(settings, database)  # the service role: the sweep needs no more than it has
    try:
        longest = max(
            retention.rate_windows,
            retention.otp_challenges,
            retention.request_signatures,
            retention.hourly_volumes,
            retention.idempotency_keys,
        )
        await _seed(conn, NOW - longest - timedelta(seconds=1), "old")
        await _seed(conn, NOW - timedelta(seconds=1), "fresh")
        # Just inside each retention: kept (the cut-off is strict).
        await conn.execute(
            "INSERT INTO rate_limit_windows (bucket, window_start, hits) VALUES ('test:edge', $1, 1)",
            NOW - retention.rate_windows,
        )

        deleted = await sweep(async_sessionmaker(engine), retention, NOW)

        assert deleted == {
            "rate_limit_windows": 1,
            "otp_challenges": 1,
            "partner_request_signatures": 1,
            "partner_hourly_volume": 1,
            "idempotency_keys": 1,
        }
        assert await _tags_left(conn) == {
            "rate_limit_windows": {"fresh", "edge"},
            "otp_challenges": {"fresh"},
            "partner_request_signatures": {"fresh"},
            "idempotency_keys": {"fresh"},
        }
        assert await conn.fetchval("SELECT count(*) FROM partner_hourly_volume") == 1
        # A second sweep finds nothing more to do.
        assert set((await sweep(async_sessionmaker(engine), retention, NOW)).values()) == {0}
    finally:
        await engine.dispose()
        await conn.close()


async def test_a_sweep_works_through_more_rows_than_one_batch(database: str) -> None:
    settings = app_settings()
    conn = await asyncpg.connect(database)
    engine = open_engine(settings, database)
    try:
        await conn.execute(
            "INSERT INTO rate_limit_windows (bucket, window_start, hits) "
            "SELECT 'bulk:' || n, $1, 1 FROM generate_series(1, $2) AS n",
            NOW - timedelta(days=30),
            BATCH_ROWS + 7,
        )
        deleted = await sweep(async_sessionmaker(engine), Retention.from_settings(settings), NOW)
        assert deleted["rate_limit_windows"] >= BATCH_ROWS + 7
        assert await conn.fetchval("SELECT count(*) FROM rate_limit_windows WHERE bucket LIKE 'bulk:%'") == 0
    finally:
        await engine.dispose()
        await conn.close()


async def test_the_service_sweeps_in_the_background(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "INSERT INTO rate_limit_windows (bucket, window_start, hits) VALUES ('test:background', $1, 1)",
            datetime.now(UTC) - timedelta(days=2),
        )
        app = create_app(app_settings(housekeeping_interval_s=0.2), database)
        async with AsyncTestClient(app=app):
            for _ in range(300):
                if not await conn.fetchval("SELECT count(*) FROM rate_limit_windows WHERE bucket = 'test:background'"):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the service did not delete an expired rate window within 30 s")
    finally:
        await conn.close()
