"""Sign-in sessions: refresh tokens, their rotation with reuse detection, and the caller's devices.

A sign-in is a family of refresh tokens. Each refresh uses one up and issues the next; a token
presented twice was copied, so its whole family is revoked. Tokens are stored as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.identity.models import RefreshToken
from api.identity.runtime import IdentityRuntime
from api.identity.tokens import IssuedToken
from api.request_meta import RequestMeta
from domain.identity import RefreshTokenInvalid, RefreshTokenReused, Role, SessionNotFound


@dataclass(frozen=True)
class SignedIn:
    access: IssuedToken
    refresh_token: str | None
    subject_id: uuid.UUID
    role: Role


@dataclass(frozen=True)
class SessionInfo:
    id: uuid.UUID
    signed_in_at: datetime
    last_refreshed_at: datetime
    expires_at: datetime
    client_ip: str | None
    user_agent: str | None


def hash_token(token: str) -> bytes:
    """Digest under which an opaque high-entropy token (a refresh token) is stored and looked up."""
    return hashlib.sha256(token.encode()).digest()


def _now() -> datetime:
    return datetime.now(UTC)


async def start_session(
    session: AsyncSession,
    rt: IdentityRuntime,
    subject_id: uuid.UUID,
    role: Role,
    meta: RequestMeta,
    now: datetime,
    family_id: uuid.UUID | None = None,
) -> SignedIn:
    """An access token and a new refresh token (of a new sign-in, or of ``family_id`` when refreshing)."""
    refresh_token = "rt_" + secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            id=uuid.uuid4(),
            family_id=family_id or uuid.uuid4(),
            token_hash=hash_token(refresh_token),
            subject_id=subject_id,
            role=role.value,
            issued_at=now,
            expires_at=now + rt.refresh_ttl,
            client_ip=meta.client_ip,
            user_agent=(meta.user_agent or "")[:255] or None,
        )
    )
    await session.flush()
    return SignedIn(rt.tokens.issue(subject_id, role, now), refresh_token, subject_id, role)


async def refresh(session: AsyncSession, rt: IdentityRuntime, refresh_token: str, meta: RequestMeta) -> SignedIn:
    """Rotate a refresh token. A token presented twice was copied: its whole family is revoked."""
    now = _now()
    stored = (
        await session.execute(
            select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token)).with_for_update()  # type: ignore[arg-type]
        )
    ).scalar_one_or_none()
    if stored is None or stored.revoked_at is not None or stored.expires_at <= now:
        raise RefreshTokenInvalid()
    if stored.used_at is not None:
        await _revoke_family(session, stored.family_id, now)
        raise RefreshTokenReused()
    stored.used_at = now
    await session.flush()
    return await start_session(session, rt, stored.subject_id, Role(stored.role), meta, now, family_id=stored.family_id)


async def logout(session: AsyncSession, refresh_token: str) -> None:
    """Revoke the sign-in a refresh token belongs to (unknown tokens are ignored: logging out is idempotent)."""
    family_id = (
        await session.execute(
            select(RefreshToken.family_id).where(RefreshToken.token_hash == hash_token(refresh_token))  # type: ignore[arg-type]
        )
    ).scalar_one_or_none()
    if family_id is not None:
        await _revoke_family(session, family_id, _now())


async def _revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))  # type: ignore[arg-type, union-attr]
        .values(revoked_at=now)
    )


async def list_sessions(session: AsyncSession, subject_id: uuid.UUID) -> list[SessionInfo]:
    """The caller's active sign-ins (refresh-token families with an unused, unrevoked, unexpired token)."""
    now = _now()
    first = (
        select(RefreshToken.family_id, func.min(RefreshToken.issued_at).label("signed_in_at"))
        .where(RefreshToken.subject_id == subject_id)  # type: ignore[arg-type]
        .group_by(RefreshToken.family_id)
        .subquery()
    )
    rows = await session.execute(
        select(RefreshToken, first.c.signed_in_at)
        .join(first, first.c.family_id == RefreshToken.family_id)
        .where(
            RefreshToken.subject_id == subject_id,  # type: ignore[arg-type]
            RefreshToken.used_at.is_(None),  # type: ignore[union-attr]
            RefreshToken.revoked_at.is_(None),  # type: ignore[union-attr]
            RefreshToken.expires_at > now,  # type: ignore[arg-type]
        )
        .order_by(RefreshToken.issued_at.desc())  # type: ignore[union-attr]
    )
    return [
        SessionInfo(token.family_id, signed_in_at, token.issued_at, token.expires_at, token.client_ip, token.user_agent)
        for token, signed_in_at in rows
    ]


async def revoke_session(session: AsyncSession, subject_id: uuid.UUID, family_id: uuid.UUID) -> None:
    """Sign out one of the caller's sessions; someone else's session is ``NotFound`` (never revealed)."""
    owner = (
        await session.execute(
            select(RefreshToken.subject_id).where(RefreshToken.family_id == family_id).limit(1)  # type: ignore[arg-type]
        )
    ).scalar_one_or_none()
    if owner != subject_id:
        raise SessionNotFound()
    await _revoke_family(session, family_id, _now())
