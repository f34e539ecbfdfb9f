"""Housekeeping: forget short-lived service state once it can no longer decide anything.

Rate-limit windows, one-time codes, replay-guard signatures, partners' hourly volumes and the answers
kept for idempotent retries grow with traffic. Past their window they only cost disk and index size,
and one-time codes carry a phone hash that should be kept no longer than needed (data minimisation). The ledger, its Merkle log and
the audit trails are never touched here: they are append-only by design.

Each table is pruned in small batches, each batch its own short transaction, so a sweep never holds
locks that requests wait on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.settings import Settings
from domain.fraud import VOLUME_HISTORY
from ledger import PeriodicTask

log = logging.getLogger(__name__)

BATCH_ROWS = 5_000


@dataclass(frozen=True)
class Retention:
    """How long each kind of state is kept after the moment that makes it useless."""

    rate_windows: timedelta
    otp_challenges: timedelta
    request_signatures: timedelta
    hourly_volumes: timedelta
    idempotency_keys: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        longest_window = max(
            settings.otp_rate_window_s,
            settings.login_rate_window_s,
            settings.client_auth_window_s,
            settings.capture_failure_window_s,
            settings.link_window_s,
        )
        return cls(
            # A window is consulted only while it is the current one.
            rate_windows=timedelta(seconds=longest_window),
            otp_challenges=timedelta(seconds=settings.otp_retention_s),
            # A signature older than the tolerance is refused by its timestamp; twice that leaves room for clock skew.
            request_signatures=timedelta(seconds=2 * settings.signature_tolerance_s),
            # The anomaly rule's norm looks back this far; one hour more keeps the oldest hour whole.
            hourly_volumes=VOLUME_HISTORY + timedelta(hours=1),
            # Past this, a retry with the same Idempotency-Key is done as a new request.
            idempotency_keys=timedelta(seconds=settings.idempotency_retention_s),
        )


# table, the column compared with the cut-off, and which retention applies
_PRUNED = (
    ("rate_limit_windows", "window_start", "rate_windows"),
    ("otp_challenges", "expires_at", "otp_challenges"),
    ("partner_request_signatures", "seen_at", "request_signatures"),
    ("partner_hourly_volume", "hour", "hourly_volumes"),
    ("idempotency_keys", "created_at", "idempotency_keys"),
)


async def _prune_batch(session: AsyncSession, table: str, column: str, before: datetime) -> int:
    # ctid batches keep each transaction short. The column is indexed, except on the small hourly-volume table.
    result = await session.execute(
        text(
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608 - names come from _PRUNED only
            f"SELECT ctid FROM {table} WHERE {column} < :before LIMIT :rows))"
        ),
        {"before": before, "rows": BATCH_ROWS},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def sweep(sessionmaker: async_sessionmaker[AsyncSession], retention: Retention, now: datetime) -> dict[str, int]:
    """Delete every row past its retention at ``now``; returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    for table, column, kept_for in _PRUNED:
        before = now - getattr(retention, kept_for)
        deleted[table] = 0
        while True:
            async with sessionmaker() as session, session.begin():
                rows = await _prune_batch(session, table, column, before)
            deleted[table] += rows
            if rows < BATCH_ROWS:
                break
    return deleted


def housekeeping_task(
    sessionmaker: async_sessionmaker[AsyncSession], retention: Retention, interval_s: float
) -> PeriodicTask:
    """The service's background sweep, every ``interval_s`` seconds."""

    async def sweep_round() -> bool:
        deleted = await sweep(sessionmaker, retention, datetime.now(UTC))
        if any(deleted.values()):
            log.info("housekeeping deleted %s", ", ".join(f"{n} from {t}" for t, n in deleted.items() if n))
        return False  # a sweep deletes everything due; the next is due an interval later

    return PeriodicTask("housekeeping", sweep_round, interval_s)
