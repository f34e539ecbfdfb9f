"""Authentication and role guards, shared by every feature's routes.

A guarded route reads the ``Authorization: Bearer`` token, verifies it and checks the caller's role
before the handler (or any dependency) runs; the verified ``Principal`` is then available to the
handler as the ``principal`` dependency. Unguarded routes never look at credentials. Tokens are
verified by whatever the app put in ``state.tokens`` (identity's ``AccessTokens``), so guards need
nothing of identity but that.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from domain.errors import Forbidden
from domain.identity import OPERATOR_ROLES, Principal, Role, TokenInvalid

_PRINCIPAL = "principal"
_NO_TOKEN = {"WWW-Authenticate": 'Bearer realm="carbon-rewards"'}


class TokenVerifier(Protocol):
    async def verify(self, token: str, now: datetime) -> Principal: ...


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The verified caller of this connection (verified once, then remembered on the connection)."""
    cached = connection.state.get(_PRINCIPAL)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid("send an access token as 'Authorization: Bearer <token>'", headers=_NO_TOKEN)
    tokens: TokenVerifier = connection.app.state.tokens
    principal = await tokens.verify(token.strip(), datetime.now(UTC))
    connection.state[_PRINCIPAL] = principal
    return principal


def requires(*roles: Role) -> Guard:
    """A guard admitting only callers with one of ``roles``."""
    allowed = frozenset(roles)
    names = ", ".join(sorted(r.value for r in allowed))

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await authenticate(connection)
        if principal.role not in allowed:
            raise Forbidden(f"this route is for {names}; the token is a {principal.role.value} token")

    return guard


RESIDENT_ONLY = requires(Role.RESIDENT)
MERCHANT_ONLY = requires(Role.MERCHANT)
PARTNER_ONLY = requires(Role.PARTNER)
ANY_OPERATOR = requires(*OPERATOR_ROLES)
OPERATOR_ADMIN = requires(Role.OPERATOR_ADMIN)


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The ``principal`` dependency of guarded routes."""
    return await authenticate(request)
