"""Identity use cases: signing in (phone code, city ID token, client credentials, operator password),
refresh-token rotation with reuse detection, registering merchants and partners, and the audit log.

Every function works inside the caller's session and only flushes; the request scope commits or
rolls back (errors marked ``keeps_writes`` are committed, so that a wrong code or a replayed refresh
token leaves its trace). Slow hashing (argon2) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.keys import ServerSecret, TokenSigningKey, hash_token
from api.auth.models import (
    ApiClient,
    Merchant,
    Operator,
    OperatorAuditEntry,
    OtpChallenge,
    Partner,
    RateLimitWindow,
    RefreshToken,
    Resident,
)
from api.auth.models import TokenSigningKey as TokenSigningKeyRow
from api.auth.tokens import LEEWAY_S, AccessTokens, IssuedToken
from domain.errors import Conflict, InvalidInput, NotFound, RateLimited
from domain.identity import (
    OPERATOR_ROLES,
    OTP_MAX_ATTEMPTS,
    OTP_TTL,
    AlreadyCreated,
    AlreadyRotated,
    ClientNotFound,
    InvalidCredentials,
    OtpInvalid,
    PartnerKind,
    Principal,
    RefreshTokenInvalid,
    RefreshTokenReused,
    Role,
    SessionNotFound,
    new_otp_code,
    normalize_phone,
    otp_message,
)
from integrations.idp import IdTokenVerifier
from integrations.sms import SmsSender

MIN_OPERATOR_PASSWORD = 12


def password_hasher() -> PasswordHasher:
    """argon2id at the OWASP Password Storage Cheat Sheet's baseline: 19 MiB, 2 passes, 1 lane.

    Used for operator passwords and client secrets; about 40 ms per hash on this project's CI machine.
    """
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@dataclass(frozen=True)
class RateLimits:
    otp_per_phone: int
    otp_per_ip: int
    otp_window_s: int
    login_per_username: int
    login_per_ip: int
    login_window_s: int
    client_failures_per_client: int
    client_failures_per_ip: int
    client_window_s: int


@dataclass
class IdentityRuntime:
    """What the identity services need besides a session; built once by the app factory."""

    secret: ServerSecret
    tokens: AccessTokens
    sms: SmsSender
    idp: IdTokenVerifier
    hasher: PasswordHasher
    limits: RateLimits
    refresh_ttl: timedelta
    #: Verified against when a username or client id is unknown, so that both cases cost the same time.
    unknown_caller_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.unknown_caller_hash = self.hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class SignedIn:
    access: IssuedToken
    refresh_token: str | None
    subject_id: uuid.UUID
    role: Role


@dataclass(frozen=True)
class RequestMeta:
    client_ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class IssuedCredentials:
    client_id: str
    client_secret: str
    webhook_secret: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


# -------------------------------------------------------------------------------------------- rate limits


def _window_start(now: datetime, window_s: int) -> datetime:
    return datetime.fromtimestamp(int(now.timestamp()) // window_s * window_s, UTC)


def _limited(limit: int, window_s: int, now: datetime, what: str = "requests") -> RateLimited:
    retry_after = max(1, int((_window_start(now, window_s) + timedelta(seconds=window_s) - now).total_seconds()))
    return RateLimited(f"at most {limit} {what} per {window_s} s; retry in {retry_after} s", retry_after_s=retry_after)


async def _count_hit(session: AsyncSession, bucket: str, window_s: int, now: datetime) -> int:
    """Add one hit to ``bucket``'s current fixed window; returns the window's hits so far."""
    statement = (
        insert(RateLimitWindow)
        .values(bucket=bucket, window_start=_window_start(now, window_s), hits=1)
        .on_conflict_do_update(
            index_elements=["bucket", "window_start"],
            set_={"hits": RateLimitWindow.hits + 1},  # type: ignore[arg-type]
        )
        .returning(RateLimitWindow.hits)
    )
    return (await session.execute(statement)).scalar_one()


async def hit_rate_limit(session: AsyncSession, bucket: str, limit: int, window_s: int, now: datetime) -> None:
    """Count one hit in ``bucket``'s current fixed window; ``RateLimited`` past ``limit``."""
    if await _count_hit(session, bucket, window_s, now) > limit:
        raise _limited(limit, window_s, now)


