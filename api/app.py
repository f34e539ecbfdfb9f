"""The Litestar application factory: settings in, app out, with no import-time state.

The app's lifespan opens the ledger (its connection pool, group-commit writers and expiry task) on
the database URL it is given, starts the sealer that appends committed transfers to the Merkle log
and signs checkpoints, opens the SQLAlchemy engine (the pool requests use) and the HTTP clients,
builds each feature's runtime (identity publishes this process's token signing key), starts the
background tasks (the sealer, housekeeping of expired short-lived state, the expiry of held
redemptions, the webhook dispatcher, the exchange submitter when an exchange is configured) and
the operators' job runner, and stops and closes everything on shutdown.
"""

from __future__ import annotations

from importlib.metadata import version

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import httpx
from litestar.config.cors import CORSConfig
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path
from litestar.openapi.spec import Components, SecurityScheme
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from api import actions, audit_log, exchange, identity, oversight, redemptions, webhooks
from api.client_address import parse_networks
from api.database import open_engine, provide_db_session
from api.observability import RequestIds, configure_logging
from api.errors import EXCEPTION_HANDLERS
from api.guards import provide_principal
from api.health import HealthController
from api.housekeeping import Retention, housekeeping_task
from api.keys import checkpoint_signer
from api.transparency import LedgerLogController
from api.methodologies import MethodologyController
from api.metrics import Metrics, MetricsController
from api.openapi_problems import document_problems
from api.request_meta import request_meta_provider
from api.settings import Settings
from domain.methodologies import MethodologyRegistry
from integrations.witness import HttpWitness
from ledger import (
    WITNESS_FILE,
    CheckpointWitness,
    DatabaseOutage,
    Ledger,
    LogReader,
    PeriodicTask,
    Sealer,
    use_outage,
)

#: Where the API docs page's scripts and styles are served from (the swagger-ui-bundle package).
DOCS_ASSETS = "/schema/assets"
#: How often a worker records its pools' connections when workers share metrics.
POOL_SAMPLE_INTERVAL_S = 5.0
#: One version number for the project, kept in pyproject.toml: the installed package's.
API_VERSION = version("carbon-rewards")

log = logging.getLogger(__name__)


