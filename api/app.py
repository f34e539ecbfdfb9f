"""The Litestar application factory: settings in, app out, with no import-time state.

The app's lifespan opens the ledger (its connection pool, group-commit writers and expiry task) on
the database URL it is given, starts the sealer that appends committed transfers to the Merkle log
and signs checkpoints, opens the SQLAlchemy engine and the HTTP client of the identity services,
publishes this process's token signing key, builds the actions runtime (methodologies, caps, the
partner client), starts the housekeeping task that deletes expired short-lived state, and closes
everything on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from pydantic import SecretStr
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_sessionmaker,
)

from api.actions.controllers import ROUTES as ACTION_ROUTES
from api.actions.service import ActionsRuntime, Caps
from api.auth import service as identity_service
from api.auth.controllers import ROUTES as IDENTITY_ROUTES
from api.auth.guards import provide_principal
from api.auth.keys import (
    ServerSecret,
    TokenSigningKey,
    decode_seed,
    load_or_create_seed,
)
from api.auth.service import IdentityRuntime, RateLimits
from api.auth.tokens import AccessTokens
from api.client_address import parse_networks
from api.database import open_engine
from api.dependencies import provide_db_session, request_meta_provider
from api.errors import EXCEPTION_HANDLERS
from api.health import HealthController
from api.housekeeping import Retention, housekeeping_task
from api.ledger_log import LedgerLogController
from api.methodologies import MethodologyController
from api.settings import Settings
from domain.methodologies import MethodologyRegistry
from integrations.idp import (
    CityIdentityProvider,
    IdTokenVerifier,
    NoIdentityProviderConfigured,
)
from integrations.partners import PartnerGateway, RetryPolicy
from integrations.sms import HttpSmsGateway, LoggingSms, NoSmsConfigured, SmsSender
from ledger import Ledger, LogReader, Sealer, Signer

API_VERSION = "0.3.0"

log = logging.getLogger(__name__)


def checkpoint_signer(settings: Settings) -> Signer:
    """The configured checkpoint key, or the one generated once into the data directory."""
    return Signer.from_seed(_secret_seed(settings.ledger_signing_key, settings.data_dir / "ledger-signing-key"))


def _secret_seed(value: SecretStr | None, path: Path) -> bytes:
    return decode_seed(value.get_secret_value()) if value is not None else load_or_create_seed(path)


def token_signing_seed(settings: Settings) -> bytes:
    """The configured access-token key, or the one generated once into the data directory."""
    return _secret_seed(settings.token_signing_key, settings.data_dir / "token-signing-key")


def server_secret_seed(settings: Settings) -> bytes:
    """The configured server secret, or the one generated once into the data directory."""
    return _secret_seed(settings.server_secret, settings.data_dir / "server-secret")


def prepare_keys(settings: Settings) -> None:
    """Create the key files the settings do not provide, once, before worker processes start.

    Each worker would otherwise race the others to create them, and they must all sign with the same keys.
    """
    checkpoint_signer(settings)
    token_signing_seed(settings)
    server_secret_seed(settings)


def app_from_environment() -> Litestar:
    """The app of one worker of ``carbon-rewards serve --workers N``.

    The serving process has prepared the database and the keys and put everything a worker needs
    (``DATABASE_URL`` included) in the environment the workers inherit.
    """
    settings = Settings()
    if not settings.database_url:
        raise RuntimeError("a worker needs DATABASE_URL; start workers with `carbon-rewards serve --workers N`")
    return create_app(settings, settings.database_url)


def _sms_sender(settings: Settings, http: httpx.AsyncClient) -> SmsSender:
    if settings.sms_gateway_url:
        return HttpSmsGateway(settings.sms_gateway_url, http, connect_attempts=settings.http_connect_attempts)
    return LoggingSms() if settings.demo else NoSmsConfigured()


def _identity_provider(settings: Settings, http: httpx.AsyncClient) -> IdTokenVerifier:
    if settings.idp_jwks_url and settings.idp_issuer and settings.idp_audience:
        return CityIdentityProvider(
            jwks_url=settings.idp_jwks_url,
            issuer=settings.idp_issuer,
            audience=settings.idp_audience,
            algorithms=settings.idp_algorithms,
            client=http,
            cache_s=settings.idp_jwks_cache_s,
            min_refetch_s=settings.idp_jwks_min_refetch_s,
            connect_attempts=settings.http_connect_attempts,
        )
    return NoIdentityProviderConfigured()


async def open_identity(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], http: httpx.AsyncClient
) -> IdentityRuntime:
    """Keys, token service, SMS and identity provider clients; publishes this process's token key."""
    signing_key = TokenSigningKey(token_signing_seed(settings))
    access_ttl = timedelta(seconds=settings.access_token_ttl_s)

    async def reload_keys() -> dict[str, Ed25519PublicKey]:
        async with sessionmaker() as session:
            return await identity_service.published_keys(session, access_ttl)

    keys: dict[str, Ed25519PublicKey] = {}
    try:
        async with sessionmaker() as session, session.begin():
            await identity_service.publish_signing_key(session, signing_key)
        keys = await reload_keys()
    except ProgrammingError:
        log.warning("the identity tables do not exist (database not migrated); the token key is not published")
    return IdentityRuntime(
        secret=ServerSecret(server_secret_seed(settings)),
        tokens=AccessTokens(
            signing_key,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            ttl=access_ttl,
            keys=keys,
            reload_keys=reload_keys,
        ),
        sms=_sms_sender(settings, http),
        idp=_identity_provider(settings, http),
        hasher=identity_service.password_hasher(),
        limits=RateLimits(
            otp_per_phone=settings.otp_limit_per_phone,
            otp_per_ip=settings.otp_limit_per_ip,
            otp_window_s=settings.otp_rate_window_s,
            login_per_username=settings.login_limit_per_username,
            login_per_ip=settings.login_limit_per_ip,
            login_window_s=settings.login_rate_window_s,
            client_failures_per_client=settings.client_auth_failures_per_client,
            client_failures_per_ip=settings.client_auth_failures_per_ip,
            client_window_s=settings.client_auth_window_s,
        ),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_s),
    )


