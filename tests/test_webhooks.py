"""Outbound webhooks through the transactional outbox, to a real receiver on 127.0.0.1 that fails,
goes down and comes back: every event arrives, signed, across a dispatcher restart; dead letters are
redelivered by an operator; dispatchers of several workers side by side deliver each event once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from integrations.simulators.city_idp import CityIdpSimulator
from integrations.simulators.partner import PartnerSimulator
from integrations.simulators.sms_gateway import SmsGatewaySimulator
from integrations.simulators.webhook_receiver import WebhookReceiver
from ledger import Ledger
from tests.helpers import (
    MerchantHandle,
    bearer,
    fund_resident,
    identity_settings,
    link_account,
    open_ledger,
    push,
    register_merchant,
    register_partner,
    served,
    sign_in_operator,
    sign_in_resident,
)
from tests.helpers import yesterday_at
from tests.test_actions_ingest import trip

REDEMPTION_EVENTS = [
    "redemption.held",
    "redemption.captured",
    "redemption.voided",
    "redemption.expired",
    "redemption.refunded",
]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r  # type: ignore[misc]


@asynccontextmanager
async def service(
    database_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    values: dict[str, Any] = {
        "db_pool_size": 10,
        "db_pool_timeout_s": 120,
        "pending_expiry_interval_s": 0.2,
        "redemption_code_ttl_s": 600,
        "webhook_timeout_s": 20,  # a stall of this machine must not look like a failed delivery
        "webhook_backoff_s": 0.05,
        "webhook_max_backoff_s": 0.3,
        "webhook_poll_interval_s": 0.05,
        "webhook_breaker_threshold": 3,
        "webhook_breaker_cooldown_s": 0.3,
        "webhook_max_attempts": 100,
        **overrides,
    }
    app = create_app(identity_settings(sms_gateway, city_idp, **values), database_url)
    limits = httpx.Limits(keepalive_expiry=1)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        yield client


async def eventually(condition: Callable[[], Any], what: str, seconds: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def resident_with_points(
    client: httpx.AsyncClient, sms: SmsGatewaySimulator, ledger: Ledger, points: int
) -> dict[str, str]:
    headers = bearer(await sign_in_resident(client, sms))
    await fund_resident(ledger, uuid.UUID((await client.get("/v1/me", headers=headers)).json()["id"]), points)
    return headers


async def an_offer(client: httpx.AsyncClient, merchant: MerchantHandle, price: int = 5) -> str:
    created = await client.post(
        "/v1/merchant/offers", json={"title": "Tea", "points_price": price}, headers=merchant.headers
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def subscribe(
    client: httpx.AsyncClient, headers: dict[str, str], receiver: WebhookReceiver, events: list[str]
) -> None:
    registered = await client.put(
        "/v1/merchant/webhook" if "redemption.held" in events else "/v1/partner/webhook",
        json={"url": receiver.webhook_url, "events": events},
        headers=headers,
    )
    assert registered.status_code == 201, registered.text
    assert registered.json()["secret"].startswith("whsec_")
    receiver.configure(registered.json()["secret"])


async def test_every_event_arrives_signed_through_failures_an_outage_and_a_dispatcher_restart(
    database_url: str,
    sms_gateway: SmsGatewaySimulator,
    city_idp: CityIdpSimulator,
    ledger: Ledger,
    receiver: WebhookReceiver,
    owner_conn: asyncpg.Connection,
) -> None:
    expected: set[tuple[str, str]] = set()
    async with service(database_url, sms_gateway, city_idp, redemption_code_ttl_s=3) as client:
        admin = bearer(await sign_in_operator(client, database_url, "admin"))
        merchant = await register_merchant(client, admin)
        await subscribe(client, merchant.headers, receiver, ["redemption.held"])
        changed = await client.put(
            "/v1/merchant/webhook",
            json={"url": receiver.webhook_url, "events": REDEMPTION_EVENTS},
            headers=merchant.headers,
        )
        assert changed.status_code == 200 and changed.json()["secret"] is None
        assert (await client.get("/v1/merchant/webhook", headers=merchant.headers)).json()["events"] == sorted(
            REDEMPTION_EVENTS
        )
        offer = await an_offer(client, merchant)
        resident = await resident_with_points(client, sms_gateway, ledger, 100)

        async def redeem() -> dict[str, Any]:
            held = await client.post("/v1/me/redemptions", json={"offer_id": offer}, headers=resident)
            assert held.status_code == 201, held.text
            expected.add(("redemption.held", held.json()["id"]))
            return held.json()  # type: ignore[no-any-return]

        receiver.fail_next(4)  # the first attempts fail with 503
        first = await redeem()
        captured = await client.post(
            "/v1/merchant/redemptions:capture", json={"code": first["code"]}, headers=merchant.headers
        )
        assert captured.status_code == 200
        refunded = await client.post(
            f"/v1/merchant/redemptions/{first['id']}/refund", json={"reason": "r"}, headers=merchant.headers
        )
        assert refunded.status_code == 200
        expected |= {("redemption.captured", first["id"]), ("redemption.refunded", first["id"])}
        second = await redeem()
        assert (await client.post(f"/v1/me/redemptions/{second['id']}/cancel", headers=resident)).status_code == 200
        expected.add(("redemption.voided", second["id"]))
        third = await redeem()  # left to expire
        expected.add(("redemption.expired", third["id"]))
        await eventually(lambda: {("redemption.held", first["id"])} <= received(receiver), "the first event")

        receiver.stop()  # the endpoint goes down
        fourth = await redeem()
        assert (
            await client.post(f"/v1/merchant/redemptions/{fourth['id']}/void", headers=merchant.headers)
        ).status_code == 200
        expected.add(("redemption.voided", fourth["id"]))
        await asyncio.sleep(1)
    # The service (and its dispatcher) stopped with deliveries pending; the endpoint comes back, and so does the service.
    assert ("redemption.voided", fourth["id"]) not in received(receiver)
    receiver.restart()
    async with service(database_url, sms_gateway, city_idp) as client:
        await eventually(lambda: expected <= received(receiver), "every event", seconds=90)
    assert received(receiver) == expected
    assert receiver.bad_signatures == 0
    assert receiver.deliveries > len(expected)  # the failed attempts were tried again
    events = await owner_conn.fetch("SELECT id, type FROM outbox_events WHERE owner_id = $1", uuid.UUID(merchant.id))
    assert len(events) == len(expected) == len({e["id"] for e in events})
    statuses = await owner_conn.fetch(
        "SELECT d.status FROM webhook_deliveries AS d JOIN outbox_events AS e ON e.id = d.event_id WHERE e.owner_id = $1",
        uuid.UUID(merchant.id),
    )
    assert [s["status"] for s in statuses] == ["delivered"] * len(expected)


def received(receiver: WebhookReceiver) -> set[tuple[str, str]]:
    return {(e["type"], e["data"].get("redemption_id") or e["data"]["action_id"]) for e in receiver.events.values()}


async def test_a_dead_delivery_is_redelivered_by_an_admin_and_audited(
    fresh_database_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator, receiver: WebhookReceiver
) -> None:
    """On a database of its own: no other app's dispatcher (with other settings) may attempt the delivery."""
    database_url = fresh_database_url
    async with (
        open_ledger(database_url) as ledger,
        service(database_url, sms_gateway, city_idp, webhook_max_attempts=2, webhook_breaker_threshold=100) as client,
    ):
        admin = bearer(await sign_in_operator(client, database_url, "admin"))
        auditor = bearer(await sign_in_operator(client, database_url, "auditor"))
        merchant = await register_merchant(client, admin)
        await subscribe(client, merchant.headers, receiver, ["redemption.held"])
        receiver.fail_next(10**6)
        resident = await resident_with_points(client, sms_gateway, ledger, 10)
        held = (
            await client.post(
                "/v1/me/redemptions", json={"offer_id": await an_offer(client, merchant)}, headers=resident
            )
        ).json()

        async def delivery(status: str) -> dict[str, Any] | None:
            page = (
                await client.get(
                    "/v1/operator/webhook-deliveries", params={"status": status, "limit": 200}, headers=auditor
                )
            ).json()
            mine = [d for d in page["items"] if d["owner_id"] == merchant.id]
            return mine[0] if mine else None

        deadline = asyncio.get_running_loop().time() + 60
        while (dead := await delivery("dead")) is None:
            assert asyncio.get_running_loop().time() < deadline, "the delivery never died"
            await asyncio.sleep(0.1)
        assert dead["attempts"] == 2 and dead["last_status_code"] == 503 and dead["event_type"] == "redemption.held"
        forbidden = await client.post(f"/v1/operator/webhook-deliveries/{dead['id']}/redeliver", headers=auditor)
        assert forbidden.status_code == 403
        receiver.fail_next(0)
        again = await client.post(f"/v1/operator/webhook-deliveries/{dead['id']}/redeliver", headers=admin)
        assert again.status_code == 200 and again.json()["status"] == "pending" and again.json()["attempts"] == 0
        await eventually(lambda: ("redemption.held", held["id"]) in received(receiver), "the redelivered event")
        audit = (await client.get("/v1/operator/audit-log", headers=auditor)).json()
        assert any(e["action"] == "webhook_delivery.redeliver" and e["target_id"] == dead["id"] for e in audit)
        missing = await client.post(f"/v1/operator/webhook-deliveries/{uuid.uuid4()}/redeliver", headers=admin)
        assert missing.status_code == 404 and missing.json()["code"] == "delivery_not_found"


