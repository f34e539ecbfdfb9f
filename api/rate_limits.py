"""Fixed-window rate limits kept in the database, so that every worker and instance counts together.

Shared by the features: one-time codes, sign-in and client credentials (identity), failed
redemption captures (redemptions).

Three uses: ``hit_rate_limit`` counts every attempt (one-time codes); ``refuse_after_failures`` with
a ``count_hit`` per failure counts only failed attempts, which leaves honest callers unthrottled; and
``SecretGuard`` bounds guessing at one account's secret (operator passwords, client secrets) without
letting a stranger lock the owner out: failures are refused per (account, client address) and per
address, while failures from everywhere only slow further attempts at the account, never refuse them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Index, Integer, String, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from domain.errors import RateLimited


class RateLimitWindow(SQLModel, table=True):
    """Hits of one bucket (e.g. ``otp:phone:<hash>``) in one fixed window."""

    __tablename__ = "rate_limit_windows"
    __table_args__ = (Index("ix_rate_limit_windows_window_start", "window_start"),)

    bucket: str = Field(sa_column=Column(String(200), primary_key=True))
    window_start: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    hits: int = Field(sa_column=Column(Integer, nullable=False))


def _window_start(now: datetime, window_s: int) -> datetime:
    return datetime.fromtimestamp(int(now.timestamp()) // window_s * window_s, UTC)


def _limited(limit: int, window_s: int, now: datetime, what: str = "requests") -> RateLimited:
    retry_after = max(1, int((_window_start(now, window_s) + timedelta(seconds=window_s) - now).total_seconds()))
    return RateLimited(f"at most {limit} {what} per {window_s} s; retry in {retry_after} s", retry_after_s=retry_after)


async def count_hit(session: AsyncSession, bucket: str, window_s: int, now: datetime) -> int:
    """Add one hit to ``bucket``'s current fixed window; returns the window's hits so far."""
    statement = (
        insert(RateLimitWindow)
        .values(bucket=bucket, window_start=_window_start(now, window_s), hits=1)
        .on_conflict_do_update(
            index_elements=["bucket", "window_start"],
            set_={"hits": RateLimitWindow.hits + 1},  # type: ignore[arg-type]
        )
        .returning(RateLimitWindow.hits)
    )
    return (await session.execute(statement)).scalar_one()


async def hit_rate_limit(session: AsyncSession, bucket: str, limit: int, window_s: int, now: datetime) -> None:
    """Count one hit in ``bucket``'s current fixed window; ``RateLimited`` past ``limit``."""
    if await count_hit(session, bucket, window_s, now) > limit:
        raise _limited(limit, window_s, now)


@dataclass(frozen=True)
class SecretGuard:
    """Limits on guessing one account's secret (see the module's docstring)."""

    #: Failures per (account, client address) per window before that pair is refused (429).
    per_account_and_address: int
    #: Failures per client address per window, whatever the account, before the address is refused.
    per_address: int
    #: Failures at the account from anywhere after which every attempt at it waits first.
    slow_after: int
    window_s: int
    #: The longest wait: it grows by a quarter second per failure past ``slow_after``, up to this.
    max_delay_s: float = 3.0

    def buckets(self, kind: str, account: str, address: str | None) -> list[tuple[str, int]]:
        """The refusing buckets of an attempt: (account, address) and the address alone."""
        if address is None:
            return [(f"{kind}:acct:{account}", self.per_account_and_address)]
        return [
            (f"{kind}:acct-ip:{account}:{address}", self.per_account_and_address),
            (f"{kind}:ip:{address}", self.per_address),
        ]

    async def before_attempt(
        self, session: AsyncSession, kind: str, account: str, address: str | None, now: datetime
    ) -> None:
        """Refuse (``RateLimited``) where this address has failed too often; else wait as long as the
        account's failures from everywhere ask. Reads in ``session``, which should hold no connection
        afterwards (a short session of its own), so that waiting holds none either."""
        await refuse_after_failures(session, self.buckets(kind, account, address), self.window_s, now)
        failures = await _hits(session, f"{kind}:acct-all:{account}", self.window_s, now)
        if failures >= self.slow_after:
            await session.close()
            await asyncio.sleep(min(self.max_delay_s, 0.25 * (failures - self.slow_after + 1)))

    async def failed(self, session: AsyncSession, kind: str, account: str, address: str | None, now: datetime) -> None:
        """Count a failed attempt in every bucket it belongs to."""
        for bucket, _ in [*self.buckets(kind, account, address), (f"{kind}:acct-all:{account}", 0)]:
            await count_hit(session, bucket, self.window_s, now)


async def _hits(session: AsyncSession, bucket: str, window_s: int, now: datetime) -> int:
    hits = await session.scalar(
        select(RateLimitWindow.hits).where(
            RateLimitWindow.bucket == bucket,  # type: ignore[arg-type]
            RateLimitWindow.window_start == _window_start(now, window_s),  # type: ignore[arg-type]
        )
    )
    return int(hits or 0)


async def refuse_after_failures(
    session: AsyncSession, buckets: Sequence[tuple[str, int]], window_s: int, now: datetime
) -> None:
    """``RateLimited`` when any ``(bucket, limit)`` already holds ``limit`` failures in the current window.

    Counting only failures (``count_hit`` when an attempt fails) leaves honest callers unthrottled.
    """
    rows = await session.execute(
        select(RateLimitWindow.bucket, RateLimitWindow.hits).where(
            RateLimitWindow.bucket.in_([bucket for bucket, _ in buckets]),  # type: ignore[attr-defined]
            RateLimitWindow.window_start == _window_start(now, window_s),
        )
    )
    failures: dict[str, int] = {bucket: hits for bucket, hits in rows}
    for bucket, limit in buckets:
        if failures.get(bucket, 0) >= limit:
            raise _limited(limit, window_s, now, "failed attempts")
