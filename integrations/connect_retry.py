"""Repeating a request that never left: the retry rule for the SMS gateway and the identity provider.

A connection that could not be opened (refused, reset while connecting, or not opened within the
timeout) or a pool that had no free connection means the request was never sent, so sending it again
cannot deliver a one-time code twice. Anything later (a read timeout, an answer) may have reached the
other side and is left to the caller. Partners have their own, fuller policy in ``integrations.partners``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from integrations import backoff

#: The failures that happen before a byte of the request is written.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


async def until_connected(
    request: Callable[[], Awaitable[httpx.Response]], *, attempts: int, backoff_s: float = 0.2
) -> httpx.Response:
    """Make ``request`` up to ``attempts`` times while it fails before sending; re-raise the last failure."""
    for attempt in range(1, attempts + 1):
        try:
            return await request()
        except NOT_SENT:
            if attempt == attempts:
                raise
            await asyncio.sleep(backoff.backoff_s(attempt, backoff_s))
    raise ValueError("attempts must be at least 1")
