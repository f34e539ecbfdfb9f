"""Operators register merchants and partners; their clients sign in with client credentials; every change is audited."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.keys import ServerSecret, decode_seed
from integrations.simulators.city_idp import CityIdpSimulator
from integrations.simulators.sms_gateway import SmsGatewaySimulator
from tests.helpers import APP_ROLE, TEST_SERVER_SECRET, bearer, identity_settings, sign_in_operator

PARTNER = {"name": "Shanghai Metro", "kind": "transit", "api_base_url": "http://127.0.0.1:9/metro"}


async def token_for(api: AsyncTestClient, credentials: dict[str, Any], style: str = "form") -> Any:
    pair = {"client_id": credentials["client_id"], "client_secret": credentials["client_secret"]}
    if style == "form":
        return await api.post("/v1/auth/token", data={"grant_type": "client_credentials", **pair})
    if style == "json":
        return await api.post("/v1/auth/token", json={"grant_type": "client_credentials", **pair})
    basic = base64.b64encode(f"{pair['client_id']}:{pair['client_secret']}".encode()).decode()
    return await api.post(
        "/v1/auth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )


@pytest.fixture(scope="module")
async def admin(api: AsyncTestClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(api, database_url, "admin"))


async def test_merchant_credentials_work_as_form_json_and_basic(
    api: AsyncTestClient, admin: dict[str, str], owner_conn: asyncpg.Connection
) -> None:
    created = await api.post("/v1/operator/merchants", json={"name": "Green grocer"}, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    credentials = body["credentials"]
    assert credentials["client_id"].startswith("mer_") and credentials["webhook_secret"] is None
    for style in ("form", "json", "basic"):
        response = await token_for(api, credentials, style)
        assert response.status_code == 200, (style, response.text)
        token = response.json()
        assert token["token_type"] == "Bearer" and token["refresh_token"] is None and token["scope"] == "merchant"
        assert response.headers["cache-control"] == "no-store"
        me = await api.get("/v1/merchant/me", headers=bearer(token))
        assert me.json()["id"] == body["merchant"]["id"] and me.json()["name"] == "Green grocer"
        assert me.json()["client_ids"] == [credentials["client_id"]]  # which client the caller is
    stored = await owner_conn.fetchval(
        "SELECT secret_hash FROM api_clients WHERE client_id = $1", credentials["client_id"]
    )
    assert stored.startswith("$argon2id$") and credentials["client_secret"] not in stored


async def test_wrong_or_missing_client_credentials_are_refused(api: AsyncTestClient, admin: dict[str, str]) -> None:
    credentials = (await api.post("/v1/operator/merchants", json={"name": "Bakery"}, headers=admin)).json()[
        "credentials"
    ]
    wrong = await token_for(api, {**credentials, "client_secret": credentials["client_secret"] + "x"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"
    unknown = await token_for(api, {**credentials, "client_id": "mer_0000000000000000"})
    assert unknown.status_code == 401 and unknown.json()["code"] == "invalid_credentials"
    grant = await api.post("/v1/auth/token", data={"grant_type": "password", **credentials})
    assert grant.status_code == 422 and grant.json()["error"] == "unsupported_grant_type"
    missing = await api.post("/v1/auth/token", data={"grant_type": "client_credentials"})
    assert missing.status_code == 422 and missing.json()["error"] == "invalid_request"


async def test_input_postgresql_cannot_store_is_a_clear_422(api: AsyncTestClient, admin: dict[str, str]) -> None:
    """Text with a NUL character reached queries through fields no schema constrains, and came back as a 500."""
    not_json = await api.post(
        "/v1/auth/token", content=b'{"grant_type": "client_', headers={"Content-Type": "application/json"}
    )
    nul_client = await token_for(api, {"client_id": "mer_\x00", "client_secret": "x"})
    nul_login = await api.post("/v1/auth/operator/login", json={"username": "admin\x00", "password": "x"})
    nul_path = await api.post("/v1/operator/clients/%00/secret", headers={**admin, "Idempotency-Key": "nul-path"})
    # Bad JSON is a 400 on every route alike (the framework's own answer for the routes it decodes).
    assert not_json.status_code == 400 and not_json.json()["code"] == "bad_request", not_json.text
    for response in (nul_client, nul_login, nul_path):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "invalid_input"
    assert "U+0000" in nul_login.text  # named: the username holds a control character


async def test_wrong_client_secrets_lock_that_client_out_and_successes_do_not_count(
    api: AsyncTestClient, admin: dict[str, str]
) -> None:
    credentials = (await api.post("/v1/operator/merchants", json={"name": "Florist"}, headers=admin)).json()[
        "credentials"
    ]
    for _ in range(12):  # more grants than the failure limit (10): honest use is never throttled
        assert (await token_for(api, credentials)).status_code == 200
    wrong = {**credentials, "client_secret": credentials["client_secret"] + "x"}
    for _ in range(10):
        response = await token_for(api, wrong)
        assert response.status_code == 401 and response.json()["code"] == "invalid_credentials"
    refused = await token_for(api, credentials)  # even the right secret, until the window ends
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) > 0
    other = (await api.post("/v1/operator/merchants", json={"name": "Tailor"}, headers=admin)).json()["credentials"]
    assert (await token_for(api, other)).status_code == 200


async def test_failed_grants_are_limited_per_client_ip(
    api: AsyncTestClient,
    admin: dict[str, str],
    database_url: str,
    sms_gateway: SmsGatewaySimulator,
    city_idp: CityIdpSimulator,
) -> None:
    settings = identity_settings(sms_gateway, city_idp, client_auth_failures_per_ip=3)
    credentials = (await api.post("/v1/operator/merchants", json={"name": "Cobbler"}, headers=admin)).json()[
        "credentials"
    ]
    async with AsyncTestClient(app=create_app(settings, database_url)) as strict:
        # The IP's bucket is shared with the run's other apps (one database, one test client IP) and may
        # hold failures already; three guesses at unknown client ids make sure it holds at least three.
        for _ in range(3):
            guess = {"client_id": f"mer_{uuid.uuid4().hex[:16]}", "client_secret": "guess"}
            assert (await token_for(strict, guess)).status_code in (401, 429)
        refused = await token_for(strict, credentials)
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert (await token_for(api, credentials)).status_code == 200  # the shared app's IP limit is far higher


async def test_partner_gets_a_webhook_secret_kept_sealed(
    api: AsyncTestClient, admin: dict[str, str], owner_conn: asyncpg.Connection
) -> None:
    created = await api.post("/v1/operator/partners", json=PARTNER, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    credentials = body["credentials"]
    assert credentials["client_id"].startswith("par_") and credentials["webhook_secret"].startswith("whsec_")
    sealed = await owner_conn.fetchval(
        "SELECT webhook_secret_sealed FROM partners WHERE id = $1", uuid.UUID(body["partner"]["id"])
    )
    assert credentials["webhook_secret"].encode() not in sealed
    assert ServerSecret(decode_seed(TEST_SERVER_SECRET)).unseal(sealed) == credentials["webhook_secret"]
    token = (await token_for(api, credentials)).json()
    assert token["scope"] == "partner actions:write"
    me = (await api.get("/v1/partner/me", headers=bearer(token))).json()
    assert me["kind"] == "transit" and me["api_base_url"] == PARTNER["api_base_url"]
    assert me["client_ids"] == [credentials["client_id"]]


async def test_partner_input_is_validated(api: AsyncTestClient, admin: dict[str, str]) -> None:
    for bad in ({**PARTNER, "kind": "airline"}, {**PARTNER, "api_base_url": "ftp://x"}, {"name": ""}):
        response = await api.post("/v1/operator/partners", json=bad, headers=admin)
        assert response.status_code == 422 and response.json()["code"] == "invalid_input", bad


async def test_rotating_a_secret_retires_the_old_one(api: AsyncTestClient, admin: dict[str, str]) -> None:
    old = (await api.post("/v1/operator/merchants", json={"name": "Cafe"}, headers=admin)).json()["credentials"]
    rotated = await api.post(f"/v1/operator/clients/{old['client_id']}/secret", headers=admin)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["client_id"] == old["client_id"] and new["client_secret"] != old["client_secret"]
    assert (await token_for(api, old)).status_code == 401
    assert (await token_for(api, new)).status_code == 200
    missing = await api.post("/v1/operator/clients/mer_doesnotexist0000/secret", headers=admin)
    assert missing.status_code == 404 and missing.json()["code"] == "client_not_found"


async def test_a_retried_rotation_with_its_idempotency_key_rotates_nothing(
    api: AsyncTestClient, admin: dict[str, str], owner_conn: asyncpg.Connection
) -> None:
    first = (await api.post("/v1/operator/merchants", json={"name": "Tea house"}, headers=admin)).json()["credentials"]
    url = f"/v1/operator/clients/{first['client_id']}/secret"
    rotated = await api.post(url, headers={**admin, "Idempotency-Key": "rotate-tea-1"})
    assert rotated.status_code == 200, rotated.text
    retried = await api.post(url, headers={**admin, "Idempotency-Key": "rotate-tea-1"})
    assert retried.status_code == 409 and retried.json()["code"] == "already_rotated", retried.text
    assert (await token_for(api, rotated.json())).status_code == 200  # the retry did not replace it
    # The key belongs to that client's rotation: another client, or a new key, rotates as asked.
    other = (await api.post("/v1/operator/merchants", json={"name": "Noodles"}, headers=admin)).json()["credentials"]
    elsewhere = await api.post(
        f"/v1/operator/clients/{other['client_id']}/secret", headers={**admin, "Idempotency-Key": "rotate-tea-1"}
    )
    assert elsewhere.status_code == 200, elsewhere.text
    again = await api.post(url, headers={**admin, "Idempotency-Key": "rotate-tea-2"})
    assert again.status_code == 200 and (await token_for(api, rotated.json())).status_code == 401
    rotations = await owner_conn.fetchval(
        "SELECT count(*) FROM operator_audit_log WHERE action = 'client.rotate_secret' AND details->>'client_id' = $1",
        first["client_id"],
    )
    assert rotations == 2


async def test_a_repeated_idempotency_key_creates_nothing_twice(
    api: AsyncTestClient, admin: dict[str, str], owner_conn: asyncpg.Connection
) -> None:
    key = {"Idempotency-Key": f"create-{uuid.uuid4()}"}
    first = await api.post("/v1/operator/merchants", json={"name": "Noodles"}, headers={**admin, **key})
    assert first.status_code == 201
    again = await api.post("/v1/operator/merchants", json={"name": "Noodles"}, headers={**admin, **key})
    assert again.status_code == 409 and again.json()["code"] == "already_created"
    assert again.json()["id"] == first.json()["merchant"]["id"]
    assert (
        await owner_conn.fetchval("SELECT count(*) FROM merchants WHERE idempotency_key = $1", key["Idempotency-Key"])
        == 1
    )


async def test_auditors_read_but_do_not_change(api: AsyncTestClient, database_url: str) -> None:
    auditor = bearer(await sign_in_operator(api, database_url, "auditor"))
    assert (await api.get("/v1/operator/merchants", headers=auditor)).status_code == 200
    assert (await api.get("/v1/operator/partners", headers=auditor)).status_code == 200
    assert (await api.get("/v1/operator/audit-log", headers=auditor)).status_code == 200
    for path, body in (("/v1/operator/merchants", {"name": "x"}), ("/v1/operator/partners", PARTNER)):
        response = await api.post(path, json=body, headers=auditor)
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert (await api.post("/v1/operator/clients/mer_x/secret", headers=auditor)).status_code == 403


async def test_every_operator_write_is_in_the_audit_log(
    api: AsyncTestClient, database_url: str, owner_conn: asyncpg.Connection
) -> None:
    signed_in = await sign_in_operator(api, database_url, "admin")
    admin = bearer(signed_in)
    merchant = (await api.post("/v1/operator/merchants", json={"name": "Audited"}, headers=admin)).json()
    partner = (await api.post("/v1/operator/partners", json=PARTNER, headers=admin)).json()
    await api.post(f"/v1/operator/clients/{merchant['credentials']['client_id']}/secret", headers=admin)
    entries = (await api.get("/v1/operator/audit-log", params={"limit": 3}, headers=admin)).json()
    assert [e["action"] for e in entries] == ["client.rotate_secret", "partner.create", "merchant.create"]
    assert {e["operator_username"] for e in entries} == {signed_in["username"]}
    assert {e["client_ip"] for e in entries} == {"testclient"}
    assert entries[1]["target_id"] == partner["partner"]["id"] and entries[2]["target_id"] == merchant["merchant"]["id"]
    assert all("client_secret" not in str(e["details"]) and "whsec_" not in str(e["details"]) for e in entries)
    older = (
        await api.get("/v1/operator/audit-log", params={"before_id": entries[-1]["id"], "limit": 1}, headers=admin)
    ).json()
    assert older[0]["id"] < entries[-1]["id"]
    # The log is append-only, even for the service's own role.
    conn = await asyncpg.connect(database_url, server_settings={"role": APP_ROLE})
    try:
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("UPDATE operator_audit_log SET action = 'nothing' WHERE id = $1", entries[0]["id"])
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("DELETE FROM operator_audit_log WHERE id = $1", entries[0]["id"])
    finally:
        await conn.close()