def open_actions(
    settings: Settings, methodologies: MethodologyRegistry, secret: ServerSecret, http: httpx.AsyncClient
) -> ActionsRuntime:
    """Methodologies, conversion rate, caps, anomaly and signature rules, and the partner client."""
    return ActionsRuntime(
        methodologies=methodologies,
        points_per_kg=settings.points_per_kg_co2e,
        caps=Caps(daily=dict(settings.daily_points_cap), monthly=dict(settings.monthly_points_cap)),
        local_offset=timedelta(minutes=settings.utc_offset_minutes),
        anomaly_factor=settings.anomaly_factor,
        anomaly_floor_per_hour=settings.anomaly_floor_per_hour,
        signature_tolerance_s=settings.signature_tolerance_s,
        partners=PartnerGateway(
            http,
            RetryPolicy(
                attempts=settings.partner_attempts,
                backoff_s=settings.partner_backoff_s,
                breaker_threshold=settings.partner_breaker_threshold,
                breaker_cooldown_s=settings.partner_breaker_cooldown_s,
            ),
        ),
        secret=secret,
    )


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
        engine = open_engine(settings, database_url)
        http = httpx.AsyncClient(timeout=settings.http_timeout_s, follow_redirects=False)
        partner_http = httpx.AsyncClient(
            timeout=settings.partner_timeout_s,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
        )
        try:
            app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
            app.state.identity = await open_identity(settings, app.state.sessionmaker, http)
            app.state.actions = open_actions(settings, methodologies, app.state.identity.secret, partner_http)
            housekeeper = housekeeping_task(
                app.state.sessionmaker, Retention.from_settings(settings), settings.housekeeping_interval_s
            )
            sealer.start()
            housekeeper.start()
            try:
                yield
            finally:
                await housekeeper.stop()
                await sealer.stop()
        finally:
            await partner_http.aclose()
            await http.aclose()
            await engine.dispose()
            await ledger.close()

    def provide_ledger(state: State) -> Ledger:
        return state.ledger  # type: ignore[no-any-return]

    def provide_log_reader(state: State) -> LogReader:
        return state.log_reader  # type: ignore[no-any-return]

    def provide_settings() -> Settings:
        return settings

    methodologies = MethodologyRegistry.load()
    proxies = parse_networks(settings.trusted_proxies)

    def provide_methodologies() -> MethodologyRegistry:
        return methodologies

    def provide_identity(state: State) -> IdentityRuntime:
        return state.identity  # type: ignore[no-any-return]

    def provide_actions(state: State) -> ActionsRuntime:
        return state.actions  # type: ignore[no-any-return]

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Litestar(
        route_handlers=[HealthController, LedgerLogController, MethodologyController, *IDENTITY_ROUTES, *ACTION_ROUTES],
        lifespan=[lifespan],
        dependencies={
            "ledger": Provide(provide_ledger, sync_to_thread=False),
            "log_reader": Provide(provide_log_reader, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "identity": Provide(provide_identity, sync_to_thread=False),
            "actions": Provide(provide_actions, sync_to_thread=False),
            "methodologies": Provide(provide_methodologies, sync_to_thread=False),
            "db_session": Provide(provide_db_session),
            "request_meta": Provide(request_meta_provider(proxies), sync_to_thread=False),
            "principal": Provide(provide_principal),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="carbon-rewards",
            version=API_VERSION,
            description="Rewards residents' verified low-carbon actions with points on a tamper-evident ledger.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
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
