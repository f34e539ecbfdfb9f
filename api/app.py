"""The Litestar application factory: settings in, app out, with no import-time state.

The app's lifespan opens the ledger (its connection pool, group-commit writers and expiry task) on
the database URL it is given, starts the sealer that appends committed transfers to the Merkle log
and signs checkpoints, and stops both on shutdown.
"""

from __future__ import annotations

import base64
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
from api.ledger_log import LedgerLogController
from api.settings import Settings
from ledger.checkpoint import Signer
from ledger.sealer import Sealer
from ledger.service import Ledger
from ledger.transparency import LogReader

API_VERSION = "0.1.0"


def checkpoint_signer(settings: Settings) -> Signer:
    """The configured checkpoint key, or the one generated once into the data directory."""
    if settings.ledger_signing_key is not None:
        return Signer.from_seed(base64.b64decode(settings.ledger_signing_key.get_secret_value()))
    return Signer.load_or_create(settings.data_dir / "ledger-signing-key")


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
        sealer = Sealer(
            ledger.pool,
            checkpoint_signer(settings),
            settings.ledger_log_origin,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_interval_s=settings.checkpoint_interval_s,
            poll_interval_s=settings.seal_poll_interval_s,
        )
        app.state.ledger = ledger
        app.state.log_reader = LogReader(ledger.pool, settings.ledger_log_origin)
        sealer.start()
        try:
            yield
        finally:
            await sealer.stop()
            await ledger.close()

    def provide_ledger(state: State) -> Ledger:
        return state.ledger  # type: ignore[no-any-return]

    def provide_log_reader(state: State) -> LogReader:
        return state.log_reader  # type: ignore[no-any-return]

    def provide_settings() -> Settings:
        return settings

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Litestar(
        route_handlers=[HealthController, LedgerLogController],
        lifespan=[lifespan],
        dependencies={
            "ledger": Provide(provide_ledger, sync_to_thread=False),
            "log_reader": Provide(provide_log_reader, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="carbon-rewards",
            version=API_VERSION,
            description="Rewards residents' verified low-carbon actions with points on a tamper-evident ledger.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
    )