async def refuse_after_failures(
    session: AsyncSession, buckets: Sequence[tuple[str, int]], window_s: int, now: datetime
) -> None:
    """``RateLimited`` when any ``(bucket, limit)`` already holds ``limit`` failures in the current window.

    Counting only failures (``_count_hit`` when an attempt fails) leaves honest callers unthrottled.
    """
    rows = await session.execute(
        select(RateLimitWindow.bucket, RateLimitWindow.hits).where(
            RateLimitWindow.bucket.in_([bucket for bucket, _ in buckets]),  # type: ignore[attr-defined]
            RateLimitWindow.window_start == _window_start(now, window_s),
        )
    )
    failures: dict[str, int] = {bucket: hits for bucket, hits in rows}
    for bucket, limit in buckets:
        if failures.get(bucket, 0) >= limit:
            raise _limited(limit, window_s, now, "failed attempts")


# ------------------------------------------------------------------------------------------ token issuing


async def _sign_in(
    session: AsyncSession,
    rt: IdentityRuntime,
    subject_id: uuid.UUID,
    role: Role,
    meta: RequestMeta,
    now: datetime,
    family_id: uuid.UUID | None = None,
) -> SignedIn:
    refresh = "rt_" + secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            id=uuid.uuid4(),
            family_id=family_id or uuid.uuid4(),
            token_hash=hash_token(refresh),
            subject_id=subject_id,
            role=role.value,
            issued_at=now,
            expires_at=now + rt.refresh_ttl,
            client_ip=meta.client_ip,
            user_agent=(meta.user_agent or "")[:255] or None,
        )
    )
    await session.flush()
    return SignedIn(rt.tokens.issue(subject_id, role, now), refresh, subject_id, role)


# --------------------------------------------------------------------------------------------- residents


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
    return await _sign_in(session, rt, resident_id, Role.RESIDENT, meta, now)


async def exchange_id_token(session: AsyncSession, rt: IdentityRuntime, id_token: str, meta: RequestMeta) -> SignedIn:
    """Sign in with the city identity provider's ID token (first sign-in creates the resident)."""
    claims = await rt.idp.verify(id_token)
    subject = claims["sub"]
    resident_id = await _resident_for(session, Resident.idp_subject, subject, {"idp_subject": subject})
    return await _sign_in(session, rt, resident_id, Role.RESIDENT, meta, _now())


async def _resident_for(session: AsyncSession, column: Any, value: Any, values: dict[str, Any]) -> uuid.UUID:
    """The resident with ``column == value``, created if missing (safe under concurrent first sign-ins)."""
    await session.execute(insert(Resident).values(id=uuid.uuid4(), **values).on_conflict_do_nothing())
    return (await session.execute(select(Resident.id).where(column == value))).scalar_one()


async def get_resident(session: AsyncSession, resident_id: uuid.UUID) -> Resident:
    resident = await session.get(Resident, resident_id)
    if resident is None:
        raise NotFound("no such resident")
    return resident


# ------------------------------------------------------------------------------------ clients, operators


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
    now = _now()
    limits = rt.limits
    buckets = [(f"client:id:{client_id[:64]}", limits.client_failures_per_client)]
    if meta.client_ip:
        buckets.append((f"client:ip:{meta.client_ip}", limits.client_failures_per_ip))
    await refuse_after_failures(session, buckets, limits.client_window_s, now)
    client = await session.get(ApiClient, client_id) if client_id else None
    if not await _verify_secret(rt, client.secret_hash if client else None, client_secret) or client is None:
        for bucket, _ in buckets:
            await _count_hit(session, bucket, limits.client_window_s, now)
        raise InvalidCredentials("unknown client or wrong secret", error="invalid_client")
    return rt.tokens.issue(client.owner_id, Role(client.role), now)


async def operator_login(
    session: AsyncSession, rt: IdentityRuntime, username: str, password: str, meta: RequestMeta
) -> SignedIn:
    now = _now()
    limits = rt.limits
    await hit_rate_limit(
        session, f"login:user:{username.lower()[:64]}", limits.login_per_username, limits.login_window_s, now
    )
    if meta.client_ip:
        await hit_rate_limit(session, f"login:ip:{meta.client_ip}", limits.login_per_ip, limits.login_window_s, now)
    operator = (
        await session.execute(select(Operator).where(Operator.username == username))  # type: ignore[arg-type]
    ).scalar_one_or_none()
    if not await _verify_secret(rt, operator.password_hash if operator else None, password) or operator is None:
        raise InvalidCredentials("wrong username or password")
    return await _sign_in(session, rt, operator.id, Role(operator.role), meta, now)


# ----------------------------------------------------------------------------------------- refresh tokens


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
    return await _sign_in(session, rt, stored.subject_id, Role(stored.role), meta, now, family_id=stored.family_id)


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


