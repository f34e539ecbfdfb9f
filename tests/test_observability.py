"""Logs an operations team can use: JSON lines, one per request with its route, status, duration and
request id; the id round trip (a trusted proxy's X-Request-ID is kept, anyone else's replaced, and it
comes back in the header and in problem+json bodies); and no secret, token, code or phone number in
any line of a full flow."""

from __future__ import annotations

import json
from typing import Any

import httpx

from api.app import create_app
from tests.helpers import (
    bearer,
    create_operator,
    identity_settings,
    kept_logs,
    last_code,
    random_phone,
    served,
)


async def test_json_request_lines_request_ids_and_no_secrets_in_a_full_flow(
    database_url: str, sms_gateway: Any, city_idp: Any
) -> None:
    settings = identity_settings(sms_gateway, city_idp, trusted_proxies=["127.0.0.1/32"], log_format="json")
    app = create_app(settings, database_url)
    secrets: list[str] = []
    with kept_logs() as kept:
        async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            # Request ids: a trusted proxy's is kept, a plain id only; otherwise one is made.
            kept_id = await client.get("/v1/methodologies", headers={"X-Request-ID": "edge-7f3a"})
            assert kept_id.headers["x-request-id"] == "edge-7f3a"
            odd = await client.get("/v1/methodologies", headers={"X-Request-ID": "bad id\twith tab"})
            assert odd.headers["x-request-id"] != "bad id\twith tab" and len(odd.headers["x-request-id"]) == 32
            missing = await client.get("/v1/no-such-thing", headers={"X-Request-ID": "edge-404"})
            assert missing.status_code == 404 and missing.json()["request_id"] == "edge-404"

            # A full flow whose secrets must not reach the logs.
            phone = random_phone()
            assert (await client.post("/v1/auth/otp", json={"phone": phone})).status_code in (200, 202)
            code = last_code(sms_gateway, phone)
            tokens = (await client.post("/v1/auth/otp/verify", json={"phone": phone, "code": code})).json()
            me = await client.get("/v1/me", headers=bearer(tokens))
            assert me.status_code == 200
            refreshed = (await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
            username = await create_operator(database_url, "admin", password="operator passphrase 42")
            admin = (
                await client.post(
                    "/v1/auth/operator/login", json={"username": username, "password": "operator passphrase 42"}
                )
            ).json()
            shop = (
                await client.post("/v1/operator/merchants", json={"name": "Log shop"}, headers=bearer(admin))
            ).json()
            grant = {
                "grant_type": "client_credentials",
                "client_id": shop["credentials"]["client_id"],
                "client_secret": shop["credentials"]["client_secret"],
            }
            merchant = (await client.post("/v1/auth/token", data=grant)).json()
            wrong = await client.post("/v1/auth/otp/verify", json={"phone": phone, "code": "000000"})
            assert wrong.status_code >= 400
            secrets = [
                phone,
                phone.lstrip("+"),
                code,
                tokens["access_token"],
                tokens["refresh_token"],
                refreshed["access_token"],
                admin["access_token"],
                "operator passphrase 42",
                shop["credentials"]["client_secret"],
                merchant["access_token"],
            ]

    records = [json.loads(line) for line in kept.lines]  # every line is JSON
    requests = [r for r in records if r["logger"] == "carbon_rewards.requests"]
    by_id = {r.get("request_id"): r for r in requests}
    assert "edge-7f3a" in by_id, requests[:3]
    assert by_id["edge-7f3a"]["route"] == "/v1/methodologies" and by_id["edge-7f3a"]["status"] == 200
    assert by_id["edge-7f3a"]["method"] == "GET" and by_id["edge-7f3a"]["duration_ms"] >= 0
    assert by_id["edge-404"]["status"] == 404 and by_id["edge-404"].get("route") is None
    assert any(r.get("route") == "/v1/auth/otp/verify" and r["status"] >= 400 for r in requests)
    text = "\n".join(kept.lines)
    leaked = [secret for secret in secrets if secret and secret in text]
    assert not leaked, leaked


def test_work_shared_by_several_requests_carries_none_of_their_ids() -> None:
    """An ingestion group is started by one request for several: its log lines name no request."""
    from api.observability import _REQUEST_ID, current_request_id, shared_work_context

    token = _REQUEST_ID.set("first-request")
    try:
        assert shared_work_context().run(current_request_id) is None
        assert current_request_id() == "first-request"
    finally:
        _REQUEST_ID.reset(token)