async def test_dispatchers_of_two_workers_side_by_side_deliver_each_event_once(
    database_url: str,
    sms_gateway: SmsGatewaySimulator,
    city_idp: CityIdpSimulator,
    ledger: Ledger,
    receiver: WebhookReceiver,
) -> None:
    async with service(database_url, sms_gateway, city_idp) as one, service(database_url, sms_gateway, city_idp) as two:
        admin = bearer(await sign_in_operator(one, database_url, "admin"))
        merchant = await register_merchant(one, admin)
        await subscribe(one, merchant.headers, receiver, ["redemption.held"])
        offer = await an_offer(one, merchant, price=1)
        resident = await resident_with_points(one, sms_gateway, ledger, 40)
        held = await asyncio.gather(
            *(
                (one, two)[i % 2].post("/v1/me/redemptions", json={"offer_id": offer}, headers=resident)
                for i in range(40)
            )
        )
        assert [r.status_code for r in held] == [201] * 40
        await eventually(lambda: len(receiver.events) == 40, "40 events")
        await asyncio.sleep(0.5)  # room for a duplicate to show up, were there one
    assert receiver.deliveries == 40


async def test_partners_hear_of_their_actions(
    api: Any, database_url: str, sms_gateway: SmsGatewaySimulator, receiver: WebhookReceiver
) -> None:
    admin = bearer(await sign_in_operator(api, database_url, "admin"))
    with PartnerSimulator("transit") as simulator:
        partner = await register_partner(api, admin, simulator)  # type: ignore[arg-type]
        await subscribe(api, partner.headers, receiver, ["action.credited", "action.rejected"])
        resident = bearer(await sign_in_resident(api, sms_gateway))
        ref = await link_account(api, resident, partner)
        credited, rejected = trip(ref, yesterday_at(8), 25, 10_000), trip(ref, yesterday_at(10), 1, 90_000)
        results = (await push(api, partner, [credited, rejected])).json()["results"]
        assert [r["outcome"] for r in results] == ["credited", "rejected"]
        # The shared test app runs its dispatcher every half second.
        await eventually(lambda: len(receiver.events) == 2, "the two action events")
    by_type = {e["type"]: e["data"] for e in receiver.events.values()}
    assert (
        by_type["action.credited"]["external_id"] == credited["external_id"]
        and by_type["action.credited"]["points"] == results[0]["points"] > 0
    )
    assert by_type["action.rejected"]["reason"] == "too_fast"


