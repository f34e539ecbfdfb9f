"""The exchange feature's tables: batches of reductions handed to the carbon exchange, what each holds,
and the adjustments that take back reductions reversed after they were exported.

An action is exported once (``exchange_batch_items.action_id`` is the key) and adjusted once
(``exchange_adjustments.action_id``); both are append-only. A batch's row records its submission.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from api.columns import timestamp


class ExchangeBatch(SQLModel, table=True):
    __tablename__ = "exchange_batches"
    __table_args__ = (
        Index("ix_exchange_batches_created", "created_at", "id"),
        Index("ix_exchange_batches_due", "next_attempt_at", postgresql_where=text("status = 'built'")),
    )

    id: UUID = Field(primary_key=True)
    cutoff: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    actions: int = Field(sa_column=Column(BigInteger, nullable=False))
    grams_co2e: int = Field(sa_column=Column(BigInteger, nullable=False))
    adjustments: int = Field(sa_column=Column(BigInteger, nullable=False))
    adjustment_g: int = Field(sa_column=Column(BigInteger, nullable=False))
    net_g: int = Field(sa_column=Column(BigInteger, nullable=False))
    by_kind: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    by_methodology: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    merkle_root: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_by: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = timestamp()
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))
    next_attempt_at: datetime = timestamp()
    last_error: str | None = Field(default=None, sa_column=Column(String(500), nullable=True))
    submitted_at: datetime | None = timestamp(nullable=True, default_now=False)
    receipt_id: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))


class ExchangeBatchItem(SQLModel, table=True):
    """A reduction a batch exported (append-only): an action is exported once."""

    __tablename__ = "exchange_batch_items"
    __table_args__ = (Index("ix_exchange_batch_items_batch", "batch_id", "action_id"),)

    action_id: UUID = Field(primary_key=True)
    batch_id: UUID = Field(foreign_key="exchange_batches.id", nullable=False)
    grams_co2e: int = Field(sa_column=Column(BigInteger, nullable=False))


class ExchangeAdjustment(SQLModel, table=True):
    """A reversed reduction a batch takes back from an earlier one (append-only): adjusted once."""

    __tablename__ = "exchange_adjustments"
    __table_args__ = (Index("ix_exchange_adjustments_batch", "batch_id", "action_id"),)

    action_id: UUID = Field(primary_key=True)
    batch_id: UUID = Field(foreign_key="exchange_batches.id", nullable=False)
    exported_in: UUID = Field(nullable=False)
    grams_co2e: int = Field(sa_column=Column(BigInteger, nullable=False))
