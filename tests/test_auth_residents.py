"""Residents sign in by phone code or with the city identity provider; codes and phones are never kept in clear."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.keys import ServerSecret, decode_seed
from tests.helpers import (
    IDP_AUDIENCE,
    TEST_SERVER_SECRET,
    bearer,
    identity_settings,
    last_code,
    random_phone,
    sign_in_resident,
)

SECRET = ServerSecret(decode_seed(TEST_SERVER_SECRET))


def closed_port_url(path: str = "/send") -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


async def challenges_for(owner_conn: asyncpg.Connection, phone: str) -> int:
    return await owner_conn.fetchval(  # type: ignore[no-any-return]
        "SELECT count(*) FROM otp_challenges WHERE phone_hash = $1", SECRET.phone_hash(phone)
    )


# ------------------------------------------------------------------------------------------- phone code


async def test_phone_sign_in_creates_the_resident_once(
    api: AsyncTestClient, sms_gateway: Any, owner_conn: asyncpg.Connection
) -> None:
    phone = random_phone()
    first = await sign_in_resident(api, sms_gateway, phone)
    me = (await api.get("/v1/me", headers=bearer(first))).json()
    assert me["sign_in_methods"] == ["phone"]
    again = await sign_in_resident(api, sms_gateway, phone.replace("+86", ""))  # the bare mainland form
    assert (await api.get("/v1/me", headers=bearer(again))).json()["id"] == me["id"]
    assert (
        await owner_conn.fetchval("SELECT count(*) FROM residents WHERE phone_hash = $1", SECRET.phone_hash(phone)) == 1
    )


async def test_phone_numbers_and_codes_are_not_stored_in_clear(
    api: AsyncTestClient, sms_gateway: Any, owner_conn: asyncpg.Connection
) -> None:
    phone = random_phone()
    await sign_in_resident(api, sms_gateway, phone)
    code = last_code(sms_gateway, phone)
    digits = phone.removeprefix("+86")
    for table in ("residents", "otp_challenges", "refresh_tokens", "rate_limit_windows"):
        dump = "\n".join(str(dict(r)) for r in await owner_conn.fetch(f"SELECT * FROM {table}"))
        assert digits not in dump and phone not in dump, table
    stored = await owner_conn.fetchrow(
        "SELECT id, code_hash FROM otp_challenges WHERE phone_hash = $1", SECRET.phone_hash(phone)
    )
    assert stored["code_hash"] == SECRET.otp_hash(stored["id"], code) and code.encode() not in stored["code_hash"]


async def test_a_code_works_once(api: AsyncTestClient, sms_gateway: Any) -> None:
    phone = random_phone()
    await sign_in_resident(api, sms_gateway, phone)
    reused = await api.post("/v1/auth/otp/verify", json={"phone": phone, "code": last_code(sms_gateway, phone)})
    assert reused.status_code == 401 and reused.json()["code"] == "otp_invalid"
    assert reused.json()["reason"] == "expired_or_used"


async def test_an_expired_code_is_refused(
    api: AsyncTestClient, sms_gateway: Any, owner_conn: asyncpg.Connection
) -> None:
    phone = random_phone()
    assert (await api.post("/v1/auth/otp", json={"phone": phone})).status_code == 202
    await owner_conn.execute(
        "UPDATE otp_challenges SET expires_at = now() - interval '1 second' WHERE phone_hash = $1",
        SECRET.phone_hash(phone),
    )
    response = await api.post("/v1/auth/otp/verify", json={"phone": phone, "code": last_code(sms_gateway, phone)})
    assert response.status_code == 401 and response.json()["reason"] == "expired_or_used"


async def test_codes_expire_after_five_minutes(api: AsyncTestClient, owner_conn: asyncpg.Connection) -> None:
    phone = random_phone()
    response = await api.post("/v1/auth/otp", json={"phone": phone})
    assert response.json() == {"expires_in": 300}
    lifetime = await owner_conn.fetchval(
        "SELECT extract(epoch FROM expires_at - created_at) FROM otp_challenges WHERE phone_hash = $1",
        SECRET.phone_hash(phone),
    )
    assert float(lifetime) == 300


async def test_five_wrong_codes_lock_the_code(
    api: AsyncTestClient, sms_gateway: Any, owner_conn: asyncpg.Connection
) -> None:
    phone = random_phone()
    assert (await api.post("/v1/auth/otp", json={"phone": phone})).status_code == 202
    right = last_code(sms_gateway, phone)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    answers = []
    for _ in range(5):
        response = await api.post("/v1/auth/otp/verify", json={"phone": phone, "code": wrong})
        assert response.status_code == 401
        answers.append(response.json()["attempts_left"])
    assert answers == [4, 3, 2, 1, 0]
    assert (
        await owner_conn.fetchval("SELECT attempts FROM otp_challenges WHERE phone_hash = $1", SECRET.phone_hash(phone))
        == 5
    )
    locked = await api.post("/v1/auth/otp/verify", json={"phone": phone, "code": right})
    assert locked.status_code == 401 and locked.json()["reason"] == "locked"
    # A new code unlocks the phone.
    assert (await sign_in_resident(api, sms_gateway, phone))["access_token"]


async def test_malformed_phone_and_code_are_invalid_input(api: AsyncTestClient) -> None:
    for body in ({"phone": "12345"}, {"phone": "call me maybe"}, {}):
        response = await api.post("/v1/auth/otp", json=body)
        assert response.status_code == 422 and response.json()["code"] == "invalid_input", body
    response = await api.post("/v1/auth/otp/verify", json={"phone": random_phone(), "code": "12ab56"})
    assert response.status_code == 422


async def test_codes_are_rate_limited_per_phone_and_per_ip(
    database_url: str, sms_gateway: Any, city_idp: Any, owner_conn: asyncpg.Connection
) -> None:
    # Every test client has the address "testclient": forget what earlier tests counted against it.
    await owner_conn.execute("DELETE FROM rate_limit_windows WHERE bucket = 'otp:ip:testclient'")
    settings = identity_settings(sms_gateway, city_idp, otp_limit_per_phone=2, otp_limit_per_ip=4)
    async with AsyncTestClient(app=create_app(settings, database_url)) as client:
        phone = random_phone()
        for _ in range(2):
            assert (await client.post("/v1/auth/otp", json={"phone": phone})).status_code == 202
        limited = await client.post("/v1/auth/otp", json={"phone": phone})
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert 0 < int(limited.headers["retry-after"]) <= 3600
        assert len(sms_gateway.messages_to(phone)) == 2
        # The same client IP ("testclient") asking for other phones: two more, then refused.
        assert (await client.post("/v1/auth/otp", json={"phone": random_phone()})).status_code == 202
        assert (await client.post("/v1/auth/otp", json={"phone": random_phone()})).status_code == 202
        other = random_phone()
        by_ip = await client.post("/v1/auth/otp", json={"phone": other})
        assert by_ip.status_code == 429 and sms_gateway.messages_to(other) == []


async def test_gateway_down_is_a_clear_503_and_creates_nothing(
    api: AsyncTestClient, sms_gateway: Any, owner_conn: asyncpg.Connection, database_url: str, city_idp: Any
) -> None:
    phone = random_phone()
    sms_gateway.failing = True
    try:
        response = await api.post("/v1/auth/otp", json={"phone": phone})
    finally:
        sms_gateway.failing = False
    assert response.status_code == 503 and response.json()["code"] == "sms_gateway_unavailable"
    assert await challenges_for(owner_conn, phone) == 0
    # Nothing listening at all: the same.
    settings = identity_settings(sms_gateway, city_idp, sms_gateway_url=closed_port_url())
    async with AsyncTestClient(app=create_app(settings, database_url)) as client:
        response = await client.post("/v1/auth/otp", json={"phone": phone})
    assert response.status_code == 503 and response.json()["code"] == "sms_gateway_unavailable"
    assert await challenges_for(owner_conn, phone) == 0
    # The rate limit did not count the failed attempts either; the retry goes through.
    assert (await sign_in_resident(api, sms_gateway, phone))["access_token"]


async def test_without_a_gateway_codes_go_to_the_log_only_in_demo_mode(
    database_url: str, sms_gateway: Any, city_idp: Any
) -> None:
    settings = identity_settings(sms_gateway, city_idp, sms_gateway_url=None)
    async with AsyncTestClient(app=create_app(settings, database_url)) as client:
        response = await client.post("/v1/auth/otp", json={"phone": random_phone()})
        assert response.status_code == 503 and response.json()["code"] == "sms_gateway_unavailable"

    class Collect(logging.Handler):
        lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    phone, handler = random_phone(), Collect()
    demo = identity_settings(sms_gateway, city_idp, sms_gateway_url=None, demo=True)
    async with AsyncTestClient(app=create_app(demo, database_url)) as client:
        logging.getLogger("integrations.sms").addHandler(handler)
        try:
            assert (await client.post("/v1/auth/otp", json={"phone": phone})).status_code == 202
        finally:
            logging.getLogger("integrations.sms").removeHandler(handler)
        [line] = [line for line in handler.lines if phone in line]
        code = re.search(r"\b(\d{6})\b", line).group(1)  # type: ignore[union-attr]
        verified = await client.post("/v1/auth/otp/verify", json={"phone": phone, "code": code})
        assert verified.status_code == 200


# ----------------------------------------------------------------------------------------- city identity


async def test_city_id_token_signs_in_and_registers_once(api: AsyncTestClient, city_idp: Any) -> None:
    subject = f"city-{time.time_ns()}"
    first = await api.post("/v1/auth/exchange", json={"id_token": city_idp.id_token(subject, IDP_AUDIENCE)})
    assert first.status_code == 200, first.text
    me = (await api.get("/v1/me", headers=bearer(first.json()))).json()
    assert me["sign_in_methods"] == ["city_id"]
    second = await api.post("/v1/auth/exchange", json={"id_token": city_idp.id_token(subject, IDP_AUDIENCE)})
    assert (await api.get("/v1/me", headers=bearer(second.json()))).json()["id"] == me["id"]


async def test_id_tokens_for_another_audience_expired_or_forged_are_refused(
    api: AsyncTestClient, city_idp: Any
) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    subject = f"city-{time.time_ns()}"
    kid = jwt.get_unverified_header(city_idp.id_token(subject, IDP_AUDIENCE))["kid"]
    forged = jwt.encode(
        {
            "iss": city_idp.issuer,
            "aud": IDP_AUDIENCE,
            "sub": subject,
            "iat": int(time.time()),
            "exp": int(time.time()) + 300,
        },
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": kid},
    )
    for token in (
        city_idp.id_token(subject, "someone-else"),
        city_idp.id_token(subject, IDP_AUDIENCE, lifetime_s=-120),
        forged,
        "not-a-jwt",
    ):
        response = await api.post("/v1/auth/exchange", json={"id_token": token})
        assert response.status_code == 401 and response.json()["code"] == "id_token_invalid", response.text


async def test_provider_key_rotation_is_picked_up(api: AsyncTestClient, city_idp: Any) -> None:
    subject = f"city-{time.time_ns()}"
    assert (
        await api.post("/v1/auth/exchange", json={"id_token": city_idp.id_token(subject, IDP_AUDIENCE)})
    ).status_code == 200
    city_idp.rotate()
    response = await api.post("/v1/auth/exchange", json={"id_token": city_idp.id_token(subject, IDP_AUDIENCE)})
    assert response.status_code == 200, response.text


async def test_provider_down_is_a_clear_503_and_creates_nothing(
    database_url: str, sms_gateway: Any, city_idp: Any, owner_conn: asyncpg.Connection
) -> None:
    subject = f"city-{time.time_ns()}"
    settings = identity_settings(sms_gateway, city_idp, idp_jwks_url=closed_port_url("/jwks.json"))
    async with AsyncTestClient(app=create_app(settings, database_url)) as client:
        response = await client.post("/v1/auth/exchange", json={"id_token": city_idp.id_token(subject, IDP_AUDIENCE)})
    assert response.status_code == 503 and response.json()["code"] == "identity_provider_unavailable"
    assert await owner_conn.fetchval("SELECT count(*) FROM residents WHERE idp_subject = $1", subject) == 0


async def test_concurrent_first_sign_ins_create_one_resident(
    api: AsyncTestClient, city_idp: Any, owner_conn: asyncpg.Connection
) -> None:
    subject = f"city-{time.time_ns()}"
    responses = await asyncio.gather(
        *(api.post("/v1/auth/exchange", json={"id_token": city_idp.id_token(subject, IDP_AUDIENCE)}) for _ in range(5))
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert await owner_conn.fetchval("SELECT count(*) FROM residents WHERE idp_subject = $1", subject) == 1
