"""Access tokens: short-lived EdDSA JWTs (RFC 9068 profile), and their strict verification.

Verification pins the algorithm to EdDSA before looking at the token, takes the key only by a
known ``kid`` (never from the token), and requires every claim we issue. That refuses ``alg: none``,
HS256 tokens "signed" with our public key (algorithm confusion), unknown keys, other issuers or
audiences, expired or not-yet-valid tokens, tampered payloads, and unknown roles.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.identity import SCOPES_BY_ROLE, Principal, Role, TokenExpired, TokenInvalid

ALGORITHM = "EdDSA"
TOKEN_TYPE = "at+jwt"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti", "role", "scope")
#: Clock skew tolerated between this service's instances and for `nbf`/`exp`.
LEEWAY_S = 5
#: Tokens whose signature this process has checked, kept with their validity window (least recently
#: used out first). A partner's or a busy resident's token is reused for minutes; checking its
#: signature again on every request was the largest cost of a single-record push (bench/ingest.py).
VERIFIED_TOKENS_CACHED = 10_000

_BEARER_ERROR = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 of the raw public key, in hex (as for checkpoint keys)."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


class TokenSigningKey:
    """The Ed25519 key this process signs access tokens with (its seed: ``api.keys.token_signing_seed``)."""

    algorithm = "EdDSA"

    def __init__(self, seed: bytes) -> None:
        self.private_key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self.private_key.public_key()
        self.kid = key_id(self.public_key)

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes_raw()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    scope: str


class AccessTokens:
    """Issues tokens with this process's key; verifies with every published key (``keys`` by kid).

    ``reload_keys`` is called when a token names a kid this process does not know yet: another
    instance may have rotated to a new key. Reloads start at most every ``reload_interval_s`` and
    are shared: a token that arrives while one is due waits for the next one instead of being
    refused, so a flood of made-up kids costs one query per interval and cannot lock a real new
    key out. A reload that started after the token arrived has seen every key published before
    it, so its answer is final for that token.

    A token verified once is remembered (``VERIFIED_TOKENS_CACHED``, by its exact text): its signature,
    issuer, audience and claims cannot change, so a later use only checks its time window again.
    Nothing that verification depends on is withdrawn early (a retired key stays valid until its last
    token expires), so remembering changes no answer.
    """

    def __init__(
        self,
        signing_key: TokenSigningKey,
        *,
        issuer: str,
        audience: str,
        ttl: timedelta,
        keys: Mapping[str, Ed25519PublicKey],
        reload_keys: Callable[[], Awaitable[Mapping[str, Ed25519PublicKey]]] | None = None,
        reload_interval_s: float = 1.0,
    ) -> None:
        self.signing_key = signing_key
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._keys = dict(keys)
        self._keys.setdefault(signing_key.kid, signing_key.public_key)
        self._reload_keys = reload_keys
        self._reload_interval_s = reload_interval_s
        self._reload_lock = asyncio.Lock()
        self._reload_started: float | None = None
        self._verified: OrderedDict[str, tuple[Principal, int, int]] = OrderedDict()

    def issue(self, subject_id: uuid.UUID, role: Role, now: datetime) -> IssuedToken:
        scope = " ".join(SCOPES_BY_ROLE[role])
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(subject_id),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + self.ttl).timestamp()),
            "jti": uuid.uuid4().hex,
            "role": role.value,
            "scope": scope,
        }
        token = jwt.encode(
            claims,
            self.signing_key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self.signing_key.kid, "typ": TOKEN_TYPE},
        )
        return IssuedToken(token=token, expires_in=int(self.ttl.total_seconds()), scope=scope)

    async def verify(self, token: str, now: datetime) -> Principal:
        """The principal of a valid token; ``TokenInvalid`` / ``TokenExpired`` otherwise."""
        known = self._verified.get(token)
        if known is not None:
            principal, not_before, expires = known
            moment = now.timestamp()
            if moment >= expires + LEEWAY_S:
                del self._verified[token]
                raise TokenExpired(headers=_BEARER_ERROR)
            if moment < not_before - LEEWAY_S:
                raise TokenInvalid("the token is not valid yet", headers=_BEARER_ERROR)
            self._verified.move_to_end(token)
            return principal
        principal, not_before, expires = await self._verify_signed(token)
        self._verified[token] = (principal, not_before, expires)
        if len(self._verified) > VERIFIED_TOKENS_CACHED:
            self._verified.popitem(last=False)
        return principal

    async def _verify_signed(self, token: str) -> tuple[Principal, int, int]:
        """Check the token's signature and claims; its principal and its ``nbf`` and ``exp``."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenInvalid("the token is not a well-formed JWT", headers=_BEARER_ERROR) from exc
        if header.get("alg") != ALGORITHM:
            raise TokenInvalid(f"tokens must be signed with {ALGORITHM}", headers=_BEARER_ERROR)
        if header.get("typ") != TOKEN_TYPE:
            raise TokenInvalid(f"the token type must be {TOKEN_TYPE}", headers=_BEARER_ERROR)
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenInvalid("the token names no key id", headers=_BEARER_ERROR)
        key = self._keys.get(kid) or await self._reload_for(kid)
        if key is None:
            raise TokenInvalid("the token's key id is unknown", headers=_BEARER_ERROR)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired(headers=_BEARER_ERROR) from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenInvalid("the token is not valid yet", headers=_BEARER_ERROR) from exc
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"the token was refused: {exc}", headers=_BEARER_ERROR) from exc
        try:
            role = Role(claims["role"])
            subject_id = uuid.UUID(claims["sub"])
        except ValueError as exc:
            raise TokenInvalid("the token's subject or role is not valid", headers=_BEARER_ERROR) from exc
        principal = Principal(
            subject_id=subject_id, role=role, token_id=str(claims["jti"]), scopes=tuple(str(claims["scope"]).split())
        )
        return principal, int(claims["nbf"]), int(claims["exp"])

    async def _reload_for(self, kid: str) -> Ed25519PublicKey | None:
        if self._reload_keys is None:
            return None
        arrived = time.monotonic()
        async with self._reload_lock:
            if kid in self._keys or (self._reload_started is not None and self._reload_started >= arrived):
                return self._keys.get(kid)
            if self._reload_started is not None:
                await asyncio.sleep(max(0.0, self._reload_started + self._reload_interval_s - time.monotonic()))
            self._reload_started = time.monotonic()
            self._keys.update(await self._reload_keys())
            return self._keys.get(kid)
