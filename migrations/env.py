"""Alembic environment: async engine, metadata of every table model, and the service role's name.

The URL comes from the configuration built in ``api.database.alembic_config`` or, for the plain
``alembic`` command, from ``DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import api.actions.models  # noqa: F401 - registers the actions tables on SQLModel.metadata
import api.audit_log.models  # noqa: F401 - registers the audit log's table on SQLModel.metadata
import api.identity.models  # noqa: F401 - registers the identity tables on SQLModel.metadata
import api.exchange.models  # noqa: F401 - registers exchange batches, their items and adjustments on SQLModel.metadata
import api.idempotency  # noqa: F401 - registers the idempotency keys on SQLModel.metadata
import api.rate_limits  # noqa: F401 - registers the rate-limit windows on SQLModel.metadata
import api.oversight.models  # noqa: F401 - registers operators' jobs on SQLModel.metadata
import api.redemptions.models  # noqa: F401 - registers offers and redemptions on SQLModel.metadata
import api.webhooks.models  # noqa: F401 - registers webhook endpoints, the outbox and deliveries on SQLModel.metadata
import ledger.models  # noqa: F401 - registers the ledger tables on SQLModel.metadata

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("no database URL: set DATABASE_URL or use `carbon-rewards migrate`")
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
