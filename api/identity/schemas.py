"""Request and response bodies of the identity routes (never the table models themselves)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from msgspec import Meta, Struct

from api.identity.clients import IssuedCredentials
from api.identity.models import Merchant, Partner
from api.identity.sessions import SessionInfo, SignedIn
from api.identity.tokens import IssuedToken
from domain.identity import PartnerKind
from domain.text import check_names

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Secret = Annotated[str, Meta(min_length=1, max_length=1024)]


class OtpRequest(Struct, forbid_unknown_fields=True):
    phone: Annotated[str, Meta(min_length=6, max_length=32, examples=["+8613800138000"])]


class OtpSent(Struct):
    expires_in: int


class OtpVerify(Struct, forbid_unknown_fields=True):
    phone: Annotated[str, Meta(min_length=6, max_length=32)]
    code: Annotated[str, Meta(pattern=r"^[0-9]{6}$")]


class IdTokenExchange(Struct, forbid_unknown_fields=True):
    id_token: Annotated[str, Meta(min_length=1, max_length=8192)]


class OperatorLogin(Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=64)]
    password: Secret

    def __post_init__(self) -> None:
        check_names(username=self.username)


class RefreshRequest(Struct, forbid_unknown_fields=True):
    refresh_token: Secret


class TokenPair(Struct):
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    refresh_token: str | None = None

    @classmethod
    def of(cls, signed_in: SignedIn) -> TokenPair:
        return cls.from_token(signed_in.access, signed_in.refresh_token)

    @classmethod
    def from_token(cls, token: IssuedToken, refresh_token: str | None = None) -> TokenPair:
        return cls(
            access_token=token.token,
            token_type="Bearer",
            expires_in=token.expires_in,
            scope=token.scope,
            refresh_token=refresh_token,
        )


class ResidentProfile(Struct):
    id: UUID
    created_at: datetime
    sign_in_methods: list[str]


class SessionOut(Struct):
    id: UUID
    signed_in_at: datetime
    last_refreshed_at: datetime
    expires_at: datetime
    client_ip: str | None
    user_agent: str | None

    @classmethod
    def of(cls, info: SessionInfo) -> SessionOut:
        return cls(
            id=info.id,
            signed_in_at=info.signed_in_at,
            last_refreshed_at=info.last_refreshed_at,
            expires_at=info.expires_at,
            client_ip=info.client_ip,
            user_agent=info.user_agent,
        )


class NewMerchant(Struct, forbid_unknown_fields=True):
    name: Name

    def __post_init__(self) -> None:
        check_names(name=self.name)


class NewPartner(Struct, forbid_unknown_fields=True):
    name: Name
    kind: PartnerKind
    api_base_url: Annotated[str, Meta(pattern=r"^https?://[^\s]+$", max_length=500)]

    def __post_init__(self) -> None:
        check_names(name=self.name, api_base_url=self.api_base_url)


class MerchantOut(Struct):
    id: UUID
    name: str
    created_at: datetime
    client_ids: list[str]

    @classmethod
    def of(cls, merchant: Merchant, client_ids: list[str]) -> MerchantOut:
        return cls(id=merchant.id, name=merchant.name, created_at=merchant.created_at, client_ids=client_ids)


class PartnerOut(Struct):
    id: UUID
    name: str
    kind: str
    api_base_url: str
    created_at: datetime
    client_ids: list[str]

    @classmethod
    def of(cls, partner: Partner, client_ids: list[str]) -> PartnerOut:
        return cls(
            id=partner.id,
            name=partner.name,
            kind=partner.kind,
            api_base_url=partner.api_base_url,
            created_at=partner.created_at,
            client_ids=client_ids,
        )


class CredentialsOut(Struct):
    """Shown once: store the secrets now; only their hashes (or, for the webhook secret, a sealed copy) are kept."""

    client_id: str
    client_secret: str
    webhook_secret: str | None = None

    @classmethod
    def of(cls, issued: IssuedCredentials) -> CredentialsOut:
        return cls(issued.client_id, issued.client_secret, issued.webhook_secret)


class MerchantCreated(Struct):
    merchant: MerchantOut
    credentials: CredentialsOut


class PartnerCreated(Struct):
    partner: PartnerOut
    credentials: CredentialsOut


class JsonWebKey(Struct):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class JsonWebKeySet(Struct):
    keys: list[JsonWebKey]
