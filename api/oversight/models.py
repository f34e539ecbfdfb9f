"""The oversight feature's table: background jobs operators start (verifying the ledger) and poll."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, Index, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from api.columns import timestamp


class Job(SQLModel, table=True):
    """One run of a long task: queued, running, then succeeded or failed (or interrupted with its worker)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),)

    id: UUID = Field(primary_key=True)
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    done: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    total: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(String(500), nullable=True))
    requested_by: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = timestamp()
    started_at: datetime | None = timestamp(nullable=True, default_now=False)
    finished_at: datetime | None = timestamp(nullable=True, default_now=False)
    heartbeat_at: datetime = timestamp()
