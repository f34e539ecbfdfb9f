"""Tables of the actions module: linked partner accounts, actions, reviews, and ingestion bookkeeping.

``actions`` holds every record that reached a decision (credited, rejected by a rule, or waiting for
review) under a unique ``(partner_id, external_id)``, so a record is decided once however often
and however it arrives. Records refused before any decision (malformed, or for an account nobody
linked) are not stored: the partner may send them again once fixed or linked.
``action_reviews`` and ``action_reversals`` are append-only, like the ledger.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, Date, DateTime, Index, Integer, SmallInteger, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from api.columns import timestamp


class PartnerLink(SQLModel, table=True):
    """A resident's account at a partner, confirmed by the partner; ``unlinked_at`` ends it."""

    __tablename__ = "partner_links"
    __table_args__ = (
        Index(
            "uq_partner_links_active_account",
            "partner_id",
            "partner_account_ref",
            unique=True,
            postgresql_where=text("unlinked_at IS NULL"),
        ),
        Index("ix_partner_links_resident_id", "resident_id"),
    )

    id: UUID = Field(primary_key=True)
    resident_id: UUID = Field(nullable=False)
    partner_id: UUID = Field(nullable=False)
    partner_account_ref: str = Field(sa_column=Column(String(128), nullable=False))
    created_at: datetime = timestamp()
    unlinked_at: datetime | None = timestamp(nullable=True, default_now=False)


#: The actions that hold their trade (``trade_ref``): a rejected one leaves it to another record.
TRADE_TAKEN = "trade_ref IS NOT NULL AND status IN ('credited', 'pending_review', 'reversed')"


class Action(SQLModel, table=True):
    """One decided partner record and everything needed to re-derive its credit."""

    __tablename__ = "actions"
    __table_args__ = (
        UniqueConstraint("partner_id", "external_id", name="uq_actions_partner_external_id"),
        Index("ix_actions_resident_local_day", "resident_id", "local_day"),
        Index("ix_actions_resident_occurred_at", "resident_id", "occurred_at"),
        Index("ix_actions_resident_received", "resident_id", "received_at", "id"),
        Index("ix_actions_pending_review", "received_at", postgresql_where=text("status = 'pending_review'")),
        Index("ix_actions_received", "received_at", "id"),
        Index(
            "ix_actions_decided_credited",
            "decided_at",
            postgresql_where=text("status IN ('credited', 'reversed')"),
        ),
        # One traded item is one reduction: a partner's trade is held by one credited, held or reversed action.
        Index(
            "uq_actions_partner_trade",
            "partner_id",
            "trade_ref",
            unique=True,
            postgresql_where=text(TRADE_TAKEN),
        ),
    )

    id: UUID = Field(primary_key=True)
    partner_id: UUID = Field(nullable=False)
    external_id: str = Field(sa_column=Column(String(128), nullable=False))
    resident_id: UUID = Field(nullable=False)
    account_ref: str = Field(sa_column=Column(String(128), nullable=False))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    category: str = Field(sa_column=Column(String(64), nullable=False))
    quantity: int = Field(sa_column=Column(BigInteger, nullable=False))
    started_at: datetime | None = timestamp(nullable=True, default_now=False)
    occurred_at: datetime = timestamp(default_now=False)
    local_day: date = Field(sa_column=Column(Date, nullable=False))
    status: str = Field(sa_column=Column(String(32), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    grams_co2e: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0")))
    points: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0")))
    points_withheld: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0")))
    cap_reason: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    methodology_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    methodology_version: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    factor: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    source: str = Field(sa_column=Column(String(16), nullable=False))
    record: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    #: A second-hand record's trade (the platform's id, the same on both sides' records).
    trade_ref: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    received_at: datetime = timestamp()
    decided_at: datetime | None = timestamp(nullable=True, default_now=False)


class ActionReview(SQLModel, table=True):
    """An operator's decision on an action held for review (append-only)."""

    __tablename__ = "action_reviews"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    action_id: UUID = Field(nullable=False, unique=True)
    operator_id: UUID = Field(nullable=False)
    decision: str = Field(sa_column=Column(String(16), nullable=False))
    reason: str = Field(sa_column=Column(String(500), nullable=False))
    at: datetime = timestamp()


class PartnerRequestSignature(SQLModel, table=True):
    """Signatures accepted within the tolerance window, so that a replayed request is refused."""

    __tablename__ = "partner_request_signatures"
    __table_args__ = (Index("ix_partner_request_signatures_seen_at", "seen_at"),)

    partner_id: UUID = Field(primary_key=True)
    digest: str = Field(sa_column=Column(String(64), primary_key=True))
    seen_at: datetime = timestamp()


class PartnerHourlyVolume(SQLModel, table=True):
    """Records a partner pushed per hour, striped over a few slots so concurrent pushes do not queue."""

    __tablename__ = "partner_hourly_volume"

    partner_id: UUID = Field(primary_key=True)
    hour: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    slot: int = Field(sa_column=Column(SmallInteger, primary_key=True))
    records: int = Field(sa_column=Column(BigInteger, nullable=False))


class ActionReversal(SQLModel, table=True):
    """An operator's reversal of a credited action (append-only): what came back, and what became a debt."""

    __tablename__ = "action_reversals"
    __table_args__ = (Index("ix_action_reversals_reversed_at", "reversed_at"),)

    action_id: UUID = Field(primary_key=True)
    operator_id: UUID | None = Field(default=None, nullable=True)
    reason: str = Field(sa_column=Column(String(500), nullable=False))
    grams_co2e: int = Field(sa_column=Column(BigInteger, nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    points_recovered: int = Field(sa_column=Column(BigInteger, nullable=False))
    points_owed: int = Field(sa_column=Column(BigInteger, nullable=False))
    reversed_at: datetime = timestamp(default_now=False)
