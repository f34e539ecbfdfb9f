"""Merchants redeem points: offers, holds with one-time codes, capture, void, cancel, expiry, refund,
statements and idempotent retries, over HTTP against real PostgreSQL, and every race with one winner.

The app is served by uvicorn (``served``) so that concurrent requests really run side by side. Residents
get their points straight from the ledger (as a credited action would give them).
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.app import create_app
from integrations.simulators.city_idp import CityIdpSimulator
from integrations.simulators.sms_gateway import SmsGatewaySimulator
from ledger import (
    Ledger,
    TransferCode,
    expiry_void_id,
    merchant_points_account,
    verify_database,
)
from tests.helpers import (
    LOG_ORIGIN,
    MerchantHandle,
    bearer,
    fund_resident,
    identity_settings,
    register_merchant,
    served,
    sign_in_operator,
    sign_in_resident,
)


def service_settings(sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "db_pool_size": 20,
        "db_pool_timeout_s": 120,
        "pending_expiry_interval_s": 0.2,
        "capture_failures_per_merchant": 1000,
    }
    values.update(overrides)
    return identity_settings(sms_gateway, city_idp, **values)


@pytest.fixture(scope="module")
async def service(
    database_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service_settings(sms_gateway, city_idp), database_url)
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300, keepalive_expiry=1)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        yield client


@pytest.fixture(scope="module")
async def short_lived(
    database_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator
) -> AsyncIterator[httpx.AsyncClient]:
    """The same service with codes that expire after 2 s."""
    app = create_app(service_settings(sms_gateway, city_idp, redemption_code_ttl_s=2), database_url)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=1)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        yield client


@pytest.fixture(scope="module")
async def admin(service: httpx.AsyncClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(service, database_url, "admin"))


@pytest.fixture
async def merchant(service: httpx.AsyncClient, admin: dict[str, str]) -> MerchantHandle:
    return await register_merchant(service, admin)


async def new_resident(
    client: httpx.AsyncClient, sms_gateway: SmsGatewaySimulator, ledger: Ledger, points: int
) -> dict[str, Any]:
    headers = bearer(await sign_in_resident(client, sms_gateway))
    resident_id = uuid.UUID((await client.get("/v1/me", headers=headers)).json()["id"])
    if points:
        await fund_resident(ledger, resident_id, points)
    return {"headers": headers, "id": resident_id}


async def new_offer(client: httpx.AsyncClient, merchant: MerchantHandle, **fields: Any) -> dict[str, Any]:
    body = {"title": "Oat latte", "description": "One oat latte, any size", "points_price": 10, **fields}
    created = await client.post("/v1/merchant/offers", json=body, headers=merchant.headers)
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


async def redeem(
    client: httpx.AsyncClient, resident: dict[str, Any], offer_id: str, key: str | None = None
) -> httpx.Response:
    headers = {**resident["headers"], **({"Idempotency-Key": key} if key else {})}
    return await client.post("/v1/me/redemptions", json={"offer_id": offer_id}, headers=headers)


async def balance(client: httpx.AsyncClient, resident: dict[str, Any]) -> dict[str, int]:
    return (await client.get("/v1/me/balance", headers=resident["headers"])).json()  # type: ignore[no-any-return]


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text


# ------------------------------------------------------------------------------------------ end to end


async def test_a_whole_redemption_from_offer_to_refund(
    service: httpx.AsyncClient, merchant: MerchantHandle, sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    period_start = datetime.now(UTC) - timedelta(seconds=1)
    offer = await new_offer(service, merchant, points_price=30, stock=5)
    resident = await new_resident(service, sms_gateway, ledger, 100)
    browse = await service.get("/v1/offers", params={"limit": 200}, headers=resident["headers"])
    assert offer["id"] in [o["id"] for o in browse.json()["items"]]

    held = await redeem(service, resident, offer["id"])
    assert held.status_code == 201, held.text
    body = held.json()
    assert body["status"] == "held" and body["points"] == 30 and body["offer_id"] == offer["id"]
    assert (
        len(body["code"]) == 11
        and body["code"][5] == "-"
        and body["qr_payload"].endswith(body["code"].replace("-", ""))
    )
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC) + timedelta(minutes=9)
    during = await balance(service, resident)
    assert (during["points_available"], during["points_held"]) == (70, 30)
    mine = await service.get(f"/v1/me/redemptions/{body['id']}", headers=resident["headers"])
    assert mine.json()["code"] == body["code"]
    assert (await service.get(f"/v1/merchant/offers/{offer['id']}", headers=merchant.headers)).json()["stock"] == 4

    captured = await service.post(
        "/v1/merchant/redemptions:capture",
        json={"code": body["code"].lower().replace("-", " ")},
        headers=merchant.headers,
    )
    assert captured.status_code == 200, captured.text
    assert captured.json()["status"] == "captured" and captured.json()["points"] == 30
    assert captured.json()["captured_at"] is not None
    after = await balance(service, resident)
    assert (after["points_available"], after["points_held"], after["points_spent"]) == (70, 0, 30)
    assert (await service.get(f"/v1/me/redemptions/{body['id']}", headers=resident["headers"])).json()["code"] is None

    refund = await service.post(
        f"/v1/merchant/redemptions/{body['id']}/refund", json={"reason": "cold coffee"}, headers=merchant.headers
    )
    assert refund.status_code == 200, refund.text
    assert refund.json()["status"] == "refunded" and refund.json()["refund_reason"] == "cold coffee"
    assert (await balance(service, resident))["points_available"] == 100
    again = await service.post(
        f"/v1/merchant/redemptions/{body['id']}/refund", json={"reason": "again"}, headers=merchant.headers
    )
    problem(again, 409, "already_refunded")

    period = {"from": period_start.isoformat(), "to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    statement = (await service.get("/v1/merchant/statement", params=period, headers=merchant.headers)).json()
    assert [(line["event"], line["points"]) for line in statement["lines"]] == [("captured", 30), ("refunded", 30)]
    assert statement["totals"]["captured"] == {"count": 1, "points": 30}
    assert statement["totals"]["refunded"] == {"count": 1, "points": 30}
    assert statement["net_points"] == statement["ledger_net_points"] == 0


async def test_the_statement_totals_equal_the_ledger_movements_and_stream_as_csv(
    service: httpx.AsyncClient, merchant: MerchantHandle, sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    offer = await new_offer(service, merchant, points_price=7)
    resident = await new_resident(service, sms_gateway, ledger, 100)
    codes = [(await redeem(service, resident, offer["id"])).json() for _ in range(5)]
    for held in codes[:3]:
        assert (
            await service.post(
                "/v1/merchant/redemptions:capture", json={"code": held["code"]}, headers=merchant.headers
            )
        ).status_code == 200
    assert (
        await service.post(
            f"/v1/merchant/redemptions/{codes[0]['id']}/refund", json={"reason": "x"}, headers=merchant.headers
        )
    ).status_code == 200
    assert (
        await service.post(f"/v1/merchant/redemptions/{codes[3]['id']}/void", headers=merchant.headers)
    ).status_code == 200
    assert (
        await service.post(f"/v1/me/redemptions/{codes[4]['id']}/cancel", headers=resident["headers"])
    ).status_code == 200
    end = datetime.now(UTC) + timedelta(seconds=1)
    period = {"from": start.isoformat(), "to": end.isoformat()}

    statement = (
        await service.get("/v1/merchant/statement", params={**period, "limit": 2}, headers=merchant.headers)
    ).json()
    totals = {event: (t["count"], t["points"]) for event, t in statement["totals"].items()}
    assert totals == {"captured": (3, 21), "refunded": (1, 7), "voided": (2, 14), "expired": (0, 0)}
    assert statement["net_points"] == 14
    async with ledger.pool.acquire() as conn:
        from ledger import posted_movements

        movements = await posted_movements(conn, merchant_points_account(uuid.UUID(merchant.id)).id, start, end)
    assert movements.credits == 21 and movements.debits == 7
    assert statement["ledger_net_points"] == movements.net_credit == statement["net_points"]
    lines, cursor = list(statement["lines"]), statement["next_cursor"]
    while cursor:
        page = (
            await service.get(
                "/v1/merchant/statement", params={**period, "limit": 2, "cursor": cursor}, headers=merchant.headers
            )
        ).json()
        lines += page["lines"]
        cursor = page["next_cursor"]
    assert len(lines) == 6 and len({(line["redemption_id"], line["event"]) for line in lines}) == 6

    for request in ({"params": {**period, "format": "csv"}}, {"params": period, "headers": {"Accept": "text/csv"}}):
        response = await service.get(
            "/v1/merchant/statement",
            params=request["params"],
            headers={**merchant.headers, **request.get("headers", {})},
        )
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert sum(1 for r in rows if r["row"] == "line") == 6
        csv_totals = {r["event"]: int(r["points"]) for r in rows if r["row"] == "total"}
        assert csv_totals == {"captured": 21, "refunded": 7, "voided": 14, "expired": 0, "net": 14}
    problem(
        await service.get(
            "/v1/merchant/statement",
            params={"from": end.isoformat(), "to": start.isoformat()},
            headers=merchant.headers,
        ),
        422,
        "invalid_period",
    )


async def test_merchants_list_their_redemptions_by_status_offer_and_time(
    service: httpx.AsyncClient,
    admin: dict[str, str],
    merchant: MerchantHandle,
    sms_gateway: SmsGatewaySimulator,
    ledger: Ledger,
) -> None:
    other = await register_merchant(service, admin)
    latte, tea = await new_offer(service, merchant, points_price=1), await new_offer(service, merchant, points_price=1)
    resident = await new_resident(service, sms_gateway, ledger, 10)
    before = datetime.now(UTC) - timedelta(seconds=1)
    held = [(await redeem(service, resident, offer["id"])).json() for offer in (latte, tea, latte)]
    await service.post("/v1/merchant/redemptions:capture", json={"code": held[0]["code"]}, headers=merchant.headers)
    await service.post(f"/v1/merchant/redemptions/{held[1]['id']}/void", headers=merchant.headers)

    async def listed(**params: Any) -> list[str]:
        ids, cursor = [], None
        while True:
            page = (
                await service.get(
                    "/v1/merchant/redemptions",
                    params={**params, "limit": 1, **({"cursor": cursor} if cursor else {})},
                    headers=merchant.headers,
                )
            ).json()
            ids += [r["id"] for r in page["items"]]
            if not (cursor := page["next_cursor"]):
                return ids

    assert await listed() == [h["id"] for h in reversed(held)]
    assert await listed(status="captured") == [held[0]["id"]]
    assert await listed(offer_id=latte["id"]) == [held[2]["id"], held[0]["id"]]
    assert await listed(status="held", offer_id=latte["id"]) == [held[2]["id"]]
    assert await listed(**{"from": before.isoformat(), "to": held[1]["created_at"]}) == [held[0]["id"]]
    assert (await service.get("/v1/merchant/redemptions", headers=other.headers)).json()["items"] == []
    mine = (await service.get("/v1/me/redemptions", headers=resident["headers"])).json()["items"]
    assert [r["id"] for r in mine] == [h["id"] for h in reversed(held)]
    assert [r["code"] is not None for r in mine] == [True, False, False]
    problem(
        await service.get("/v1/merchant/redemptions", params={"status": "lost"}, headers=merchant.headers),
        422,
        "invalid_input",
    )


async def test_offers_are_the_merchants_own_and_residents_see_the_open_ones(
    service: httpx.AsyncClient, admin: dict[str, str], sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    merchant, other = await register_merchant(service, admin), await register_merchant(service, admin)
    offer = await new_offer(service, merchant, stock=1, per_resident_limit=2)
    listed = await service.get("/v1/merchant/offers", headers=merchant.headers)
    assert [o["id"] for o in listed.json()["items"]] == [offer["id"]]
    problem(await service.get(f"/v1/merchant/offers/{offer['id']}", headers=other.headers), 404, "offer_not_found")
    problem(
        await service.patch(f"/v1/merchant/offers/{offer['id']}", json={"status": "paused"}, headers=other.headers),
        404,
        "offer_not_found",
    )

    resident = await new_resident(service, sms_gateway, ledger, 100)
    paused = await service.patch(
        f"/v1/merchant/offers/{offer['id']}", json={"status": "paused"}, headers=merchant.headers
    )
    assert paused.status_code == 200 and paused.json()["status"] == "paused" and paused.json()["stock"] == 1
    browse = await service.get("/v1/offers", params={"limit": 200}, headers=resident["headers"])
    assert offer["id"] not in [o["id"] for o in browse.json()["items"]]
    problem(await redeem(service, resident, offer["id"]), 409, "offer_unavailable")
    resumed = await service.patch(
        f"/v1/merchant/offers/{offer['id']}", json={"status": "active", "stock": None}, headers=merchant.headers
    )
    assert resumed.json()["stock"] is None
    assert (await redeem(service, resident, offer["id"])).status_code == 201
    assert (await redeem(service, resident, offer["id"])).status_code == 201
    problem(await redeem(service, resident, offer["id"]), 409, "redemption_limit")
    problem(await redeem(service, resident, str(uuid.uuid4())), 404, "offer_not_found")

    for bad in (
        {"title": "x", "points_price": 0},
        {"title": "", "points_price": 1},
        {"title": "x", "points_price": 1, "colour": "red"},
        {"title": "x", "points_price": 1, "valid_from": "2030-01-02T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"},
    ):
        problem(await service.post("/v1/merchant/offers", json=bad, headers=merchant.headers), 422, "invalid_input")
    problem(await service.get("/v1/merchant/offers", headers=resident["headers"]), 403, "forbidden")
    problem(await service.get("/v1/offers", headers=merchant.headers), 403, "forbidden")


async def test_a_retry_with_the_same_idempotency_key_answers_the_same_and_holds_once(
    service: httpx.AsyncClient, merchant: MerchantHandle, sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    offer = await new_offer(service, merchant, points_price=10)
    other_offer = await new_offer(service, merchant, points_price=10)
    resident = await new_resident(service, sms_gateway, ledger, 50)
    key = f"redeem-{uuid.uuid4()}"
    first, *retries = await asyncio.gather(*(redeem(service, resident, offer["id"], key) for _ in range(5)))
    assert first.status_code == 201
    for retry in retries:
        assert retry.status_code == 201 and retry.json() == first.json()
    assert (await balance(service, resident))["points_held"] == 10
    problem(await redeem(service, resident, other_offer["id"], key), 409, "idempotency_key_reused")

    offer_key = {"Idempotency-Key": f"offer-{uuid.uuid4()}"}
    body = {"title": "Refill", "points_price": 3}
    created = [
        await service.post("/v1/merchant/offers", json=body, headers={**merchant.headers, **offer_key})
        for _ in range(2)
    ]
    assert created[0].status_code == created[1].status_code == 201 and created[0].json() == created[1].json()
    assert created[1].headers["idempotent-replayed"] == "true"
    problem(
        await service.post(
            "/v1/merchant/offers", json={**body, "points_price": 4}, headers={**merchant.headers, **offer_key}
        ),
        409,
        "idempotency_key_reused",
    )


async def test_capture_refuses_unknown_foreign_voided_and_captured_codes(
    service: httpx.AsyncClient,
    admin: dict[str, str],
    merchant: MerchantHandle,
    sms_gateway: SmsGatewaySimulator,
    ledger: Ledger,
) -> None:
    other = await register_merchant(service, admin)
    offer = await new_offer(service, merchant, points_price=5, stock=2)
    resident = await new_resident(service, sms_gateway, ledger, 50)
    held = (await redeem(service, resident, offer["id"])).json()

    async def capture(code: str, who: MerchantHandle = merchant) -> httpx.Response:
        return await service.post("/v1/merchant/redemptions:capture", json={"code": code}, headers=who.headers)

    problem(await capture("AAAAA-BBBBB"), 404, "code_not_found")
    problem(await capture("not a code"), 404, "code_not_found")
    problem(await capture(held["code"], other), 404, "code_not_found")
    assert (await capture(held["code"])).status_code == 200
    problem(await capture(held["code"]), 409, "already_captured")
    problem(
        await service.post(f"/v1/merchant/redemptions/{held['id']}/void", headers=merchant.headers),
        409,
        "already_captured",
    )

    second = (await redeem(service, resident, offer["id"])).json()
    problem(
        await service.post(
            f"/v1/me/redemptions/{second['id']}/cancel", headers=bearer(await sign_in_resident(service, sms_gateway))
        ),
        404,
        "redemption_not_found",
    )
    cancelled = await service.post(f"/v1/me/redemptions/{second['id']}/cancel", headers=resident["headers"])
    assert (
        cancelled.status_code == 200
        and cancelled.json()["status"] == "voided"
        and cancelled.json()["voided_by"] == "resident"
    )
    assert (await service.get(f"/v1/merchant/offers/{offer['id']}", headers=merchant.headers)).json()["stock"] == 1
    problem(await capture(second["code"]), 409, "code_voided")
    problem(
        await service.post(
            f"/v1/merchant/redemptions/{second['id']}/refund", json={"reason": "x"}, headers=merchant.headers
        ),
        409,
        "not_captured",
    )
    assert (await balance(service, resident))["points_available"] == 45


async def test_a_code_is_unique_among_held_redemptions(
    service: httpx.AsyncClient,
    merchant: MerchantHandle,
    sms_gateway: SmsGatewaySimulator,
    ledger: Ledger,
    database_url: str,
) -> None:
    """Storing a held redemption whose code another held one has is refused, so a new code is drawn."""
    import asyncpg

    from api.redemptions.models import Redemption
    from api.redemptions.repository import insert_held

    offer = await new_offer(service, merchant, points_price=1)
    resident = await new_resident(service, sms_gateway, ledger, 1)
    held = (await redeem(service, resident, offer["id"])).json()
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM redemptions WHERE id = $1", uuid.UUID(held["id"]))
        twin = Redemption(**{**dict(row), "id": uuid.uuid4()})

        class RolledBack(Exception):
            pass

        with pytest.raises(RolledBack):
            async with conn.transaction():
                assert await insert_held(conn, twin) is False
                raise RolledBack
    finally:
        await conn.close()


async def test_failed_captures_are_limited_per_merchant_but_known_codes_do_not_count(
    database_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator, ledger: Ledger
) -> None:
    # One window for the whole test (it started in 2001 and ends in 2033): a test never straddles two.
    settings = service_settings(sms_gateway, city_idp, capture_failures_per_merchant=3, capture_failure_window_s=10**9)
    app = create_app(settings, database_url)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=120) as client:
        admin = bearer(await sign_in_operator(client, database_url, "admin"))
        merchant, neighbour = await register_merchant(client, admin), await register_merchant(client, admin)
        offer = await new_offer(client, merchant, points_price=1)
        resident = await new_resident(client, sms_gateway, ledger, 10)
        held = [(await redeem(client, resident, offer["id"])).json() for _ in range(2)]
        capture = "/v1/merchant/redemptions:capture"
        assert (await client.post(capture, json={"code": held[0]["code"]}, headers=merchant.headers)).status_code == 200
        for _ in range(3):
            problem(
                await client.post(capture, json={"code": held[0]["code"]}, headers=merchant.headers),
                409,
                "already_captured",
            )
        for _ in range(3):
            problem(
                await client.post(capture, json={"code": "ZZZZZ-ZZZZZ"}, headers=merchant.headers),
                404,
                "code_not_found",
            )
        limited = await client.post(capture, json={"code": held[1]["code"]}, headers=merchant.headers)
        problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        problem(
            await client.post(capture, json={"code": "ZZZZZ-ZZZZZ"}, headers=neighbour.headers), 404, "code_not_found"
        )


async def test_an_expired_code_releases_the_points_and_the_stock(
    short_lived: httpx.AsyncClient, admin: dict[str, str], sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    merchant = await register_merchant(short_lived, admin)
    offer = await new_offer(short_lived, merchant, points_price=20, stock=1)
    resident = await new_resident(short_lived, sms_gateway, ledger, 40)
    held = (await redeem(short_lived, resident, offer["id"])).json()
    deadline = asyncio.get_running_loop().time() + 60
    while (await short_lived.get(f"/v1/me/redemptions/{held['id']}", headers=resident["headers"])).json()[
        "status"
    ] == "held":
        assert asyncio.get_running_loop().time() < deadline, "the expiry job never expired the redemption"
        await asyncio.sleep(0.2)
    mine = (await short_lived.get(f"/v1/me/redemptions/{held['id']}", headers=resident["headers"])).json()
    assert mine["status"] == "expired" and mine["expired_at"] is not None and mine["code"] is None
    assert (await balance(short_lived, resident))["points_available"] == 40
    assert (await short_lived.get(f"/v1/merchant/offers/{offer['id']}", headers=merchant.headers)).json()["stock"] == 1
    problem(
        await short_lived.post(
            "/v1/merchant/redemptions:capture", json={"code": held["code"]}, headers=merchant.headers
        ),
        409,
        "code_expired",
    )
    problem(
        await short_lived.post(f"/v1/me/redemptions/{held['id']}/cancel", headers=resident["headers"]),
        409,
        "code_expired",
    )


# ------------------------------------------------------------------------------------------------ races


async def test_200_simultaneous_redemptions_against_a_balance_for_50_hold_exactly_50(
    service: httpx.AsyncClient, merchant: MerchantHandle, sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    offer = await new_offer(service, merchant, points_price=3)
    resident = await new_resident(service, sms_gateway, ledger, 150)
    responses = await asyncio.gather(*(redeem(service, resident, offer["id"]) for _ in range(200)))
    statuses = [(r.status_code, r.json().get("code") if r.status_code == 409 else "held") for r in responses]
    assert statuses.count((201, "held")) == 50, statuses
    assert statuses.count((409, "insufficient_points")) == 150
    after = await balance(service, resident)
    assert (after["points_available"], after["points_held"]) == (0, 150)


async def test_a_stock_of_10_with_50_simultaneous_buyers_sells_10(
    service: httpx.AsyncClient, merchant: MerchantHandle, sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    offer = await new_offer(service, merchant, points_price=5, stock=10)
    buyers = await asyncio.gather(*(new_resident(service, sms_gateway, ledger, 5) for _ in range(50)))
    responses = await asyncio.gather(*(redeem(service, buyer, offer["id"]) for buyer in buyers))
    assert sorted(r.status_code for r in responses) == [201] * 10 + [409] * 40
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"out_of_stock"}
    assert (await service.get(f"/v1/merchant/offers/{offer['id']}", headers=merchant.headers)).json()["stock"] == 0
    held = [b for b, r in zip(buyers, responses, strict=True) if r.status_code == 201]
    assert [(await balance(service, b))["points_held"] for b in held] == [5] * 10


async def test_100_simultaneous_captures_of_one_code_capture_once(
    service: httpx.AsyncClient, merchant: MerchantHandle, sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    offer = await new_offer(service, merchant, points_price=9)
    resident = await new_resident(service, sms_gateway, ledger, 9)
    held = (await redeem(service, resident, offer["id"])).json()
    responses = await asyncio.gather(
        *(
            service.post("/v1/merchant/redemptions:capture", json={"code": held["code"]}, headers=merchant.headers)
            for _ in range(100)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 99
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"already_captured"}
    assert (await balance(service, resident))["points_spent"] == 9


async def test_two_simultaneous_refunds_refund_once(
    service: httpx.AsyncClient, merchant: MerchantHandle, sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    offer = await new_offer(service, merchant, points_price=4)
    resident = await new_resident(service, sms_gateway, ledger, 4)
    held = (await redeem(service, resident, offer["id"])).json()
    await service.post("/v1/merchant/redemptions:capture", json={"code": held["code"]}, headers=merchant.headers)
    url = f"/v1/merchant/redemptions/{held['id']}/refund"
    responses = await asyncio.gather(
        *(
            service.post(url, json={"reason": "twice"}, headers={**merchant.headers, "Idempotency-Key": f"r{i}"})
            for i in range(2)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 409]
    assert [r.json()["code"] for r in responses if r.status_code == 409] == ["already_refunded"]
    assert (await balance(service, resident))["points_available"] == 4


async def _resolution(ledger: Ledger, redemption_id: uuid.UUID) -> str | None:
    """What the ledger says became of a redemption's hold: its one resolving transfer, named."""
    hold = uuid.uuid5(redemption_id, "hold")
    candidates = {
        uuid.uuid5(redemption_id, "capture"): "captured",
        uuid.uuid5(redemption_id, "void"): "voided",
        expiry_void_id(hold): "expired",
    }
    found = await ledger.lookup_transfers(list(candidates))
    assert len(found) <= 1, f"the hold of {redemption_id} was resolved {len(found)} times"
    for transfer_id, transfer in found.items():
        assert transfer.pending_id == hold
        if candidates[transfer_id] == "expired":
            assert transfer.code == TransferCode.PENDING_EXPIRED
        return candidates[transfer_id]
    return None


