"""Identity routes: signing in and out, the JWKS, the resident's own profile and sessions, operator
administration, and the merchant's and partner's view of themselves.

Handlers parse, authorise (guards), call one service function and return a schema.
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.exceptions import SerializationException
from litestar.params import HeaderParameter, JSONBody, PathParameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_log import Actor
from api.guards import (
    ANY_OPERATOR,
    MERCHANT_ONLY,
    OPERATOR_ADMIN,
    PARTNER_ONLY,
    RESIDENT_ONLY,
)
from api.identity import clients, sessions, sign_in, signing_keys
from api.identity.runtime import IdentityRuntime
from api.identity.schemas import (
    CredentialsOut,
    IdTokenExchange,
    JsonWebKey,
    JsonWebKeySet,
    MerchantCreated,
    MerchantOut,
    NewMerchant,
    NewPartner,
    OperatorLogin,
    OtpRequest,
    OtpSent,
    OtpVerify,
    PartnerCreated,
    PartnerOut,
    RefreshRequest,
    ResidentProfile,
    SessionOut,
    TokenPair,
)
from api.request_meta import RequestMeta
from api.settings import Settings
from domain.errors import InvalidInput, MalformedBody
from domain.identity import Principal
from integrations.idp import IdentityProviderUnavailable, IdTokenInvalid
from integrations.sms import SmsGatewayUnavailable

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        max_length=100,
        description="Repeat a creation or a rotation safely: a second request with the same key changes nothing.",
    ),
]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["auth"]
    cache_control = CacheControlHeader(no_store=True)

    @post(
        "/otp",
        status_code=202,
        summary="Send a one-time sign-in code to a phone (rate-limited)",
        opt={"problems": [SmsGatewayUnavailable]},  # raised by the SMS sender the runtime holds
    )
    async def send_otp(
        self,
        data: JSONBody[OtpRequest],
        db_session: NamedDependency[AsyncSession],
        identity: NamedDependency[IdentityRuntime],
        request_meta: NamedDependency[RequestMeta],
    ) -> OtpSent:
        return OtpSent(expires_in=await sign_in.request_otp(db_session, identity, data.phone, request_meta))

    @post("/otp/verify", status_code=200, summary="Sign in as a resident with the code (first sign-in registers)")
    async def verify_otp(
        self,
        data: JSONBody[OtpVerify],
        db_session: NamedDependency[AsyncSession],
        identity: NamedDependency[IdentityRuntime],
        request_meta: NamedDependency[RequestMeta],
    ) -> TokenPair:
        return TokenPair.of(await sign_in.verify_otp(db_session, identity, data.phone, data.code, request_meta))

    @post(
        "/exchange",
        status_code=200,
        summary="Sign in as a resident with the city identity provider's ID token",
        opt={"problems": [IdTokenInvalid, IdentityProviderUnavailable]},  # raised by the runtime's verifier
    )
    async def exchange(
        self,
        data: JSONBody[IdTokenExchange],
        db_session: NamedDependency[AsyncSession],
        identity: NamedDependency[IdentityRuntime],
        request_meta: NamedDependency[RequestMeta],
    ) -> TokenPair:
        return TokenPair.of(await sign_in.exchange_id_token(db_session, identity, data.id_token, request_meta))

    @post(
        "/token",
        status_code=200,
        summary="OAuth2 client credentials grant for merchants and partners (failed attempts are rate-limited)",
        description="grant_type=client_credentials with client_id and client_secret as a form, as JSON, "
        "or as HTTP Basic credentials (RFC 6749 §2.3.1, §4.4). No refresh token is issued.",
    )
    async def token(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        identity: NamedDependency[IdentityRuntime],
        request_meta: NamedDependency[RequestMeta],
    ) -> TokenPair:
        client_id, client_secret = await _client_credentials(request)
        issued = await sign_in.client_credentials(db_session, identity, client_id, client_secret, request_meta)
        return TokenPair.from_token(issued)

    @post("/operator/login", status_code=200, summary="Sign in as an operator (rate-limited)")
    async def operator_login(
        self,
        data: JSONBody[OperatorLogin],
        db_session: NamedDependency[AsyncSession],
        identity: NamedDependency[IdentityRuntime],
        request_meta: NamedDependency[RequestMeta],
    ) -> TokenPair:
        signed_in = await sign_in.operator_login(db_session, identity, data.username, data.password, request_meta)
        return TokenPair.of(signed_in)

    @post("/refresh", status_code=200, summary="Rotate a refresh token; a reused one revokes its whole sign-in")
    async def refresh(
        self,
        data: JSONBody[RefreshRequest],
        db_session: NamedDependency[AsyncSession],
        identity: NamedDependency[IdentityRuntime],
        request_meta: NamedDependency[RequestMeta],
    ) -> TokenPair:
        return TokenPair.of(await sessions.refresh(db_session, identity, data.refresh_token, request_meta))

    @post("/logout", status_code=204, summary="Revoke the sign-in a refresh token belongs to")
    async def logout(self, data: JSONBody[RefreshRequest], db_session: NamedDependency[AsyncSession]) -> None:
        await sessions.logout(db_session, data.refresh_token)


async def _client_credentials(request: Request[Any, Any, Any]) -> tuple[str, str]:
    """client_id and client_secret from HTTP Basic, a form body or a JSON body."""
    content_type = request.headers.get("content-type", "")
    body: dict[str, Any]
    if content_type.startswith("application/x-www-form-urlencoded") or content_type.startswith("multipart/"):
        body = dict(await request.form())
    elif content_type.startswith("application/json"):
        try:
            parsed = await request.json()
        except (ValueError, SerializationException) as exc:
            raise MalformedBody("the body is not valid JSON") from exc
        body = parsed if isinstance(parsed, dict) else {}
    else:
        body = {}
    if body.get("grant_type") != "client_credentials":
        raise InvalidInput("grant_type must be client_credentials", field="grant_type", error="unsupported_grant_type")
    client_id, client_secret = body.get("client_id"), body.get("client_secret")
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, client_secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput("malformed Basic credentials", error="invalid_request") from exc
    if not isinstance(client_id, str) or not isinstance(client_secret, str) or not client_id or not client_secret:
        raise InvalidInput("client_id and client_secret are required", error="invalid_request")
    if len(client_id) > 64 or len(client_secret) > 1024:
        raise InvalidInput("client_id or client_secret is too long", error="invalid_request")
    return client_id, client_secret


class JwksController(Controller):
    path = "/.well-known"
    tags = ["auth"]

    @get("/jwks.json", summary="Public keys that verify access tokens (current and recently retired)")
    async def jwks(
        self, db_session: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
    ) -> JsonWebKeySet:
        keys = await signing_keys.published_keys(db_session, timedelta(seconds=settings.access_token_ttl_s))
        return JsonWebKeySet(
            keys=[
                JsonWebKey(kty="OKP", crv="Ed25519", x=_b64url(key.public_bytes_raw()), kid=kid, alg="EdDSA", use="sig")
                for kid, key in sorted(keys.items())
            ]
        )


class MeController(Controller):
    security = [{"bearer": []}]
    path = "/v1/me"
    tags = ["resident"]
    guards = [RESIDENT_ONLY]

    @get("", summary="The signed-in resident")
    async def me(
        self, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> ResidentProfile:
        resident = await sign_in.get_resident(db_session, principal.subject_id)
        methods = [m for m, linked in (("phone", resident.phone_hash), ("city_id", resident.idp_subject)) if linked]
        return ResidentProfile(id=resident.id, created_at=resident.created_at, sign_in_methods=methods)

    @get("/sessions", summary="The resident's active sign-ins (devices)")
    async def sessions(
        self, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[SessionOut]:
        return [SessionOut.of(s) for s in await sessions.list_sessions(db_session, principal.subject_id)]

    @delete("/sessions/{session_id:uuid}", status_code=204, summary="Sign out one of the resident's devices")
    async def revoke_session(
        self,
        session_id: Annotated[UUID, PathParameter()],
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> None:
        await sessions.revoke_session(db_session, principal.subject_id, session_id)


class OperatorController(Controller):
    security = [{"bearer": []}]
    path = "/v1/operator"
    tags = ["operator"]
    guards = [ANY_OPERATOR]

    @post("/merchants", guards=[OPERATOR_ADMIN], summary="Register a merchant; returns its client credentials once")
    async def create_merchant(
        self,
        data: JSONBody[NewMerchant],
        db_session: NamedDependency[AsyncSession],
        identity: NamedDependency[IdentityRuntime],
        actor: NamedDependency[Actor],
        request_meta: NamedDependency[RequestMeta],
        idempotency_key: IdempotencyKey = None,
    ) -> MerchantCreated:
        merchant, issued = await clients.register_merchant(
            db_session, identity, actor, data.name, request_meta, idempotency_key
        )
        return MerchantCreated(MerchantOut.of(merchant, [issued.client_id]), CredentialsOut.of(issued))

    @get("/merchants", summary="Registered merchants")
    async def merchants(self, db_session: NamedDependency[AsyncSession]) -> list[MerchantOut]:
        return [MerchantOut.of(m, ids) for m, ids in await clients.list_merchants(db_session)]

    @post(
        "/partners",
        guards=[OPERATOR_ADMIN],
        summary="Register a partner; returns its client credentials and webhook signing secret once",
    )
    async def create_partner(
        self,
        data: JSONBody[NewPartner],
        db_session: NamedDependency[AsyncSession],
        identity: NamedDependency[IdentityRuntime],
        actor: NamedDependency[Actor],
        request_meta: NamedDependency[RequestMeta],
        idempotency_key: IdempotencyKey = None,
    ) -> PartnerCreated:
        partner, issued = await clients.register_partner(
            db_session, identity, actor, data.name, data.kind, data.api_base_url, request_meta, idempotency_key
        )
        return PartnerCreated(PartnerOut.of(partner, [issued.client_id]), CredentialsOut.of(issued))

    @get("/partners", summary="Registered partners")
    async def partners(self, db_session: NamedDependency[AsyncSession]) -> list[PartnerOut]:
        return [PartnerOut.of(p, ids) for p, ids in await clients.list_partners(db_session)]

    @post(
        "/clients/{client_id:str}/secret",
        status_code=200,
        guards=[OPERATOR_ADMIN],
        summary="Rotate a client's secret; the old one stops working at once",
    )
    async def rotate_secret(
        self,
        client_id: Annotated[str, PathParameter(max_length=64)],
        db_session: NamedDependency[AsyncSession],
        identity: NamedDependency[IdentityRuntime],
        actor: NamedDependency[Actor],
        request_meta: NamedDependency[RequestMeta],
        idempotency_key: IdempotencyKey = None,
    ) -> CredentialsOut:
        return CredentialsOut.of(
            await clients.rotate_client_secret(db_session, identity, actor, client_id, request_meta, idempotency_key)
        )


class MerchantController(Controller):
    security = [{"bearer": []}]
    path = "/v1/merchant"
    tags = ["merchant"]
    guards = [MERCHANT_ONLY]

    @get("/me", summary="The calling merchant")
    async def me(self, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]) -> MerchantOut:
        merchant, client_ids = await clients.get_client_owner(db_session, principal)
        return MerchantOut.of(merchant, client_ids)  # type: ignore[arg-type]


class PartnerController(Controller):
    security = [{"bearer": []}]
    path = "/v1/partner"
    tags = ["partner"]
    guards = [PARTNER_ONLY]

    @get("/me", summary="The calling partner")
    async def me(self, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]) -> PartnerOut:
        partner, client_ids = await clients.get_client_owner(db_session, principal)
        return PartnerOut.of(partner, client_ids)  # type: ignore[arg-type]


ROUTES = [
    AuthController,
    JwksController,
    MeController,
    OperatorController,
    MerchantController,
    PartnerController,
]
