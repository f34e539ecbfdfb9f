"""Partner-volume anomalies go to review; operators approve or reject; recycling and second-hand records.

This module runs its own app with a tiny anomaly floor, so a handful of records is "far above the
partner's norm" without pushing the shared app's partners into review.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from domain.fraud import anomaly_threshold
from integrations.simulators.city_idp import CityIdpSimulator
from integrations.simulators.partner import PartnerSimulator
from integrations.simulators.sms_gateway import SmsGatewaySimulator
from tests.helpers import (
    PartnerHandle,
    bearer,
    expected,
    identity_settings,
    link_account,
    push,
    register_partner,
    sign_in_operator,
    sign_in_resident,
)
from tests.helpers import recently, yesterday_at
from tests.test_actions_ingest import trip


@pytest.fixture(scope="module")
async def strict_api(
    database_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator
) -> AsyncIterator[AsyncTestClient]:
    settings = identity_settings(sms_gateway, city_idp, anomaly_floor_per_hour=3, anomaly_factor=2)
    async with AsyncTestClient(app=create_app(settings, database_url)) as client:
        yield client


@pytest.fixture(scope="module")
async def admin(strict_api: AsyncTestClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(strict_api, database_url, "admin"))


@pytest.fixture(scope="module")
def transit_sim() -> Iterator[PartnerSimulator]:
    with PartnerSimulator("transit") as sim:
        yield sim  # type: ignore[misc]


@pytest.fixture
async def resident(strict_api: AsyncTestClient, sms_gateway: Any) -> dict[str, str]:
    return bearer(await sign_in_resident(strict_api, sms_gateway))


def test_anomaly_threshold_follows_the_partners_norm() -> None:
    assert anomaly_threshold(0, 0, factor=10, floor=100) == 100  # a new partner: the floor
    assert anomaly_threshold(24 * 50, 24, factor=10, floor=100) == 500  # 50/h usually: 10× that
    assert anomaly_threshold(24 * 5, 24, factor=10, floor=100) == 100  # quiet partner: never below the floor


async def test_a_burst_above_the_partners_norm_waits_for_an_operator(
    strict_api: AsyncTestClient,
    admin: dict[str, str],
    transit_sim: PartnerSimulator,
    resident: dict[str, str],
    database_url: str,
    owner_conn: asyncpg.Connection,
) -> None:
    partner = await register_partner(strict_api, admin, transit_sim)
    ref = await link_account(strict_api, resident, partner)
    start = yesterday_at(6)
    records = [trip(ref, start + timedelta(minutes=40 * i), 30, 10_000) for i in range(5)]
    response = await push(strict_api, partner, records)
    assert [r["outcome"] for r in response.json()["results"]] == ["credited"] * 3 + ["pending_review"] * 2
    held = response.json()["results"][3]
    assert held["reason"] == "partner_volume_anomaly" and held["points"] == 0
    credit = expected("transit", "metro", 10_000, start)
    assert (await strict_api.get("/v1/me/balance", headers=resident)).json()["points_earned"] == 3 * credit.points

    auditor = bearer(await sign_in_operator(strict_api, database_url, "auditor"))
    queue = (await strict_api.get("/v1/operator/reviews", headers=auditor)).json()
    waiting = {item["action"]["id"] for item in queue}
    approve_id, reject_id = held["action_id"], response.json()["results"][4]["action_id"]
    assert {approve_id, reject_id} <= waiting
    assert queue[0]["record"]["account_ref"] == ref
    forbidden = await strict_api.post(
        f"/v1/operator/reviews/{approve_id}", json={"decision": "approve", "reason": "ok"}, headers=auditor
    )
    assert forbidden.status_code == 403
    assert (await strict_api.get("/v1/operator/reviews", headers=resident)).status_code == 403

    approved = await strict_api.post(
        f"/v1/operator/reviews/{approve_id}",
        json={"decision": "approve", "reason": "checked with the operator"},
        headers=admin,
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["points"], approved.json()["grams_co2e"]) == (
        "credited",
        credit.points,
        credit.grams,
    )
    rejected = await strict_api.post(
        f"/v1/operator/reviews/{reject_id}", json={"decision": "reject", "reason": "duplicate card"}, headers=admin
    )
    assert (rejected.json()["status"], rejected.json()["reason"]) == ("rejected", "rejected_by_operator")
    twice = await strict_api.post(
        f"/v1/operator/reviews/{approve_id}", json={"decision": "reject", "reason": "changed my mind"}, headers=admin
    )
    assert twice.status_code == 409 and twice.json()["code"] == "already_reviewed"
    missing = await strict_api.post(
        f"/v1/operator/reviews/{uuid.uuid4()}", json={"decision": "approve", "reason": "x"}, headers=admin
    )
    assert missing.status_code == 404

    balance = (await strict_api.get("/v1/me/balance", headers=resident)).json()
    assert (balance["points_earned"], balance["co2e_avoided_g"]) == (4 * credit.points, 4 * credit.grams)
    decisions = await owner_conn.fetch(
        "SELECT decision FROM action_reviews WHERE action_id = ANY($1::uuid[]) ORDER BY id",
        [uuid.UUID(approve_id), uuid.UUID(reject_id)],
    )
    assert [d["decision"] for d in decisions] == ["approve", "reject"]
    audit = (await strict_api.get("/v1/operator/audit-log", headers=admin)).json()
    assert {e["action"] for e in audit if e["target_id"] in (approve_id, reject_id)} == {"action.review"}
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
        await owner_conn.execute("DELETE FROM action_reviews")


async def test_recycling_and_second_hand_records(
    strict_api: AsyncTestClient, admin: dict[str, str], resident: dict[str, str]
) -> None:
    with PartnerSimulator("recycling") as recycling_sim, PartnerSimulator("second_hand") as market_sim:
        recycling: PartnerHandle = await register_partner(strict_api, admin, recycling_sim)
        market: PartnerHandle = await register_partner(strict_api, admin, market_sim)
        station_account = await link_account(strict_api, resident, recycling)
        shop_account = await link_account(strict_api, resident, market)
        when = recently().isoformat()  # judged by methodology version 2

        def drop(material: str, grams: int) -> dict[str, Any]:
            return {
                "external_id": uuid.uuid4().hex,
                "account_ref": station_account,
                "station_id": "SH-ST-0001",
                "occurred_at": when,
                "material": material,
                "weight_g": grams,
            }

        # glass: 201 g CO2e per kg × 1.234 kg = 248.034 → 248 g; 2.48 points → 2
        results = (
            await push(
                strict_api,
                recycling,
                [drop("glass", 1_234), drop("paper", 900), drop("glass", 60_000), drop("glass", 4)],
            )
        ).json()["results"]
        assert [(r["outcome"], r["reason"], r["grams_co2e"], r["points"]) for r in results] == [
            ("credited", None, 248, 2),
            ("rejected", "forest_credit_excluded", 0, 0),
            ("rejected", "weight_too_large", 0, 0),
            ("rejected", "no_reduction", 0, 0),  # 4 g of glass avoids 0.804 g: rounded down to nothing
        ]
        sale = {
            "external_id": uuid.uuid4().hex,
            "account_ref": shop_account,
            "occurred_at": when,
            "category": "books",
            "trade": "sold",
            "trade_ref": f"T-{uuid.uuid4().hex}",
            "quantity": 2,
        }
        no_trade = {**sale, "external_id": uuid.uuid4().hex, "category": "phones", "trade_ref": None}
        sold, unnamed = (await push(strict_api, market, [sale, no_trade])).json()["results"]
        assert (sold["outcome"], sold["reason"]) == ("rejected", "factor_not_sourced")
        # From version 2 a second-hand record must name its trade.
        assert (unnamed["outcome"], unnamed["reason"]) == ("rejected", "invalid_record")
        wrong_kind = {**sale, "external_id": "x1", "kind": "transit"}
        [refused] = (await push(strict_api, market, [wrong_kind])).json()["results"]
        assert (refused["outcome"], refused["reason"]) == ("rejected", "invalid_record")
