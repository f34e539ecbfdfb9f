"""Identity tables: residents, one-time codes, API clients (merchants, partners), operators, refresh
tokens and token signing keys.

Secrets are never stored in clear: phone numbers as a keyed hash (HMAC-SHA256 with a server key),
one-time codes and refresh tokens as SHA-256 digests, client secrets and passwords with argon2,
partners' webhook secrets encrypted (AES-GCM) because the service must recompute their HMACs.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import (
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    text,
)
from sqlmodel import Field, SQLModel

from api.columns import timestamp


class Resident(SQLModel, table=True):
    """A resident; created at first sign-in, by phone code or by the city identity provider."""

    __tablename__ = "residents"

    id: UUID = Field(primary_key=True)
    phone_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary, unique=True, nullable=True))
    idp_subject: str | None = Field(default=None, sa_column=Column(String(255), unique=True, nullable=True))
    created_at: datetime = timestamp()


class OtpChallenge(SQLModel, table=True):
    """One sent code: valid until ``expires_at``, used at most once, locked after too many wrong tries."""

    __tablename__ = "otp_challenges"
    __table_args__ = (
        Index("ix_otp_challenges_phone_hash_created_at", "phone_hash", "created_at"),
        Index("ix_otp_challenges_expires_at", "expires_at"),
    )

    id: UUID = Field(primary_key=True)
    phone_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    code_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))
    created_at: datetime = timestamp()
    expires_at: datetime = timestamp(default_now=False)
    consumed_at: datetime | None = timestamp(nullable=True, default_now=False)


class Merchant(SQLModel, table=True):
    __tablename__ = "merchants"

    id: UUID = Field(primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(100), unique=True, nullable=True))
    created_at: datetime = timestamp()


class Partner(SQLModel, table=True):
    """A partner data provider (transit, recycling, second-hand) and where to call it back."""

    __tablename__ = "partners"

    id: UUID = Field(primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    api_base_url: str = Field(sa_column=Column(String(500), nullable=False))
    webhook_secret_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(100), unique=True, nullable=True))
    created_at: datetime = timestamp()


class ApiClient(SQLModel, table=True):
    """OAuth2 client credentials of a merchant or partner (``role`` says which ``owner_id`` it is)."""

    __tablename__ = "api_clients"
    __table_args__ = (Index("ix_api_clients_owner_id", "owner_id"),)

    client_id: str = Field(sa_column=Column(String(64), primary_key=True))
    secret_hash: str = Field(sa_column=Column(String(255), nullable=False))
    role: str = Field(sa_column=Column(String(32), nullable=False))
    owner_id: UUID = Field(nullable=False)
    created_at: datetime = timestamp()
    secret_rotated_at: datetime = timestamp()


class Operator(SQLModel, table=True):
    __tablename__ = "operators"

    id: UUID = Field(primary_key=True)
    username: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    password_hash: str = Field(sa_column=Column(String(255), nullable=False))
    role: str = Field(sa_column=Column(String(32), nullable=False))
    created_at: datetime = timestamp()


class RefreshToken(SQLModel, table=True):
    """One refresh token of a sign-in ``family``; rotation marks it used and issues the next one."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index("ix_refresh_tokens_family_id", "family_id"),
        Index("ix_refresh_tokens_subject_id", "subject_id"),
    )

    id: UUID = Field(primary_key=True)
    family_id: UUID = Field(nullable=False)
    token_hash: bytes = Field(sa_column=Column(LargeBinary, unique=True, nullable=False))
    subject_id: UUID = Field(nullable=False)
    role: str = Field(sa_column=Column(String(32), nullable=False))
    issued_at: datetime = timestamp()
    expires_at: datetime = timestamp(default_now=False)
    used_at: datetime | None = timestamp(nullable=True, default_now=False)
    revoked_at: datetime | None = timestamp(nullable=True, default_now=False)
    client_ip: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    user_agent: str | None = Field(default=None, sa_column=Column(String(255), nullable=True))


class TokenSigningKey(SQLModel, table=True):
    """Public keys that sign access tokens; a retired key is published until its last token expires."""

    __tablename__ = "token_signing_keys"

    kid: str = Field(sa_column=Column(String(32), primary_key=True))
    algorithm: str = Field(sa_column=Column(String(16), nullable=False))
    public_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = timestamp()
    retired_at: datetime | None = timestamp(nullable=True, default_now=False)
