"""Telling "the database is unreachable" apart from a fault, and saying so once per outage.

When PostgreSQL is down (stopped, restarting, unreachable), every request and every background round
fails the same way. A traceback for each would bury the one line that matters, so the first failure
of an outage is logged once, as an error without a traceback, later ones are not, and the first
success afterwards logs that the database is back. Requests answer ``503`` with ``Retry-After``
meanwhile (``api.errors``).
"""

from __future__ import annotations

import logging
import threading
import time
from contextvars import ContextVar

import asyncpg
import sqlalchemy.exc

log = logging.getLogger(__name__)

#: Errors that say the connection or the server is gone, not that a statement was wrong.
_UNREACHABLE = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
#: OSError numbers of a socket that cannot reach the server (refused, missing Unix socket, unreachable).
_UNREACHABLE_ERRNOS = frozenset({2, 32, 104, 110, 111, 113})


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it wraps, says the database cannot be reached."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return False
        if isinstance(current, _UNREACHABLE):
            return True
        if isinstance(current, OSError) and current.errno in _UNREACHABLE_ERRNOS:
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


class DatabaseOutage:
    """Whether this process is in a database outage, so that each one is logged once (thread-safe)."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._lock = threading.Lock()

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, where: str) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        log.error(
            "database unreachable (%s, seen by %s: %s); requests answer 503 until it is back",
            type(exc).__name__,
            where,
            exc,
        )

    def recovered(self) -> None:
        if self._since is None:
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.warning("database reachable again after %.0f s", time.monotonic() - since)


_CURRENT: ContextVar[DatabaseOutage] = ContextVar("database_outage", default=DatabaseOutage())


def current_outage() -> DatabaseOutage:
    """The outage state of the service this code runs for: set by the app as it starts (``use_outage``),
    inherited by the background tasks it starts; a process-wide one otherwise."""
    return _CURRENT.get()


def use_outage(outage: DatabaseOutage) -> None:
    """Make ``outage`` the current one for this context and the tasks it starts from now on."""
    _CURRENT.set(outage)


class _OutageFilter(logging.Filter):
    """Turns a library's log record of an unreachable database (asyncpg's pool retrying its connections,
    with a traceback each time) into the one outage line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and database_unreachable(exc):
            current_outage().failed(exc, record.name)
            return False
        return True


_FILTER = _OutageFilter()


def quiet_outage_logs() -> None:
    """Route asyncpg's pool logs of an unreachable database through ``OUTAGE`` (idempotent)."""
    logger = logging.getLogger("asyncpg.pool")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
