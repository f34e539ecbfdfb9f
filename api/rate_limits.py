"""Fixed-window rate limits kept in the database, so that every worker and instance counts together.

Shared by the features: one-time codes, sign-in and client credentials (identity), failed
redemption captures (redemptions).

Two uses: ``hit_rate_limit`` counts every attempt (one-time codes, operator logins);
``refuse_after_failures`` with a ``count_hit`` per failure counts only failed attempts (client credentials),
which leaves honest callers unthrottled.
"""

from __future__ import annotations

from collections.abc import Sequence
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
