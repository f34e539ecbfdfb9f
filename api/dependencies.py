"""Request-scoped dependencies: the database session that owns the request's transaction, and who is asking.

The session commits when the handler returns and rolls back when it raises, before the response is
sent, so a commit failure becomes an error response rather than a false success. Errors marked
``keeps_writes`` (a wrong one-time code, a replayed refresh token) commit what the request recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.service import RequestMeta
from api.client_address import Network, client_address
from domain.errors import CarbonRewardsError


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    async with state.sessionmaker() as session:
        try:
            yield session
        except CarbonRewardsError as exc:
            if exc.keeps_writes:
                await session.commit()
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


def request_meta_provider(proxies: Sequence[Network]) -> Callable[[Request[Any, Any, Any]], RequestMeta]:
    """The ``request_meta`` dependency: where a request came from, for rate limits, sessions and the audit log."""

    def provide_request_meta(request: Request[Any, Any, Any]) -> RequestMeta:
        return RequestMeta(
            client_ip=client_address(
                request.client.host if request.client else None, request.headers.getall("x-forwarded-for", []), proxies
            ),
            user_agent=request.headers.get("user-agent"),
        )

    return provide_request_meta
