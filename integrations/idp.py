"""The city identity provider: verifying its ID tokens against its published JWKS.

The JWKS is fetched over HTTP, trusted for ``cache_s``, and fetched again early when a token names a
``kid`` we have not seen (the provider rotated its keys), at most every ``min_refetch_s`` so that a
flood of forged kids cannot turn us into a traffic amplifier.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import httpx
import jwt

from domain.errors import ServiceUnavailable, Unauthenticated
from integrations.connect_retry import until_connected

REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat")


class IdentityProviderUnavailable(ServiceUnavailable):
    code = "identity_provider_unavailable"
    title = "The city identity provider is unavailable; try again shortly"


class IdTokenInvalid(Unauthenticated):
    code = "id_token_invalid"
    title = "The identity provider's token is not valid"


class IdTokenVerifier(Protocol):
    async def verify(self, id_token: str) -> dict[str, Any]: ...


class CityIdentityProvider:
    def __init__(
        self,
        *,
        jwks_url: str,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...],
        client: httpx.AsyncClient,
        cache_s: float = 600.0,
        min_refetch_s: float = 10.0,
        connect_attempts: int = 3,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self._client = client
        self._cache_s = cache_s
        self._min_refetch_s = min_refetch_s
        self._connect_attempts = connect_attempts
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        try:
            response = await until_connected(lambda: self._client.get(self.jwks_url), attempts=self._connect_attempts)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            reason = type(exc).__name__
            raise IdentityProviderUnavailable(f"the provider's JWKS could not be fetched ({reason})") from exc
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "kid" not in entry:
                continue
            try:
                keys[str(entry["kid"])] = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type we do not support is simply not usable
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        async with self._lock:
            age = None if self._fetched_at is None else time.monotonic() - self._fetched_at
            if age is None or age > self._cache_s or (kid not in self._keys and age > self._min_refetch_s):
                await self._fetch()
            return self._keys.get(kid)

    async def verify(self, id_token: str) -> dict[str, Any]:
        """The verified claims of an ID token (``sub`` is the resident's id at the provider)."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise IdTokenInvalid("the ID token is not a well-formed JWT") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in self.algorithms:
            raise IdTokenInvalid(f"ID tokens must be signed with one of {', '.join(self.algorithms)}")
        if not isinstance(kid, str):
            raise IdTokenInvalid("the ID token names no key id")
        key = await self._key(kid)
        if key is None:
            raise IdTokenInvalid("the ID token's key id is not in the provider's JWKS")
        if key.algorithm_name != algorithm:
            raise IdTokenInvalid("the ID token's algorithm does not match its key")
        try:
            claims = jwt.decode(
                id_token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=30,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise IdTokenInvalid(f"the ID token was refused: {exc}") from exc
        if not isinstance(claims.get("sub"), str) or not claims["sub"] or len(claims["sub"]) > 255:
            raise IdTokenInvalid("the ID token's subject is not usable")
        return claims


class NoIdentityProviderConfigured:
    async def verify(self, id_token: str) -> dict[str, Any]:
        raise IdentityProviderUnavailable(
            "no identity provider is configured (CARBON_IDP_JWKS_URL, CARBON_IDP_ISSUER, CARBON_IDP_AUDIENCE)"
        )