class Background(Protocol):
    """A loop the app runs for its lifetime."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


def app_from_environment() -> Litestar:
    """The app of one worker of ``carbon-rewards serve --workers N``.

    The serving process has prepared the database and the keys and put everything a worker needs
    (``DATABASE_URL`` included) in the environment the workers inherit.
    """
    settings = Settings()
    if not settings.database_url:
        raise RuntimeError("a worker needs DATABASE_URL; start workers with `carbon-rewards serve --workers N`")
    return create_app(settings, settings.database_url)


def create_app(settings: Settings, database_url: str) -> Litestar:
    """Build the app for an already migrated database at ``database_url``."""
    methodologies = MethodologyRegistry.load()
    metrics = Metrics(settings.metrics_multiprocess_dir)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # This service's database outages, logged once each; the tasks started from here inherit it.
        app.state.outage = DatabaseOutage()
        use_outage(app.state.outage)
        ledger = await Ledger.open(
            database_url,
            role=settings.db_app_role,
            pool_size=settings.db_pool_size,
            max_batch=settings.ledger_max_batch,
            writers=settings.ledger_writers,
            expiry_interval_s=settings.pending_expiry_interval_s,
            observe_group=metrics.group_committed,
        )
        http = httpx.AsyncClient(timeout=settings.http_timeout_s, follow_redirects=False)
        token = settings.ledger_witness_token
        witness_token = token.get_secret_value() if token is not None else None
        sealer = Sealer(
            ledger.pool,
            checkpoint_signer(settings),
            settings.ledger_log_origin,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_interval_s=settings.checkpoint_interval_s,
            poll_interval_s=settings.seal_poll_interval_s,
            witnesses=[
                CheckpointWitness(settings.data_dir / WITNESS_FILE, settings.ledger_log_origin),
                *(
                    [HttpWitness(settings.ledger_witness_url, settings.ledger_log_origin, http, witness_token)]
                    if settings.ledger_witness_url
                    else []
                ),
            ],
        )
        app.state.ledger = ledger
        app.state.log_reader = LogReader(ledger.pool, settings.ledger_log_origin, long_reads=settings.long_reads)
        engine = app.state.engine = open_engine(settings, database_url, metrics.pool_waited)
        webhook_http = httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False)
        exchange_http = httpx.AsyncClient(timeout=settings.exchange_timeout_s, follow_redirects=False)
        try:
            app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
            app.state.identity = await identity.open_identity(settings, app.state.sessionmaker, http)
            app.state.tokens = app.state.identity.tokens
            secret = app.state.identity.secret
            app.state.actions = actions.open_actions(
                settings,
                methodologies,
                secret,
                app.state.sessionmaker,
                metrics.partner_called,
                metrics.actions_decided,
                metrics.ingest_group_decided,
            )
            app.state.redemptions = redemptions.open_redemptions(settings, secret)
            app.state.webhooks = webhooks.open_webhooks(settings, secret)
            app.state.exchange = exchange.open_exchange(secret)
            jobs_runner = app.state.jobs_runner = oversight.JobRunner(app.state.sessionmaker, app.state.log_reader)
            submitter = exchange.open_submitter(settings, app.state.sessionmaker, exchange_http)
            background: list[Background] = [
                sealer,
                housekeeping_task(
                    app.state.sessionmaker, Retention.from_settings(settings), settings.housekeeping_interval_s
                ),
                redemptions.expiry_task(app.state.sessionmaker, settings.pending_expiry_interval_s),
                webhooks.open_dispatcher(settings, app.state.sessionmaker, secret, webhook_http),
                *([submitter] if submitter else []),
                *([_pool_sampler(metrics, engine, ledger)] if settings.metrics_multiprocess_dir else []),
            ]
            for task in background:
                task.start()
            try:
                yield
            finally:
                for task in reversed(background):
                    await task.stop()
                await jobs_runner.close()
                await app.state.actions.groups.close()
                await app.state.actions.partners.aclose()
                metrics.process_stopped()
        finally:
            await exchange_http.aclose()
            await webhook_http.aclose()
            await http.aclose()
            await engine.dispose()
            await ledger.close()

    def from_state(name: str) -> Provide:
        def provide(state: State) -> object:
            return state[name]

        return Provide(provide, sync_to_thread=False)

    def provide_settings() -> Settings:
        return settings

    def provide_methodologies() -> MethodologyRegistry:
        return methodologies

    def provide_metrics() -> Metrics:
        return metrics

    configure_logging(settings)
    app = Litestar(
        route_handlers=[
            create_static_files_router(
                path=DOCS_ASSETS, directories=[swagger_ui_path], name="docs-assets", include_in_schema=False
            ),
            HealthController,
            MetricsController,
            LedgerLogController,
            MethodologyController,
            *identity.ROUTES,
            *audit_log.ROUTES,
            *actions.ROUTES,
            *redemptions.ROUTES,
            *webhooks.ROUTES,
            *oversight.ROUTES,
            *exchange.ROUTES,
        ],
        lifespan=[lifespan],
        on_startup=[document_problems],
        dependencies={
            "ledger": from_state("ledger"),
            "engine": from_state("engine"),
            "log_reader": from_state("log_reader"),
            "identity": from_state("identity"),
            "actions": from_state("actions"),
            "redemptions": from_state("redemptions"),
            "webhooks": from_state("webhooks"),
            "exchange": from_state("exchange"),
            "jobs_runner": from_state("jobs_runner"),
            "sessionmaker": from_state("sessionmaker"),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "methodologies": Provide(provide_methodologies, sync_to_thread=False),
            "metrics": Provide(provide_metrics, sync_to_thread=False),
            "db_session": Provide(provide_db_session),
            "request_meta": Provide(
                request_meta_provider(parse_networks(settings.trusted_proxies)), sync_to_thread=False
            ),
            "principal": Provide(provide_principal),
            "actor": Provide(identity.provide_actor),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        cors_config=(
            CORSConfig(
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
                allow_credentials=False,
                max_age=600,
            )
            if settings.cors_origins
            else None
        ),
        openapi_config=OpenAPIConfig(
            title="carbon-rewards",
            version=API_VERSION,
            description="Rewards residents' verified low-carbon actions with points on a tamper-evident ledger.",
            path="/schema",
            # The docs page's scripts and styles come from the service itself (a package), not a CDN.
            render_plugins=[
                SwaggerRenderPlugin(
                    path=["/", "/swagger"],
                    js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                    css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                    standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
                )
            ],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        bearer_format="JWT",
                        description="Access token from /v1/auth/…; verify with /.well-known/jwks.json",
                    )
                }
            ),
        ),
    )
    # Outermost: every answer, a 404 included, carries its request id, and is logged once.
    app.asgi_handler = RequestIds(app.asgi_handler, settings.trusted_proxies, metrics.request_finished)
    return app


def _pool_sampler(metrics: Metrics, engine: AsyncEngine, ledger: Ledger) -> PeriodicTask:
    """With workers sharing metrics, a scrape runs in one of them: each records its own pools regularly."""

    async def sample() -> bool:
        metrics.sample_pools(engine, ledger)
        return False

    return PeriodicTask("metrics-pool-sampler", sample, POOL_SAMPLE_INTERVAL_S)
