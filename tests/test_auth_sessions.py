"""Refresh tokens rotate and detect reuse; operators log in with rate limits; residents see only their own sessions."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from api.app import create_app
from tests.helpers import (
    bearer,
    create_operator,
    identity_settings,
    sign_in_operator,
    sign_in_resident,
)


async def refresh(api: AsyncTestClient, token: str) -> Any:
    return await api.post("/v1/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_the_refresh_token(api: AsyncTestClient, sms_gateway: Any) -> None:
    first = await sign_in_resident(api, sms_gateway)
    second = await refresh(api, first["refresh_token"])
    assert second.status_code == 200, second.text
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"] and pair["access_token"] != first["access_token"]
    assert second.headers["cache-control"] == "no-store"
    assert (await api.get("/v1/me", headers=bearer(pair))).status_code == 200
    assert (await refresh(api, pair["refresh_token"])).status_code == 200


async def test_reusing_a_refresh_token_revokes_the_whole_family(api: AsyncTestClient, sms_gateway: Any) -> None:
    stolen = await sign_in_resident(api, sms_gateway)
    legitimate = (await refresh(api, stolen["refresh_token"])).json()
    replay = await refresh(api, stolen["refresh_token"])
    assert replay.status_code == 401 and replay.json()["code"] == "refresh_token_reused"
    # The newest token of that sign-in is revoked too, so neither party can go on.
    after = await refresh(api, legitimate["refresh_token"])
    assert after.status_code == 401 and after.json()["code"] == "refresh_token_invalid"


async def test_concurrent_use_of_one_refresh_token_succeeds_once(api: AsyncTestClient, sms_gateway: Any) -> None:
    tokens = await sign_in_resident(api, sms_gateway)
    responses = await asyncio.gather(*(refresh(api, tokens["refresh_token"]) for _ in range(4)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 401, 401, 401], [r.text for r in responses]


async def test_logout_revokes_the_sign_in(api: AsyncTestClient, sms_gateway: Any) -> None:
    tokens = await sign_in_resident(api, sms_gateway)
    assert (await api.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})).status_code == 204
    response = await refresh(api, tokens["refresh_token"])
    assert response.status_code == 401 and response.json()["code"] == "refresh_token_invalid"
    # Logging out twice, or with an unknown token, is harmless.
    assert (await api.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})).status_code == 204
    assert (await api.post("/v1/auth/logout", json={"refresh_token": "rt_unknown"})).status_code == 204


async def test_unknown_and_expired_refresh_tokens_are_refused(
    api: AsyncTestClient, sms_gateway: Any, owner_conn: asyncpg.Connection
) -> None:
    assert (await refresh(api, "rt_" + "x" * 40)).json()["code"] == "refresh_token_invalid"
    tokens = await sign_in_resident(api, sms_gateway)
    subject = (await api.get("/v1/me", headers=bearer(tokens))).json()["id"]
    await owner_conn.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE subject_id = $1", uuid.UUID(subject)
    )
    expired = await refresh(api, tokens["refresh_token"])
    assert expired.status_code == 401 and expired.json()["code"] == "refresh_token_invalid"


async def test_operator_login_refuses_wrong_passwords_and_limits_tries(
    database_url: str, sms_gateway: Any, city_idp: Any
) -> None:
    username = await create_operator(database_url, "admin")
    settings = identity_settings(sms_gateway, city_idp, login_limit_per_username=3)
    async with AsyncTestClient(app=create_app(settings, database_url)) as client:
        for password in ("wrong password 1", "wrong password 2"):
            response = await client.post("/v1/auth/operator/login", json={"username": username, "password": password})
            assert response.status_code == 401 and response.json()["code"] == "invalid_credentials"
        unknown = await client.post("/v1/auth/operator/login", json={"username": "nobody-here", "password": "x" * 12})
        assert unknown.status_code == 401 and unknown.json()["code"] == "invalid_credentials"
        good = await client.post(
            "/v1/auth/operator/login", json={"username": username, "password": "correct horse battery staple"}
        )
        assert good.status_code == 200, good.text  # successes do not count
        third = await client.post("/v1/auth/operator/login", json={"username": username, "password": "wrong 3"})
        assert third.status_code == 401
        # The third failure of this username from this address: refused now, even with the right password
        # (from another address the owner still gets in: tests/test_auth_guessing.py).
        limited = await client.post(
            "/v1/auth/operator/login", json={"username": username, "password": "correct horse battery staple"}
        )
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


async def test_operator_tokens_refresh_with_their_role(api: AsyncTestClient, database_url: str) -> None:
    auditor = await sign_in_operator(api, database_url, "auditor")
    rotated = (await refresh(api, auditor["refresh_token"])).json()
    assert rotated["scope"] == "operator:read"
    assert (await api.get("/v1/operator/audit-log", headers=bearer(rotated))).status_code == 200
    assert (await api.post("/v1/operator/merchants", json={"name": "x"}, headers=bearer(rotated))).status_code == 403


async def test_residents_see_and_revoke_only_their_own_sessions(api: AsyncTestClient, sms_gateway: Any) -> None:
    """BOLA: resident B cannot see or revoke resident A's sessions; asking gets 404, and A's session lives on."""
    a_phone_tokens = await sign_in_resident(api, sms_gateway)
    a_second_device = await sign_in_resident(api, sms_gateway, a_phone_tokens["phone"])
    b_tokens = await sign_in_resident(api, sms_gateway)
    a_sessions = (await api.get("/v1/me/sessions", headers=bearer(a_phone_tokens))).json()
    b_sessions = (await api.get("/v1/me/sessions", headers=bearer(b_tokens))).json()
    assert len(a_sessions) == 2 and len(b_sessions) == 1
    assert not {s["id"] for s in a_sessions} & {s["id"] for s in b_sessions}
    target = a_sessions[0]["id"]
    stolen = await api.delete(f"/v1/me/sessions/{target}", headers=bearer(b_tokens))
    assert stolen.status_code == 404 and stolen.json()["code"] == "session_not_found"
    assert len((await api.get("/v1/me/sessions", headers=bearer(a_phone_tokens))).json()) == 2
    # A signs out their other device: its refresh token stops working, the first device's does not.
    other = next(s["id"] for s in a_sessions if s["id"] != a_sessions[-1]["id"])
    assert (await api.delete(f"/v1/me/sessions/{other}", headers=bearer(a_phone_tokens))).status_code == 204
    remaining = (await api.get("/v1/me/sessions", headers=bearer(a_phone_tokens))).json()
    assert [s["id"] for s in remaining] == [a_sessions[-1]["id"]]
    results = [await refresh(api, t["refresh_token"]) for t in (a_phone_tokens, a_second_device)]
    assert sorted(r.status_code for r in results) == [200, 401]
    unknown = await api.delete(f"/v1/me/sessions/{uuid.uuid4()}", headers=bearer(b_tokens))
    assert unknown.status_code == 404
