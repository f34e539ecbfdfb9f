"""Guessing an operator's password or a client's secret is throttled without letting a stranger lock the
owner out: failures are refused per (account, address) and per address, and failures from everywhere
only delay further attempts at the account. Served over a real socket behind a trusted proxy, so each
request can come from the address its X-Forwarded-For names."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from api.app import create_app
from tests.helpers import bearer, create_operator, identity_settings, served, sign_in_operator

PASSWORD = "correct horse battery staple"
ATTACKER, OTHER_ATTACKER, OWNER = "203.0.113.7", "203.0.113.8", "198.51.100.20"


def strict_settings(sms_gateway: Any, city_idp: Any) -> Any:
    return identity_settings(
        sms_gateway,
        city_idp,
        trusted_proxies=["127.0.0.1/32"],
        login_limit_per_username=3,
        login_slow_after=3,
        client_auth_failures_per_client=3,
        client_auth_slow_after=3,
        auth_max_delay_s=1.0,
    )


async def timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


async def test_password_guessing_cannot_lock_the_operator_out_and_is_still_slowed(
    database_url: str, sms_gateway: Any, city_idp: Any
) -> None:
    username = await create_operator(database_url, "admin")
    app = create_app(strict_settings(sms_gateway, city_idp), database_url)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:

        def login(password: str, address: str) -> Any:
            body = {"username": username, "password": password}
            return client.post("/v1/auth/operator/login", json=body, headers={"X-Forwarded-For": address})

        for guess in range(3):
            assert (await login(f"guess number {guess}", ATTACKER)).status_code == 401
        refused = await login(PASSWORD, ATTACKER)  # this address has failed too often, even with the password
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        owner, waited = await timed(login(PASSWORD, OWNER))
        assert owner.status_code == 200, owner.text  # the owner, elsewhere, still gets in
        assert waited >= 0.25  # after a wait: the account is being guessed at
        guess, slowed = await timed(login("yet another guess", OTHER_ATTACKER))
        assert guess.status_code == 401 and slowed >= 0.25  # a new address's guesses are slowed too
        again, slower = await timed(login("and another", OTHER_ATTACKER))
        assert again.status_code == 401 and slower >= 0.5  # and more with every failure


async def test_secret_guessing_cannot_lock_a_client_out_and_is_still_slowed(
    api: Any, database_url: str, sms_gateway: Any, city_idp: Any
) -> None:
    admin = bearer(await sign_in_operator(api, database_url, "admin"))
    shop = await api.post("/v1/operator/merchants", json={"name": f"Shop {uuid.uuid4().hex[:6]}"}, headers=admin)
    credentials = shop.json()["credentials"]
    app = create_app(strict_settings(sms_gateway, city_idp), database_url)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:

        def grant(secret: str, address: str) -> Any:
            form = {"grant_type": "client_credentials", "client_id": credentials["client_id"], "client_secret": secret}
            return client.post("/v1/auth/token", data=form, headers={"X-Forwarded-For": address})

        for guess in range(3):
            assert (await grant(f"cs_guess{guess}", ATTACKER)).status_code == 401
        assert (await grant(credentials["client_secret"], ATTACKER)).status_code == 429
        owner, waited = await timed(grant(credentials["client_secret"], OWNER))
        assert owner.status_code == 200 and waited >= 0.25, owner.text
        guess, slowed = await timed(grant("cs_more", OTHER_ATTACKER))
        assert guess.status_code == 401 and slowed >= 0.25
