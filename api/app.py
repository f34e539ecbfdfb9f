"""The Litestar application factory: settings in, app out, with no import-time state.

The app's lifespan opens the ledger (its connection pool, group-commit writers and expiry task) on
the database URL it is given and closes it on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from api.errors import EXCEPTION_HANDLERS
from api.health import HealthController
from api.settings import Settings
from ledger.service import Ledger

API_VERSION = "0.1.0"


def create_app(settings: Settings, database_url: str) -> Litestar:
    """Build the app for an already migrated database at ``database_url``."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        ledger = await Ledger.open(
            database_url,
            role=settings.db_app_role,
            pool_size=settings.db_pool_size,
            max_batch=settings.ledger_max_batch,
            writers=settings.ledger_writers,
            expiry_interval_s=settings.pending_expiry_interval_s,
        )
        app.state.ledger = ledger
        try:
            yield
        finally:
            await ledger.close()

    def provide_ledger(state: State) -> Ledger:
        return state.ledger  # type: ignore[no-any-return]

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Litestar(
        route_handlers=[HealthController],
        lifespan=[lifespan],
        dependencies={"ledger": Provide(provide_ledger, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="carbon-rewards",
            version=API_VERSION,
            description="Rewards residents' verified low-carbon actions with points on a tamper-evident ledger.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
    )
