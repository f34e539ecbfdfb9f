"""One shape for the service's background loops: sealing, pending-transfer expiry, housekeeping.

Each repeats a round for the life of the process. A round that reports more work waiting runs again
at once; otherwise the loop pauses ``interval_s``. A round that raises is logged and retried after the
pause, since a database restart or a dropped connection must not end the loop until the next deploy;
an unreachable database is logged once per outage (``ledger.availability``), not once per round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ledger.availability import current_outage, database_unreachable

log = logging.getLogger(__name__)

#: A round of work; returns True when more is waiting and the next round should start at once.
Round = Callable[[], Awaitable[bool]]


class PeriodicTask:
    """Runs ``run_round`` in a background task between ``start()`` and ``stop()``."""

    def __init__(self, name: str, run_round: Round, interval_s: float) -> None:
        self.name = name
        self.run_round = run_round
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has stopped (a round in flight is cancelled with it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                more = await self.run_round()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a failed round
                if database_unreachable(exc):
                    current_outage().failed(exc, self.name)  # logged once per outage, without a traceback
                else:
                    log.exception("%s: round failed; retrying in %.1f s", self.name, self.interval_s)
                more = False
            else:
                current_outage().recovered()
            if not more:
                await asyncio.sleep(self.interval_s)
