"""What identity's services need besides a session, built once by the app factory from the settings."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.identity import signing_keys
from api.identity.tokens import AccessTokens, TokenSigningKey
from api.keys import ServerSecret, server_secret_seed, token_signing_seed
from api.rate_limits import SecretGuard
from api.settings import Settings
from integrations.idp import CityIdentityProvider, IdTokenVerifier, NoIdentityProviderConfigured
from integrations.sms import HttpSmsGateway, LoggingSms, NoSmsConfigured, SmsSender

log = logging.getLogger(__name__)


def password_hasher() -> PasswordHasher:
    """argon2id at the OWASP Password Storage Cheat Sheet's baseline: 19 MiB, 2 passes, 1 lane.

    Used for operator passwords and client secrets; about 40 ms per hash on this project's CI machine.
    """
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@dataclass(frozen=True)
class RateLimits:
    otp_per_phone: int
    otp_per_ip: int
    otp_window_s: int
    #: Guessing operators' passwords (by username) and clients' secrets (by client id).
    login: SecretGuard
    client: SecretGuard


@dataclass
class IdentityRuntime:
    """Keys, token service, SMS and identity-provider clients, password hashing and rate limits."""

    secret: ServerSecret
    tokens: AccessTokens
    sms: SmsSender
    idp: IdTokenVerifier
    hasher: PasswordHasher
    limits: RateLimits
    refresh_ttl: timedelta
    #: Verified against when a username or client id is unknown, so that both cases cost the same time.
    unknown_caller_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.unknown_caller_hash = self.hasher.hash(secrets.token_urlsafe(16))


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
            return await signing_keys.published_keys(session, access_ttl)

    keys: dict[str, Ed25519PublicKey] = {}
    try:
        async with sessionmaker() as session, session.begin():
            await signing_keys.publish_signing_key(session, signing_key)
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
        hasher=password_hasher(),
        limits=RateLimits(
            otp_per_phone=settings.otp_limit_per_phone,
            otp_per_ip=settings.otp_limit_per_ip,
            otp_window_s=settings.otp_rate_window_s,
            login=SecretGuard(
                per_account_and_address=settings.login_limit_per_username,
                per_address=settings.login_limit_per_ip,
                slow_after=settings.login_slow_after,
                window_s=settings.login_rate_window_s,
                max_delay_s=settings.auth_max_delay_s,
            ),
            client=SecretGuard(
                per_account_and_address=settings.client_auth_failures_per_client,
                per_address=settings.client_auth_failures_per_ip,
                slow_after=settings.client_auth_slow_after,
                window_s=settings.client_auth_window_s,
                max_delay_s=settings.auth_max_delay_s,
            ),
        ),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_s),
    )
