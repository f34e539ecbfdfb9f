"""Who may call carbon-rewards, and the rules of signing in that do not depend on storage or the web.

Four kinds of callers: residents (mobile app), merchants and partner systems (OAuth2 client
credentials), and operators (admin or read-only auditor). Every authenticated request carries a
``Principal``; route guards check its role and object-level checks its ``subject_id``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from uuid import UUID

from domain.errors import Conflict, InvalidInput, NotFound, Unauthenticated


class Role(StrEnum):
    RESIDENT = "resident"
    MERCHANT = "merchant"
    PARTNER = "partner"
    OPERATOR_ADMIN = "operator_admin"
    OPERATOR_AUDITOR = "operator_auditor"


OPERATOR_ROLES = frozenset({Role.OPERATOR_ADMIN, Role.OPERATOR_AUDITOR})

#: What each role's access token may do; routes check roles, scopes tell clients what they got.
SCOPES_BY_ROLE: dict[Role, tuple[str, ...]] = {
    Role.RESIDENT: ("me",),
    Role.MERCHANT: ("merchant",),
    Role.PARTNER: ("partner", "actions:write"),
    Role.OPERATOR_ADMIN: ("operator:read", "operator:write"),
    Role.OPERATOR_AUDITOR: ("operator:read",),
}


class PartnerKind(StrEnum):
    TRANSIT = "transit"
    RECYCLING = "recycling"
    SECOND_HAND = "second_hand"


@dataclass(frozen=True)
class Principal:
    """The verified caller of one request."""

    subject_id: UUID
    role: Role
    token_id: str
    scopes: tuple[str, ...] = field(default=())

    @property
    def is_operator(self) -> bool:
        return self.role in OPERATOR_ROLES

    @property
    def owner_ref(self) -> str:
        """How ledger accounts name this caller as their owner: ``resident:<id>``, ``merchant:<id>``…"""
        return f"{self.role.value}:{self.subject_id}"


# ------------------------------------------------------------------------------------ one-time codes

OTP_LENGTH = 6
OTP_TTL = timedelta(minutes=5)
OTP_MAX_ATTEMPTS = 5

_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
_CN_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")


def normalize_phone(raw: str) -> str:
    """The E.164 form of a phone number; a bare 11-digit mainland mobile number gets +86.

    Spaces, dashes and parentheses are ignored; anything else that is not E.164 is refused.
    """
    compact = re.sub(r"[\s\-()]", "", raw)
    if _CN_MOBILE.match(compact):
        compact = "+86" + compact
    elif compact.startswith("0086"):
        compact = "+" + compact[2:]
    if not _E164.match(compact):
        raise InvalidInput("phone must be an E.164 number such as +8613800138000", field="phone")
    return compact


def new_otp_code() -> str:
    """A uniformly random 6-digit code (leading zeros kept)."""
    return f"{secrets.randbelow(10**OTP_LENGTH):0{OTP_LENGTH}d}"


def otp_message(code: str) -> str:
    minutes = int(OTP_TTL.total_seconds() // 60)
    return f"[carbon-rewards] Your sign-in code is {code}. It expires in {minutes} minutes. Never share it."


class OtpInvalid(Unauthenticated):
    """A wrong, expired, used or locked code; the attempt it cost is kept."""

    code = "otp_invalid"
    title = "The code is wrong, expired or already used"
    keeps_writes = True


class InvalidCredentials(Unauthenticated):
    """Wrong secret; the rate-limit hit the attempt cost is kept."""

    code = "invalid_credentials"
    title = "Wrong username, password, client id or secret"
    keeps_writes = True


class SessionNotFound(NotFound):
    code = "session_not_found"
    title = "No such session"


class ClientNotFound(NotFound):
    code = "client_not_found"
    title = "No such API client"


class RefreshTokenInvalid(Unauthenticated):
    code = "refresh_token_invalid"
    title = "The refresh token is unknown, expired or revoked"


class RefreshTokenReused(Unauthenticated):
    """A refresh token came back after it was rotated: it was copied. The whole family is revoked."""

    code = "refresh_token_reused"
    title = "The refresh token was already used; every session of this sign-in is revoked"
    keeps_writes = True


class TokenInvalid(Unauthenticated):
    code = "token_invalid"
    title = "The access token is not valid"


class TokenExpired(Unauthenticated):
    code = "token_expired"
    title = "The access token has expired"


class AlreadyCreated(Conflict):
    code = "already_created"
    title = "A request with this Idempotency-Key already created the object"


class AlreadyRotated(Conflict):
    code = "already_rotated"
    title = "A request with this Idempotency-Key already rotated the secret"
