"""Errors raised by the ledger itself (per-transfer failures are results, not exceptions)."""

from __future__ import annotations

from domain.errors import CarbonRewardsError, Conflict, ErrorKind


class LedgerConflict(Conflict):
    """A deadlock or serialisation failure: nothing was written; retry the whole transaction."""

    code = "ledger_conflict"
    title = "Concurrent ledger writes conflicted; retry"


class LedgerUsageError(CarbonRewardsError):
    """The ledger was called the wrong way (a programming error, not bad input)."""

    code = "ledger_usage_error"
    kind = ErrorKind.INTERNAL
    title = "The ledger was used incorrectly"


class LedgerClosed(CarbonRewardsError):
    code = "ledger_closed"
    kind = ErrorKind.UNAVAILABLE
    title = "The ledger is shutting down"
