"""Signing in: residents by phone code or the city identity provider's ID token, merchants and
partners by client credentials, operators by password. Each way ends in an access token (and, but
for client credentials, a refresh token: ``sessions``).

Slow hashing (argon2) runs in a worker thread. An unknown username or client id is checked against
a dummy hash, so that it costs the same time as a wrong secret.
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.identity.models import ApiClient, Operator, OtpChallenge, Resident
from api.identity.runtime import IdentityRuntime
from api.database import lookup_session
from api.rate_limits import hit_rate_limit
from api.identity.sessions import SignedIn, start_session
from api.identity.tokens import IssuedToken
from api.request_meta import RequestMeta
from domain.errors import NotFound
from domain.identity import (
    OTP_MAX_ATTEMPTS,
    OTP_TTL,
    InvalidCredentials,
    OtpInvalid,
    Role,
    new_otp_code,
    normalize_phone,
    otp_message,
)


def _now() -> datetime:
    return datetime.now(UTC)


async def request_otp(session: AsyncSession, rt: IdentityRuntime, raw_phone: str, meta: RequestMeta) -> int:
    """Send a one-time code to a phone; returns its lifetime in seconds."""
    now = _now()
    phone = normalize_phone(raw_phone)
    phone_hash = rt.secret.phone_hash(phone)
    limits = rt.limits
    await hit_rate_limit(session, f"otp:phone:{phone_hash.hex()[:40]}", limits.otp_per_phone, limits.otp_window_s, now)
    if meta.client_ip:
        await hit_rate_limit(session, f"otp:ip:{meta.client_ip}", limits.otp_per_ip, limits.otp_window_s, now)
    code = new_otp_code()
    challenge_id = uuid.uuid4()
    session.add(
        OtpChallenge(
            id=challenge_id,
            phone_hash=phone_hash,
            code_hash=rt.secret.otp_hash(challenge_id, code),
            created_at=now,
            expires_at=now + OTP_TTL,
        )
    )
    await session.flush()
    await rt.sms.send(phone, otp_message(code))
    return int(OTP_TTL.total_seconds())


async def verify_otp(
    session: AsyncSession, rt: IdentityRuntime, raw_phone: str, code: str, meta: RequestMeta
) -> SignedIn:
    """Check the latest code sent to a phone; the first success signs in (creating the resident)."""
    now = _now()
    phone_hash = rt.secret.phone_hash(normalize_phone(raw_phone))
    challenge = (
        await session.execute(
            select(OtpChallenge)
            .where(OtpChallenge.phone_hash == phone_hash)  # type: ignore[arg-type]
            .order_by(OtpChallenge.created_at.desc())  # type: ignore[union-attr]
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if challenge is None or challenge.consumed_at is not None or challenge.expires_at <= now:
        raise OtpInvalid("no valid code for this phone; request a new one", reason="expired_or_used")
    if challenge.attempts >= OTP_MAX_ATTEMPTS:
        raise OtpInvalid("too many wrong codes; request a new one", reason="locked")
    if not hmac.compare_digest(challenge.code_hash, rt.secret.otp_hash(challenge.id, code)):
        challenge.attempts += 1
        await session.flush()
        left = OTP_MAX_ATTEMPTS - challenge.attempts
        raise OtpInvalid(
            "wrong code" + (f"; {left} tries left" if left else "; the code is now locked"),
            reason="wrong_code" if left else "locked",
            attempts_left=left,
        )
    challenge.consumed_at = now
    resident_id = await _resident_for(session, Resident.phone_hash, phone_hash, {"phone_hash": phone_hash})
    return await start_session(session, rt, resident_id, Role.RESIDENT, meta, now)


async def exchange_id_token(session: AsyncSession, rt: IdentityRuntime, id_token: str, meta: RequestMeta) -> SignedIn:
    """Sign in with the city identity provider's ID token (first sign-in creates the resident)."""
    claims = await rt.idp.verify(id_token)
    subject = claims["sub"]
    resident_id = await _resident_for(session, Resident.idp_subject, subject, {"idp_subject": subject})
    return await start_session(session, rt, resident_id, Role.RESIDENT, meta, _now())


async def _resident_for(session: AsyncSession, column: Any, value: Any, values: dict[str, Any]) -> uuid.UUID:
    """The resident with ``column == value``, created if missing (safe under concurrent first sign-ins)."""
    await session.execute(insert(Resident).values(id=uuid.uuid4(), **values).on_conflict_do_nothing())
    return (await session.execute(select(Resident.id).where(column == value))).scalar_one()


async def get_resident(session: AsyncSession, resident_id: uuid.UUID) -> Resident:
    resident = await session.get(Resident, resident_id)
    if resident is None:
        raise NotFound("no such resident")
    return resident


async def _verify_secret(rt: IdentityRuntime, stored_hash: str | None, secret: str) -> bool:
    def check() -> bool:
        try:
            return rt.hasher.verify(stored_hash or rt.unknown_caller_hash, secret) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


async def client_credentials(
    session: AsyncSession, rt: IdentityRuntime, client_id: str, client_secret: str, meta: RequestMeta
) -> IssuedToken:
    """OAuth2 client credentials grant: an access token for a merchant or partner client (no refresh token).

    Failed attempts are counted per client id and per client IP; past the limit the grant is refused
    before any secret is hashed, which bounds both guessing and the CPU an attacker can make us spend.
    """
    now, guard, account = _now(), rt.limits.client, client_id[:64]
    async with lookup_session(session) as lookup:
        await guard.before_attempt(lookup, "client", account, meta.client_ip, now)
    client = await session.get(ApiClient, client_id) if client_id else None
    if not await _verify_secret(rt, client.secret_hash if client else None, client_secret) or client is None:
        await guard.failed(session, "client", account, meta.client_ip, now)
        raise InvalidCredentials("unknown client or wrong secret", error="invalid_client")
    return rt.tokens.issue(client.owner_id, Role(client.role), now)


async def operator_login(
    session: AsyncSession, rt: IdentityRuntime, username: str, password: str, meta: RequestMeta
) -> SignedIn:
    now, guard, account = _now(), rt.limits.login, username.lower()[:64]
    async with lookup_session(session) as lookup:
        await guard.before_attempt(lookup, "login", account, meta.client_ip, now)
    operator = (
        await session.execute(select(Operator).where(Operator.username == username))  # type: ignore[arg-type]
    ).scalar_one_or_none()
    if not await _verify_secret(rt, operator.password_hash if operator else None, password) or operator is None:
        await guard.failed(session, "login", account, meta.client_ip, now)
        raise InvalidCredentials("wrong username or password")
    return await start_session(session, rt, operator.id, Role(operator.role), meta, now)
