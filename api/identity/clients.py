"""API clients: registering merchants and partners (one code path for both), rotating a client's
secret, and listing them. Each write is recorded in the operator audit log.

A client's secret is shown once, in the answer that created or rotated it; only its argon2 hash is
kept. A partner also gets a webhook secret, kept sealed because the service must recompute its HMACs.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_log import Actor, record, recorded_at
from api.identity.models import ApiClient, Merchant, Partner
from api.identity.runtime import IdentityRuntime
from api.request_meta import RequestMeta
from domain.errors import NotFound
from domain.identity import AlreadyCreated, AlreadyRotated, ClientNotFound, PartnerKind, Principal, Role

#: What each kind of client owner is called in client ids, audit entries and messages.
_OWNER_ROLE: dict[type[Merchant | Partner], Role] = {Merchant: Role.MERCHANT, Partner: Role.PARTNER}
_CLIENT_ID_PREFIX = {Role.MERCHANT: "mer", Role.PARTNER: "par"}


@dataclass(frozen=True)
class IssuedCredentials:
    client_id: str
    client_secret: str
    webhook_secret: str | None = None


async def register_merchant(
    session: AsyncSession,
    rt: IdentityRuntime,
    actor: Actor,
    name: str,
    meta: RequestMeta,
    idempotency_key: str | None = None,
) -> tuple[Merchant, IssuedCredentials]:
    merchant = Merchant(id=uuid.uuid4(), name=name, idempotency_key=idempotency_key)
    issued = await _register(session, rt, actor, merchant, {"name": name}, meta)
    return merchant, issued


async def register_partner(
    session: AsyncSession,
    rt: IdentityRuntime,
    actor: Actor,
    name: str,
    kind: PartnerKind,
    api_base_url: str,
    meta: RequestMeta,
    idempotency_key: str | None = None,
) -> tuple[Partner, IssuedCredentials]:
    webhook_secret = "whsec_" + secrets.token_urlsafe(32)
    partner = Partner(
        id=uuid.uuid4(),
        name=name,
        kind=kind.value,
        api_base_url=api_base_url,
        webhook_secret_sealed=rt.secret.seal(webhook_secret),
        idempotency_key=idempotency_key,
    )
    details = {"name": name, "kind": kind.value, "api_base_url": api_base_url}
    issued = await _register(session, rt, actor, partner, details, meta, webhook_secret)
    return partner, issued


async def _register(
    session: AsyncSession,
    rt: IdentityRuntime,
    actor: Actor,
    owner: Merchant | Partner,
    details: dict[str, Any],
    meta: RequestMeta,
    webhook_secret: str | None = None,
) -> IssuedCredentials:
    """Store a new client owner with its credentials, once per Idempotency-Key, and audit it."""
    role = _OWNER_ROLE[type(owner)]
    await _refuse_repeat(session, type(owner), owner.idempotency_key)
    session.add(owner)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent request with the same Idempotency-Key won
        raise AlreadyCreated("a concurrent request with this Idempotency-Key created it") from exc
    client_id = f"{_CLIENT_ID_PREFIX[role]}_{secrets.token_hex(8)}"
    client_secret, secret_hash = await _new_secret(rt)
    session.add(ApiClient(client_id=client_id, secret_hash=secret_hash, role=role.value, owner_id=owner.id))
    await session.flush()
    await record(
        session, actor, f"{role.value}.create", role.value, str(owner.id), {**details, "client_id": client_id}, meta
    )
    await session.refresh(owner)
    return IssuedCredentials(client_id, client_secret, webhook_secret)


async def _new_secret(rt: IdentityRuntime) -> tuple[str, str]:
    """A fresh client secret (shown once) and the argon2 hash that is kept of it."""
    client_secret = "cs_" + secrets.token_urlsafe(32)
    return client_secret, await asyncio.to_thread(rt.hasher.hash, client_secret)


async def _refuse_repeat(session: AsyncSession, model: Any, idempotency_key: str | None) -> None:
    """A second creation with one Idempotency-Key names the first instead of creating a twin.

    The secrets were shown once, with the first response; an operator who lost them rotates them.
    """
    if idempotency_key is None:
        return
    existing = (
        await session.execute(select(model.id).where(model.idempotency_key == idempotency_key))
    ).scalar_one_or_none()
    if existing is not None:
        raise AlreadyCreated(
            f"this Idempotency-Key already created {model.__tablename__[:-1]} {existing}; its credentials were "
            "shown once then (rotate the client secret if they were lost)",
            id=str(existing),
        )


async def rotate_client_secret(
    session: AsyncSession,
    rt: IdentityRuntime,
    actor: Actor,
    client_id: str,
    meta: RequestMeta,
    idempotency_key: str | None = None,
) -> IssuedCredentials:
    """A new secret for a client; the old one stops working when this commits.

    A retry with the rotation's Idempotency-Key rotates nothing: like a repeated creation it names the
    earlier rotation, whose answer held the secret (only its hash is kept). The key is recorded in the
    audit entry, and the client's row lock makes two concurrent retries see each other.
    """
    client = await session.get(ApiClient, client_id, with_for_update=True)
    if client is None:
        raise ClientNotFound()
    if idempotency_key is not None:
        earlier = await recorded_at(
            session, "client.rotate_secret", {"client_id": client_id, "idempotency_key": idempotency_key}
        )
        if earlier is not None:
            raise AlreadyRotated(
                f"this Idempotency-Key already rotated the secret of {client_id} at {earlier.isoformat()}; the new "
                "secret was shown once then (rotate again with a new key if it was lost)"
            )
    client_secret, client.secret_hash = await _new_secret(rt)
    client.secret_rotated_at = datetime.now(UTC)
    await session.flush()
    await record(
        session,
        actor,
        "client.rotate_secret",
        client.role,
        str(client.owner_id),
        {"client_id": client_id, **({"idempotency_key": idempotency_key} if idempotency_key else {})},
        meta,
    )
    return IssuedCredentials(client_id, client_secret)


async def list_merchants(session: AsyncSession) -> Sequence[tuple[Merchant, list[str]]]:
    return await _with_clients(session, Merchant)


async def list_partners(session: AsyncSession) -> Sequence[tuple[Partner, list[str]]]:
    return await _with_clients(session, Partner)


async def _with_clients(session: AsyncSession, model: Any) -> list[tuple[Any, list[str]]]:
    owners = (await session.execute(select(model).order_by(model.created_at))).scalars().all()
    clients = (
        await session.execute(select(ApiClient).where(ApiClient.owner_id.in_([o.id for o in owners])))  # type: ignore[attr-defined]
    ).scalars()
    by_owner: dict[uuid.UUID, list[str]] = {}
    for client in clients:
        by_owner.setdefault(client.owner_id, []).append(client.client_id)
    return [(owner, sorted(by_owner.get(owner.id, []))) for owner in owners]


async def get_client_owner(session: AsyncSession, principal: Principal) -> tuple[Merchant | Partner, list[str]]:
    """The calling merchant or partner, and its client ids."""
    model = Merchant if principal.role is Role.MERCHANT else Partner
    owner = await session.get(model, principal.subject_id)
    if owner is None:
        raise NotFound("this client's owner no longer exists")
    rows = await session.execute(
        select(ApiClient.client_id).where(ApiClient.owner_id == owner.id).order_by(ApiClient.client_id)  # type: ignore[arg-type]
    )
    return owner, list(rows.scalars())


async def find_partner(session: AsyncSession, partner_id: uuid.UUID) -> Partner | None:
    """A registered partner, for the features that call partners back or check their signatures."""
    return await session.get(Partner, partner_id)