@dataclass(frozen=True)
class SessionInfo:
    id: uuid.UUID
    signed_in_at: datetime
    last_refreshed_at: datetime
    expires_at: datetime
    client_ip: str | None
    user_agent: str | None


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


# -------------------------------------------------------------------------------- operator administration


async def _audit(
    session: AsyncSession,
    actor: Principal | None,
    actor_name: str,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any],
    meta: RequestMeta,
) -> None:
    session.add(
        OperatorAuditEntry(
            operator_id=actor.subject_id if actor else None,
            operator_username=actor_name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details,
            client_ip=meta.client_ip,
        )
    )
    await session.flush()


async def record_operator_action(
    session: AsyncSession,
    actor: Principal,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any],
    meta: RequestMeta,
) -> None:
    """Append an operator's write to the audit log (for other modules' operator routes)."""
    await _audit(session, actor, await _operator_name(session, actor), action, target_type, target_id, details, meta)


async def _operator_name(session: AsyncSession, actor: Principal) -> str:
    operator = await session.get(Operator, actor.subject_id)
    if operator is None:
        raise InvalidCredentials("this operator no longer exists")
    return operator.username


async def _new_client(session: AsyncSession, rt: IdentityRuntime, role: Role, owner_id: uuid.UUID) -> tuple[str, str]:
    prefix = {Role.MERCHANT: "mer", Role.PARTNER: "par"}[role]
    client_id = f"{prefix}_{secrets.token_hex(8)}"
    client_secret = "cs_" + secrets.token_urlsafe(32)
    secret_hash = await asyncio.to_thread(rt.hasher.hash, client_secret)
    session.add(ApiClient(client_id=client_id, secret_hash=secret_hash, role=role.value, owner_id=owner_id))
    await session.flush()
    return client_id, client_secret


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


