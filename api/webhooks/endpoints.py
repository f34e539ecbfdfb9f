"""Registering a merchant's or partner's webhook endpoint: one per owner, its secret shown once.

The first ``PUT`` creates the endpoint and answers its signing secret (``whsec_…``, kept sealed:
the dispatcher must sign with it); a later ``PUT`` changes the URL or the events and keeps the
secret. ``DELETE`` removes the endpoint (its pending deliveries end as dead); a new ``PUT`` then
creates a new endpoint with a new secret, which is how a secret is rotated.
"""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.keys import ServerSecret
from api.webhooks import repository
from api.webhooks.errors import InvalidWebhookUrl, WebhookNotFound
from api.webhooks.events import EVENTS_BY_ROLE, EventType
from api.webhooks.models import WebhookEndpoint
from domain.errors import InvalidInput
from domain.identity import Principal


def check_url(url: str, *, allow_private: bool) -> str:
    """An absolute http(s) URL; with ``allow_private`` off, not a literal loopback, private or link-local address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhookUrl("the URL must be absolute, http:// or https://", field="url")
    if parts.username or parts.password:
        raise InvalidWebhookUrl("the URL must not carry credentials", field="url")
    if not allow_private:
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            address = None
        if parts.hostname == "localhost" or (
            address is not None and (address.is_private or address.is_loopback or address.is_link_local)
        ):
            raise InvalidWebhookUrl("the URL points into a private network", field="url")
    return url


def check_events(principal: Principal, events: list[str]) -> list[str]:
    allowed = EVENTS_BY_ROLE.get(principal.role, frozenset())
    unknown = [e for e in events if e not in {a.value for a in allowed}]
    if unknown:
        names = ", ".join(sorted(a.value for a in allowed))
        raise InvalidInput(
            f"{unknown[0]!r} is not an event a {principal.role.value} can receive; one of {names}", field="events"
        )
    return sorted(set(events))


async def put_endpoint(
    session: AsyncSession,
    secret: ServerSecret,
    principal: Principal,
    url: str,
    events: list[EventType],
    *,
    allow_private: bool,
) -> tuple[WebhookEndpoint, str | None]:
    """Create or change the caller's endpoint; returns it, and its secret when it was just created."""
    url = check_url(url, allow_private=allow_private)
    wanted = check_events(principal, [e.value for e in events])
    role = principal.role.value
    existing = await repository.active_endpoint(session, role, principal.subject_id, for_update=True)
    if existing is not None:
        existing.url, existing.events, existing.updated_at = url, wanted, datetime.now(UTC)
        await session.flush()
        return existing, None
    signing_secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        owner_role=role,
        owner_id=principal.subject_id,
        url=url,
        events=wanted,
        secret_sealed=secret.seal(signing_secret),
    )
    session.add(endpoint)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:  # a concurrent PUT created it first: change that one instead
        return await put_endpoint(session, secret, principal, url, events, allow_private=allow_private)
    await session.refresh(endpoint)
    return endpoint, signing_secret


async def get_endpoint(session: AsyncSession, principal: Principal) -> WebhookEndpoint:
    endpoint = await repository.active_endpoint(session, principal.role.value, principal.subject_id)
    if endpoint is None:
        raise WebhookNotFound("register one with PUT")
    return endpoint


async def remove_endpoint(session: AsyncSession, principal: Principal) -> None:
    """Remove the caller's endpoint, if any (removing none is not an error: DELETE is idempotent)."""
    endpoint = await repository.active_endpoint(session, principal.role.value, principal.subject_id, for_update=True)
    if endpoint is not None:
        endpoint.removed_at = datetime.now(UTC)
        await session.flush()