async def test_endpoints_take_only_their_own_events_and_http_urls(api: Any, database_url: str) -> None:
    admin = bearer(await sign_in_operator(api, database_url, "admin"))
    merchant = await register_merchant(api, admin)
    for body in (
        {"url": "http://127.0.0.1:9/hook", "events": ["action.credited"]},
        {"url": "http://127.0.0.1:9/hook", "events": ["no.such.event"]},
        {"url": "http://127.0.0.1:9/hook", "events": []},
    ):
        response = await api.put("/v1/merchant/webhook", json=body, headers=merchant.headers)
        assert response.status_code == 422, response.text
    bad_url = await api.put(
        "/v1/merchant/webhook",
        json={"url": "ftp://example.com/x", "events": ["redemption.held"]},
        headers=merchant.headers,
    )
    assert bad_url.status_code == 422 and bad_url.json()["code"] == "invalid_webhook_url"
    assert (await api.get("/v1/merchant/webhook", headers=merchant.headers)).json()["code"] == "webhook_not_found"
    created = await api.put(
        "/v1/merchant/webhook",
        json={"url": "http://127.0.0.1:9/hook", "events": ["redemption.held"]},
        headers=merchant.headers,
    )
    assert created.status_code == 201
    assert (await api.delete("/v1/merchant/webhook", headers=merchant.headers)).status_code == 204
    assert (await api.delete("/v1/merchant/webhook", headers=merchant.headers)).status_code == 204
    assert (await api.get("/v1/merchant/webhook", headers=merchant.headers)).status_code == 404
    renewed = await api.put(
        "/v1/merchant/webhook",
        json={"url": "http://127.0.0.1:9/hook", "events": ["redemption.held"]},
        headers=merchant.headers,
    )
    assert renewed.status_code == 201 and renewed.json()["secret"] != created.json()["secret"]


