"""Errors raised by the ledger itself (per-transfer failures are results, not exceptions)."""

from __future__ import annotations

from typing import Any

from domain.errors import (
    CarbonRewardsError,
    Conflict,
    ErrorKind,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)


class LedgerConflict(Conflict):
    """A deadlock or serialisation failure: nothing was written; retry the whole transaction.

    The group committer retries by itself; a caller of the in-transaction path passes it on, and the
    API answers it as ``409 ledger_busy`` with ``Retry-After``: the client's retry is the new transaction.
    """

    code = "ledger_busy"
    title = "The ledger was busy with a conflicting write; retry the request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": "1"}, **extra)


class LedgerUsageError(CarbonRewardsError):
    """The ledger was called the wrong way (a programming error, not bad input)."""

    code = "ledger_usage_error"
    kind = ErrorKind.INTERNAL
    title = "The ledger was used incorrectly"


def require_transaction(conn: Any) -> None:
    """Refuse a write on a connection outside a transaction: the caller must own one (see ``ledger.store``)."""
    if not conn.is_in_transaction():
        raise LedgerUsageError("ledger writes must run inside the caller's transaction")


class LedgerClosed(CarbonRewardsError):
    code = "ledger_closed"
    kind = ErrorKind.UNAVAILABLE
    title = "The ledger is shutting down"


class CheckpointRejected(InvalidInput):
    """A checkpoint or proof failed verification; ``reason`` says which check (stable, machine-readable)."""

    code = "checkpoint_rejected"
    title = "The checkpoint does not verify"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason


class TreeSizeNotFound(NotFound):
    code = "tree_size_not_found"
    title = "No checkpoint of that tree size exists"


class TransferNotSealed(NotFound):
    code = "transfer_not_sealed"
    title = "The transfer is not in the log at that tree size"


class LongReadsBusy(ServiceUnavailable):
    """Every slot for long reads (exports, verification, evidence packages) of this process is taken.

    Each holds a connection of the ledger's pool for minutes; unbounded, they would starve the writers.
    """

    code = "long_reads_busy"
    title = "Too many ledger exports, verifications or evidence packages are running; retry shortly"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": "10"}, **extra)
