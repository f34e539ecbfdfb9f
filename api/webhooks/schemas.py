"""Request and response bodies of the webhooks routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from msgspec import Meta, Struct

from api.webhooks.events import EventType
from api.webhooks.models import OutboxEvent, WebhookDelivery, WebhookEndpoint


class WebhookIn(Struct, forbid_unknown_fields=True):
    url: Annotated[str, Meta(min_length=1, max_length=500, description="Absolute http(s) URL receiving the events")]
    events: Annotated[list[EventType], Meta(min_length=1, max_length=16)]


class WebhookOut(Struct):
    url: str
    events: list[str]
    created_at: datetime
    updated_at: datetime
    #: The signing secret: shown once, when the endpoint is created; null afterwards.
    secret: str | None = None

    @classmethod
    def of(cls, endpoint: WebhookEndpoint, secret: str | None = None) -> WebhookOut:
        return cls(endpoint.url, list(endpoint.events), endpoint.created_at, endpoint.updated_at, secret)


DeliveryStatus = Literal["pending", "delivered", "dead"]


class DeliveryOut(Struct):
    id: UUID
    event_id: UUID
    event_type: str
    owner_role: str
    owner_id: UUID
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, delivery: WebhookDelivery, event: OutboxEvent, endpoint: WebhookEndpoint) -> DeliveryOut:
        return cls(
            id=delivery.id,
            event_id=event.id,
            event_type=event.type,
            owner_role=event.owner_role,
            owner_id=event.owner_id,
            url=endpoint.url,
            status=delivery.status,
            attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at,
            last_attempt_at=delivery.last_attempt_at,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            delivered_at=delivery.delivered_at,
            created_at=delivery.created_at,
        )


class DeliveryPage(Struct):
    items: list[DeliveryOut]
    next_cursor: str | None


class RedeliveryOut(Struct):
    id: UUID
    status: str
    attempts: int
    next_attempt_at: datetime
