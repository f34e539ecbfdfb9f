"""The webhooks' tables: registered endpoints, the outbox of events, and one delivery per event and endpoint.

``outbox_events`` is append-only (an event, once written with the change it reports, never changes),
and its primary key is the event's stable id, so an event is never held twice. A delivery's state
(pending, delivered, dead; attempts; when to try next) is the only thing that changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Column, DateTime, Index, Integer, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from api.columns import timestamp


class WebhookEndpoint(SQLModel, table=True):
    """Where a merchant or partner receives its events; one active endpoint per owner."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index(
            "uq_webhook_endpoints_active_owner",
            "owner_role",
            "owner_id",
            unique=True,
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: UUID = Field(primary_key=True)
    owner_role: str = Field(sa_column=Column(String(16), nullable=False))
    owner_id: UUID = Field(nullable=False)
    url: str = Field(sa_column=Column(String(500), nullable=False))
    events: list[str] = Field(sa_column=Column(ARRAY(String(64)), nullable=False))
    secret_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = timestamp()
    updated_at: datetime = timestamp()
    removed_at: datetime | None = timestamp(nullable=True, default_now=False)


class OutboxEvent(SQLModel, table=True):
    """An event, written in the same transaction as the change it reports (append-only)."""

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_owner_created", "owner_role", "owner_id", "created_at"),)

    id: UUID = Field(primary_key=True)
    owner_role: str = Field(sa_column=Column(String(16), nullable=False))
    owner_id: UUID = Field(nullable=False)
    type: str = Field(sa_column=Column(String(64), nullable=False))
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = timestamp()


class WebhookDelivery(SQLModel, table=True):
    """One event to one endpoint: pending until a 2xx answer (delivered) or too many attempts (dead)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        Index("ix_webhook_deliveries_status_created", "status", "created_at", "id"),
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
    )

    id: UUID = Field(primary_key=True)
    event_id: UUID = Field(foreign_key="outbox_events.id", nullable=False)
    endpoint_id: UUID = Field(foreign_key="webhook_endpoints.id", nullable=False)
    status: str = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_attempt_at: datetime | None = timestamp(nullable=True, default_now=False)
    last_status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(String(500), nullable=True))
    delivered_at: datetime | None = timestamp(nullable=True, default_now=False)
    created_at: datetime = timestamp()