async def test_a_failing_endpoint_is_paused_instead_of_hammered(
    fresh_database_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator, receiver: WebhookReceiver
) -> None:
    """Two failures in a row open the endpoint's circuit for 30 s: the other deliveries wait, uncounted."""
    settings = {
        "webhook_breaker_threshold": 2,
        "webhook_breaker_cooldown_s": 30,
        "webhook_backoff_s": 0.01,
        "webhook_max_backoff_s": 0.01,
    }
    database_url = fresh_database_url  # of its own: the only dispatcher on it is this app's
    async with open_ledger(database_url) as ledger, service(database_url, sms_gateway, city_idp, **settings) as client:
        admin = bearer(await sign_in_operator(client, database_url, "admin"))
        merchant = await register_merchant(client, admin)
        await subscribe(client, merchant.headers, receiver, ["redemption.held"])
        receiver.fail_next(10**6)
        offer = await an_offer(client, merchant, price=1)
        resident = await resident_with_points(client, sms_gateway, ledger, 5)
        for _ in range(5):
            assert (
                await client.post("/v1/me/redemptions", json={"offer_id": offer}, headers=resident)
            ).status_code == 201
        await eventually(lambda: receiver.deliveries >= 2, "two attempts")
        await asyncio.sleep(1.5)  # without the circuit, ~150 attempts a second would be made meanwhile
        assert receiver.deliveries == 2
    owner_conn = await asyncpg.connect(database_url)
    try:
        attempts = await owner_conn.fetchval(
            "SELECT sum(d.attempts) FROM webhook_deliveries AS d JOIN outbox_events AS e ON e.id = d.event_id "
            "WHERE e.owner_id = $1",
            uuid.UUID(merchant.id),
        )
    finally:
        await owner_conn.close()
    assert attempts == 2


async def test_partners_hear_of_the_review_of_a_held_action(
    database_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator, receiver: WebhookReceiver
) -> None:
    async with service(database_url, sms_gateway, city_idp, anomaly_floor_per_hour=1, anomaly_factor=2) as client:
        admin = bearer(await sign_in_operator(client, database_url, "admin"))
        with PartnerSimulator("transit") as simulator:
            partner = await register_partner(client, admin, simulator)  # type: ignore[arg-type]
            await subscribe(client, partner.headers, receiver, ["action.reviewed"])
            resident = bearer(await sign_in_resident(client, sms_gateway))
            ref = await link_account(client, resident, partner)
            records = [trip(ref, yesterday_at(6 + i), 25, 10_000) for i in range(2)]
            results = (await push(client, partner, records)).json()["results"]
        assert [r["outcome"] for r in results] == ["credited", "pending_review"]
        held = results[1]["action_id"]
        decided = await client.post(
            f"/v1/operator/reviews/{held}", json={"decision": "approve", "reason": "ok"}, headers=admin
        )
        assert decided.status_code == 200, decided.text
        await eventually(lambda: len(receiver.events) == 1, "the review's event")
    [reviewed] = receiver.events.values()
    assert reviewed["type"] == "action.reviewed"
    assert reviewed["data"]["action_id"] == held and reviewed["data"]["decision"] == "approve"
    assert reviewed["data"]["status"] == "credited" and reviewed["data"]["points"] == decided.json()["points"] > 0