async def test_capture_void_cancel_and_expiry_racing_on_one_hold_have_one_winner(
    short_lived: httpx.AsyncClient, admin: dict[str, str], sms_gateway: SmsGatewaySimulator, ledger: Ledger
) -> None:
    """Each round: a capture, a merchant's void and a resident's cancel race each other and the expiry
    (the code lives 2 s; the racers start around then). Exactly one wins, and the ledger agrees."""
    merchant = await register_merchant(short_lived, admin)
    offer = await new_offer(short_lived, merchant, points_price=2, stock=1000)
    resident = await new_resident(short_lived, sms_gateway, ledger, 2 * 12)
    winners = []
    for round_ in range(12):
        held = (await redeem(short_lived, resident, offer["id"])).json()
        await asyncio.sleep(1.6 + 0.05 * round_)
        head_starts = iter(random.Random(round_).sample([0.0, 0.01, 0.02], 3))  # each racer leads in some rounds

        async def after_head_start(url: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
            await asyncio.sleep(next(head_starts))
            return await short_lived.post(url, json=body, headers=headers)

        capture, void, cancel = await asyncio.gather(
            after_head_start("/v1/merchant/redemptions:capture", merchant.headers, {"code": held["code"]}),
            after_head_start(f"/v1/merchant/redemptions/{held['id']}/void", merchant.headers),
            after_head_start(f"/v1/me/redemptions/{held['id']}/cancel", resident["headers"]),
        )
        succeeded = [
            name for name, r in (("captured", capture), ("voided", void), ("voided", cancel)) if r.status_code == 200
        ]
        assert len(succeeded) <= 1, (capture.text, void.text, cancel.text)
        deadline = asyncio.get_running_loop().time() + 60
        while (row := (await short_lived.get(f"/v1/me/redemptions/{held['id']}", headers=resident["headers"])).json())[
            "status"
        ] == "held":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        assert await _resolution(ledger, uuid.UUID(held["id"])) == row["status"]
        if succeeded:
            assert succeeded == [row["status"]]
        else:
            assert row["status"] == "expired"
        winners.append(row["status"])
    spent = winners.count("captured") * 2
    final = await balance(short_lived, resident)
    assert (final["points_spent"], final["points_held"], final["points_available"]) == (spent, 0, 24 - spent)
    assert (await short_lived.get(f"/v1/merchant/offers/{offer['id']}", headers=merchant.headers)).json()[
        "stock"
    ] == 1000 - winners.count("captured")


async def test_the_ledger_verifies_after_all_of_it(database_url: str, ledger: Ledger) -> None:
    """Runs last in this module: every hold, capture, void, expiry and refund above is in a ledger that verifies."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        report = await verify_database(conn, LOG_ORIGIN)
    finally:
        await conn.close()
    assert report.ok, report.problems
    assert (await ledger.recompute_balances()).ok