async def _flush_new(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent request with the same Idempotency-Key won
        raise AlreadyCreated("a concurrent request with this Idempotency-Key created it") from exc


async def register_merchant(
    session: AsyncSession,
    rt: IdentityRuntime,
    actor: Principal,
    name: str,
    meta: RequestMeta,
    idempotency_key: str | None = None,
) -> tuple[Merchant, IssuedCredentials]:
    actor_name = await _operator_name(session, actor)
    await _refuse_repeat(session, Merchant, idempotency_key)
    merchant = Merchant(id=uuid.uuid4(), name=name, idempotency_key=idempotency_key)
    session.add(merchant)
    await _flush_new(session)
    client_id, client_secret = await _new_client(session, rt, Role.MERCHANT, merchant.id)
    await _audit(
        session,
        actor,
        actor_name,
        "merchant.create",
        "merchant",
        str(merchant.id),
        {"name": name, "client_id": client_id},
        meta,
    )
    await session.refresh(merchant)
    return merchant, IssuedCredentials(client_id, client_secret)


async def register_partner(
    session: AsyncSession,
    rt: IdentityRuntime,
    actor: Principal,
    name: str,
    kind: PartnerKind,
    api_base_url: str,
    meta: RequestMeta,
    idempotency_key: str | None = None,
) -> tuple[Partner, IssuedCredentials]:
    actor_name = await _operator_name(session, actor)
    await _refuse_repeat(session, Partner, idempotency_key)
    webhook_secret = "whsec_" + secrets.token_urlsafe(32)
    partner = Partner(
        id=uuid.uuid4(),
        name=name,
        kind=kind.value,
        api_base_url=api_base_url,
        webhook_secret_sealed=rt.secret.seal(webhook_secret),
        idempotency_key=idempotency_key,
    )
    session.add(partner)
    await _flush_new(session)
    client_id, client_secret = await _new_client(session, rt, Role.PARTNER, partner.id)
    await _audit(
        session,
        actor,
        actor_name,
        "partner.create",
        "partner",
        str(partner.id),
        {"name": name, "kind": kind.value, "api_base_url": api_base_url, "client_id": client_id},
        meta,
    )
    await session.refresh(partner)
    return partner, IssuedCredentials(client_id, client_secret, webhook_secret)


async def rotate_client_secret(
    session: AsyncSession,
    rt: IdentityRuntime,
    actor: Principal,
    client_id: str,
    meta: RequestMeta,
    idempotency_key: str | None = None,
) -> IssuedCredentials:
    """A new secret for a client; the old one stops working when this commits.

    A retry with the rotation's Idempotency-Key rotates nothing: like a repeated creation it names the
    earlier rotation, whose answer held the secret (only its hash is kept). The key is recorded in the
    audit entry, and the client's row lock makes two concurrent retries see each other.
    """
    actor_name = await _operator_name(session, actor)
    client = await session.get(ApiClient, client_id, with_for_update=True)
    if client is None:
        raise ClientNotFound()
    if idempotency_key is not None:
        earlier = (
            await session.execute(
                select(OperatorAuditEntry.at).where(
                    OperatorAuditEntry.action == "client.rotate_secret",
                    OperatorAuditEntry.details["client_id"].astext == client_id,
                    OperatorAuditEntry.details["idempotency_key"].astext == idempotency_key,
                )
            )
        ).scalar_one_or_none()
        if earlier is not None:
            raise AlreadyRotated(
                f"this Idempotency-Key already rotated the secret of {client_id} at {earlier.isoformat()}; the new "
                "secret was shown once then (rotate again with a new key if it was lost)"
            )
    client_secret = "cs_" + secrets.token_urlsafe(32)
    client.secret_hash = await asyncio.to_thread(rt.hasher.hash, client_secret)
    client.secret_rotated_at = _now()
    await session.flush()
    await _audit(
        session,
        actor,
        actor_name,
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


async def get_client_owner(session: AsyncSession, principal: Principal) -> Merchant | Partner:
    model = Merchant if principal.role is Role.MERCHANT else Partner
    owner = await session.get(model, principal.subject_id)
    if owner is None:
        raise NotFound("this client's owner no longer exists")
    return owner


async def create_operator(
    session: AsyncSession, hasher: PasswordHasher, username: str, password: str, role: Role, meta: RequestMeta
) -> Operator:
    """Create an operator (from the CLI; recorded in the audit log as done by ``cli``)."""
    if role not in OPERATOR_ROLES:
        raise InvalidInput("an operator's role is operator_admin or operator_auditor", field="role")
    if not (3 <= len(username) <= 64) or not username.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise InvalidInput("a username is 3-64 letters, digits, '.', '_' or '-'", field="username")
    if len(password) < MIN_OPERATOR_PASSWORD:
        raise InvalidInput(f"an operator password has at least {MIN_OPERATOR_PASSWORD} characters", field="password")
    existing = (await session.execute(select(Operator.id).where(Operator.username == username))).scalar_one_or_none()  # type: ignore[arg-type]
    if existing is not None:
        raise Conflict(f"an operator named {username!r} exists already")
    operator = Operator(
        id=uuid.uuid4(),
        username=username,
        password_hash=await asyncio.to_thread(hasher.hash, password),
        role=role.value,
    )
    session.add(operator)
    await session.flush()
    await _audit(
        session,
        None,
        "cli",
        "operator.create",
        "operator",
        str(operator.id),
        {"username": username, "role": role.value},
        meta,
    )
    return operator


async def audit_log(session: AsyncSession, before_id: int | None, limit: int) -> Sequence[OperatorAuditEntry]:
    """Newest entries first; page with ``before_id`` (the smallest id of the previous page)."""
    query = select(OperatorAuditEntry).order_by(OperatorAuditEntry.id.desc()).limit(limit)  # type: ignore[union-attr]
    if before_id is not None:
        query = query.where(OperatorAuditEntry.id < before_id)  # type: ignore[operator]
    return (await session.execute(query)).scalars().all()


# ------------------------------------------------------------------------------------- token signing keys


async def publish_signing_key(session: AsyncSession, key: TokenSigningKey) -> None:
    """Record this process's token key; any other current key becomes retired (published until its tokens expire)."""
    await session.execute(
        insert(TokenSigningKeyRow)
        .values(kid=key.kid, algorithm=key.algorithm, public_key=key.public_bytes)
        .on_conflict_do_update(index_elements=["kid"], set_={"retired_at": None})
    )
    await session.execute(
        update(TokenSigningKeyRow)
        .where(TokenSigningKeyRow.kid != key.kid, TokenSigningKeyRow.retired_at.is_(None))  # type: ignore[arg-type, union-attr]
        .values(retired_at=func.now())
    )


async def published_keys(session: AsyncSession, access_ttl: timedelta) -> dict[str, Ed25519PublicKey]:
    """Keys that may still have valid tokens out: the current ones, and those retired less than a token lifetime ago."""
    grace = access_ttl + timedelta(seconds=LEEWAY_S)
    rows = (
        await session.execute(
            select(TokenSigningKeyRow).where(
                TokenSigningKeyRow.retired_at.is_(None)  # type: ignore[union-attr]
                | (TokenSigningKeyRow.retired_at > func.now() - grace)  # type: ignore[operator]
            )
        )
    ).scalars()
    return {row.kid: Ed25519PublicKey.from_public_bytes(row.public_key) for row in rows}
