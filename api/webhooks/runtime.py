"""What the webhooks feature needs besides a session, and its dispatcher, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.keys import ServerSecret
from api.settings import Settings
from api.webhooks.dispatcher import DeliveryPolicy, Dispatcher
from integrations.webhooks import WebhookSender


@dataclass(frozen=True)
class WebhooksRuntime:
    secret: ServerSecret
    #: Whether endpoints may be on loopback, private or link-local addresses (``CARBON_WEBHOOK_ALLOW_PRIVATE``).
    allow_private: bool


def open_webhooks(settings: Settings, secret: ServerSecret) -> WebhooksRuntime:
    return WebhooksRuntime(secret, settings.webhook_allow_private)


def open_dispatcher(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], secret: ServerSecret, http: httpx.AsyncClient
) -> Dispatcher:
    """The outbox dispatcher of this worker (started and stopped by the app's lifespan)."""
    policy = DeliveryPolicy(
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
        max_backoff_s=settings.webhook_max_backoff_s,
        breaker_threshold=settings.webhook_breaker_threshold,
        breaker_cooldown_s=settings.webhook_breaker_cooldown_s,
        lease_s=2 * settings.webhook_timeout_s + 30,
    )
    return Dispatcher(sessionmaker, WebhookSender(http), secret, policy, settings.webhook_poll_interval_s)
