"""Access tokens: the attack suite (one test per rejection), role guards, the JWKS and key rotation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.identity.tokens import AccessTokens, TokenSigningKey
from api.keys import decode_seed
from domain.identity import Role, TokenExpired, TokenInvalid
from tests.helpers import (
    TEST_TOKEN_KEY,
    bearer,
    identity_settings,
    sign_in_operator,
    sign_in_resident,
)

KEY = TokenSigningKey(decode_seed(TEST_TOKEN_KEY))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(subject: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": "carbon-rewards",
        "aud": "carbon-rewards-api",
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "role": "resident",
        "scope": "me",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def signed(payload: dict[str, Any], key: Any = None, kid: str | None = None, **headers: Any) -> str:
    return jwt.encode(
        payload,
        key or KEY.private_key,
        algorithm="EdDSA",
        headers={"kid": kid or KEY.kid, "typ": "at+jwt", **headers},
    )


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(signature)}"


async def me_with(api: AsyncTestClient, token: str) -> Any:
    return await api.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


def assert_refused(response: Any, code: str = "token_invalid", status: int = 401) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


async def resident_id(api: AsyncTestClient, sms_gateway: Any) -> str:
    tokens = await sign_in_resident(api, sms_gateway)
    return str(jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"])


async def test_a_well_formed_token_of_our_own_key_is_accepted(api: AsyncTestClient, sms_gateway: Any) -> None:
    """The baseline the attacks below deviate from: a hand-made token with every claim right works."""
    subject = await resident_id(api, sms_gateway)
    response = await me_with(api, signed(claims(subject)))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == subject


async def test_issued_tokens_carry_every_required_claim(api: AsyncTestClient, sms_gateway: Any) -> None:
    tokens = await sign_in_resident(api, sms_gateway)
    header = jwt.get_unverified_header(tokens["access_token"])
    body = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert header["alg"] == "EdDSA" and header["kid"] == KEY.kid and header["typ"] == "at+jwt"
    assert {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "role", "scope"} <= body.keys()
    assert body["exp"] - body["iat"] <= 15 * 60
    assert body["role"] == "resident" and tokens["token_type"] == "Bearer" and tokens["refresh_token"]


async def test_missing_token_is_refused(api: AsyncTestClient) -> None:
    assert_refused(await api.get("/v1/me"))
    assert_refused(await api.get("/v1/me", headers={"Authorization": "Basic abc"}))


async def test_alg_none_is_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    subject = await resident_id(api, sms_gateway)
    token = raw_token({"alg": "none", "typ": "at+jwt", "kid": KEY.kid}, claims(subject), b"")
    assert_refused(await me_with(api, token))


async def test_hs256_signed_with_the_public_key_is_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    """Algorithm confusion: an HMAC 'signature' keyed with our published public key (raw and PEM)."""
    subject = await resident_id(api, sms_gateway)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": KEY.kid}
    payload = claims(subject)
    pem = KEY.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    for secret in (KEY.public_bytes, pem):
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert_refused(await me_with(api, f"{signing_input}.{_b64(signature)}"))


async def test_unknown_kid_is_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    subject = await resident_id(api, sms_gateway)
    stranger = Ed25519PrivateKey.generate()
    assert_refused(await me_with(api, signed(claims(subject), key=stranger, kid="0123456789abcdef")))


async def test_a_foreign_key_claiming_our_kid_is_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    subject = await resident_id(api, sms_gateway)
    assert_refused(await me_with(api, signed(claims(subject), key=Ed25519PrivateKey.generate())))


async def test_wrong_issuer_is_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    subject = await resident_id(api, sms_gateway)
    assert_refused(await me_with(api, signed(claims(subject, iss="https://evil.example"))))


async def test_wrong_audience_is_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    subject = await resident_id(api, sms_gateway)
    assert_refused(await me_with(api, signed(claims(subject, aud="another-api"))))


async def test_expired_token_is_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    subject = await resident_id(api, sms_gateway)
    past = int(time.time()) - 3600
    token = signed(claims(subject, iat=past, nbf=past, exp=past + 600))
    assert_refused(await me_with(api, token), code="token_expired")


async def test_not_yet_valid_token_is_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    subject = await resident_id(api, sms_gateway)
    future = int(time.time()) + 3600
    assert_refused(await me_with(api, signed(claims(subject, nbf=future, exp=future + 600))))
    assert_refused(await me_with(api, signed(claims(subject, iat=future, exp=future + 600))))


async def test_tampered_payload_is_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    """Promote a resident token to operator admin by editing the payload; the signature no longer matches."""
    tokens = await sign_in_resident(api, sms_gateway)
    header, payload, signature = tokens["access_token"].split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["role"] = "operator_admin"
    forged = f"{header}.{_b64(json.dumps(body).encode())}.{signature}"
    assert_refused(await api.get("/v1/operator/merchants", headers={"Authorization": f"Bearer {forged}"}))
    assert (await me_with(api, tokens["access_token"])).status_code == 200


async def test_each_required_claim_is_required(api: AsyncTestClient, sms_gateway: Any) -> None:
    subject = await resident_id(api, sms_gateway)
    for claim in ("iss", "aud", "sub", "exp", "iat", "nbf", "jti", "role", "scope"):
        assert_refused(await me_with(api, signed(claims(subject, **{claim: None}))))


async def test_unknown_role_and_wrong_type_are_refused(api: AsyncTestClient, sms_gateway: Any) -> None:
    subject = await resident_id(api, sms_gateway)
    assert_refused(await me_with(api, signed(claims(subject, role="superuser"))))
    assert_refused(await me_with(api, signed(claims(subject), typ="JWT")))


async def test_resident_token_on_merchant_partner_and_operator_routes_is_forbidden(
    api: AsyncTestClient, sms_gateway: Any
) -> None:
    headers = bearer(await sign_in_resident(api, sms_gateway))
    for path in ("/v1/merchant/me", "/v1/partner/me", "/v1/operator/merchants", "/v1/operator/audit-log"):
        assert_refused(await api.get(path, headers=headers), code="forbidden", status=403)


async def test_operator_token_on_resident_routes_is_forbidden(api: AsyncTestClient, database_url: str) -> None:
    headers = bearer(await sign_in_operator(api, database_url, "admin"))
    assert_refused(await api.get("/v1/me", headers=headers), code="forbidden", status=403)
    assert_refused(await api.get("/v1/merchant/me", headers=headers), code="forbidden", status=403)


async def test_merchant_and_partner_tokens_stay_on_their_routes(api: AsyncTestClient, database_url: str) -> None:
    admin = bearer(await sign_in_operator(api, database_url, "admin"))
    merchant = (await api.post("/v1/operator/merchants", json={"name": "Tea house"}, headers=admin)).json()
    partner = (
        await api.post(
            "/v1/operator/partners",
            json={"name": "Metro", "kind": "transit", "api_base_url": "http://127.0.0.1:9"},
            headers=admin,
        )
    ).json()
    tokens = {}
    for name, created in (("merchant", merchant), ("partner", partner)):
        credentials = created["credentials"]
        response = await api.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", **{k: credentials[k] for k in ("client_id", "client_secret")}},
        )
        assert response.status_code == 200, response.text
        tokens[name] = bearer(response.json())
    assert (await api.get("/v1/merchant/me", headers=tokens["merchant"])).status_code == 200
    assert (await api.get("/v1/partner/me", headers=tokens["partner"])).status_code == 200
    for forbidden in ("/v1/me", "/v1/partner/me", "/v1/operator/merchants"):
        assert_refused(await api.get(forbidden, headers=tokens["merchant"]), code="forbidden", status=403)
    for forbidden in ("/v1/me", "/v1/merchant/me", "/v1/operator/partners"):
        assert_refused(await api.get(forbidden, headers=tokens["partner"]), code="forbidden", status=403)


async def test_jwks_publishes_the_signing_key(api: AsyncTestClient) -> None:
    response = await api.get("/.well-known/jwks.json")
    assert response.status_code == 200
    [published] = [k for k in response.json()["keys"] if k["kid"] == KEY.kid]
    assert published["kty"] == "OKP" and published["crv"] == "Ed25519" and published["alg"] == "EdDSA"
    raw = base64.urlsafe_b64decode(published["x"] + "==")
    assert Ed25519PublicKey.from_public_bytes(raw).public_bytes_raw() == KEY.public_bytes


async def test_key_rotation_keeps_old_tokens_valid(
    database_url: str, sms_gateway: Any, city_idp: Any, api: AsyncTestClient
) -> None:
    """A restart with a new key: old tokens still verify, both keys are published, new tokens use the new key."""
    old_tokens = await sign_in_resident(api, sms_gateway)
    new_seed = base64.b64encode(b"\x42" * 32).decode()
    rotated = create_app(identity_settings(sms_gateway, city_idp, token_signing_key=new_seed), database_url)
    new_kid = TokenSigningKey(decode_seed(new_seed)).kid
    try:
        async with AsyncTestClient(app=rotated) as client:
            assert (await client.get("/v1/me", headers=bearer(old_tokens))).status_code == 200
            kids = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
            assert {KEY.kid, new_kid} <= kids
            new_tokens = await sign_in_resident(client, sms_gateway)
            assert jwt.get_unverified_header(new_tokens["access_token"])["kid"] == new_kid
            # The instance still on the old key learns the new key from the database on first sight.
            assert (await api.get("/v1/me", headers=bearer(new_tokens))).status_code == 200
    finally:
        # Later tests sign with the original key again: make it the current one.
        async with AsyncTestClient(app=create_app(identity_settings(sms_gateway, city_idp), database_url)):
            pass


async def test_a_flood_of_unknown_kids_costs_one_reload_per_interval_and_locks_no_new_key_out() -> None:
    """Unknown kids share reloads; a real key published by another instance is accepted right after them."""
    published: dict[str, Ed25519PublicKey] = {KEY.kid: KEY.public_key}
    reloads = 0

    async def reload_keys() -> dict[str, Ed25519PublicKey]:
        nonlocal reloads
        reloads += 1
        return dict(published)

    tokens = AccessTokens(
        KEY,
        issuer="carbon-rewards",
        audience="carbon-rewards-api",
        ttl=timedelta(minutes=5),
        keys=dict(published),
        reload_keys=reload_keys,
        reload_interval_s=0.5,
    )
    now = datetime.now(UTC)
    forger = Ed25519PrivateKey.generate()
    forged = [signed(claims(str(uuid.uuid4())), key=forger, kid=f"made-up-{i}") for i in range(50)]
    results = await asyncio.gather(*(tokens.verify(token, now) for token in forged), return_exceptions=True)
    assert all(isinstance(result, TokenInvalid) for result in results), results
    assert 1 <= reloads <= 2

    # Another instance starts with a new key, publishes it, and its resident calls this instance at
    # once, inside the interval that the flood's last reload opened: the token waits for the next one.
    rotated = TokenSigningKey(Ed25519PrivateKey.generate().private_bytes_raw())
    published[rotated.kid] = rotated.public_key
    before = reloads
    subject = str(uuid.uuid4())
    principal = await tokens.verify(signed(claims(subject), key=rotated.private_key, kid=rotated.kid), now)
    assert str(principal.subject_id) == subject and reloads == before + 1
    # Known now: no further reload.
    await tokens.verify(signed(claims(subject), key=rotated.private_key, kid=rotated.kid), now)
    assert reloads == before + 1


async def test_a_remembered_token_still_expires_and_a_tampered_copy_is_checked_anew() -> None:
    """Verified tokens are remembered so that their signature is checked once; the time window is not."""
    tokens = AccessTokens(
        KEY, issuer="carbon-rewards", audience="carbon-rewards-api", ttl=timedelta(minutes=5), keys={}
    )
    now = datetime.now(UTC)
    issued = tokens.issue(uuid.uuid4(), Role.PARTNER, now).token
    first = await tokens.verify(issued, now)
    assert await tokens.verify(issued, now + timedelta(minutes=4)) == first
    with pytest.raises(TokenExpired):
        await tokens.verify(issued, now + timedelta(minutes=6))
    header, payload, signature = issued.split(".")
    flipped = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    with pytest.raises(TokenInvalid):
        await tokens.verify(f"{header}.{payload}.{flipped}", now)
