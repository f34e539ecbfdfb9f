"""Methodology version 2 over HTTP: one credit per second-hand trade, to the giver, however its records arrive;
what a resident sees of a credit (enough to redo the sum by hand); version 2 judging what happens now."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from domain.fraud import CLAIM_WINDOW
from integrations.simulators.partner import PartnerSimulator
from tests.helpers import (
    METHODOLOGIES,
    VERSION_2_STARTS,
    PartnerHandle,
    bearer,
    link_account,
    push,
    recently,
    register_partner,
    sign_in_operator,
    sign_in_resident,
    yesterday_at,
)
from tests.test_actions_ingest import trip

PHONE_G = int(METHODOLOGIES.get("second-hand-trading", 2).factors["phones"].value)


@pytest.fixture(scope="module")
def market_sim() -> Iterator[PartnerSimulator]:
    with PartnerSimulator("second_hand", seed=3) as sim:
        yield sim  # type: ignore[misc]


@pytest.fixture(scope="module")
async def admin(api: AsyncTestClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(api, database_url, "admin"))


@pytest.fixture(scope="module")
async def market(api: AsyncTestClient, admin: dict[str, str], market_sim: PartnerSimulator) -> PartnerHandle:
    return await register_partner(api, admin, market_sim)


@pytest.fixture
async def parties(api: AsyncTestClient, sms_gateway: Any, market: PartnerHandle) -> tuple[Any, Any]:
    """Two residents with an account each at the second-hand platform: (headers, account ref) per party."""
    found = []
    for _ in range(2):
        resident = bearer(await sign_in_resident(api, sms_gateway))
        found.append((resident, await link_account(api, resident, market)))
    return found[0], found[1]


def side(account_ref: str, trade_ref: str, trade: str, category: str = "phones") -> dict[str, Any]:
    return {
        "external_id": f"rec-{uuid.uuid4().hex}",
        "account_ref": account_ref,
        "occurred_at": recently().isoformat(),
        "category": category,
        "trade": trade,
        "trade_ref": trade_ref,
        "quantity": 1,
    }


async def avoided(api: AsyncTestClient, resident: dict[str, str]) -> int:
    return int((await api.get("/v1/me/balance", headers=resident)).json()["co2e_avoided_g"])


@pytest.mark.parametrize(("first", "then"), [("sold", "bought"), ("bought", "sold"), ("donated", "received")])
async def test_one_trade_reported_from_both_sides_is_credited_once_to_the_giver(
    api: AsyncTestClient, market: PartnerHandle, parties: tuple[Any, Any], first: str, then: str
) -> None:
    (seller, seller_ref), (buyer, buyer_ref) = parties
    trade_ref = f"T-{uuid.uuid4().hex}"
    giving = first if first in ("sold", "donated") else then
    receiving = then if giving == first else first
    records = {giving: side(seller_ref, trade_ref, giving), receiving: side(buyer_ref, trade_ref, receiving)}
    outcomes = {}
    for trade in (first, then):
        [result] = (await push(api, market, [records[trade]])).json()["results"]
        outcomes[trade] = (result["outcome"], result["reason"], result["grams_co2e"])
    assert outcomes == {
        giving: ("credited", None, PHONE_G),
        receiving: ("rejected", "trade_credited_to_giver", 0),
    }
    assert (await avoided(api, seller), await avoided(api, buyer)) == (PHONE_G, 0)


async def test_both_sides_of_a_trade_pushed_at_once_credit_it_once(
    api: AsyncTestClient, market: PartnerHandle, parties: tuple[Any, Any]
) -> None:
    (seller, seller_ref), (buyer, buyer_ref) = parties
    trade_refs = [f"T-{uuid.uuid4().hex}" for _ in range(10)]
    pushes = []
    now = int(time.time())
    for i, trade_ref in enumerate(trade_refs):
        # Each trade's two records arrive in two requests at once, the seller's first or second by turns.
        sides = [side(seller_ref, trade_ref, "sold"), side(buyer_ref, trade_ref, "bought")][:: 1 if i % 2 else -1]
        pushes += [push(api, market, [record], timestamp=now - j) for j, record in enumerate(sides)]
    responses = await asyncio.gather(*pushes)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    outcomes = sorted((r.json()["results"][0]["outcome"], r.json()["results"][0]["reason"]) for r in responses)
    assert outcomes == [("credited", None)] * 10 + [("rejected", "trade_credited_to_giver")] * 10
    assert (await avoided(api, seller), await avoided(api, buyer)) == (10 * PHONE_G, 0)


async def test_a_trade_reported_twice_by_its_giver_is_credited_once_even_at_once(
    api: AsyncTestClient, market: PartnerHandle, parties: tuple[Any, Any]
) -> None:
    """Two records of one sale (a platform that re-sent it under a new id), in one batch and in two requests."""
    (seller, seller_ref), (other, other_ref) = parties
    in_one_batch = f"T-{uuid.uuid4().hex}"
    results = (
        await push(api, market, [side(seller_ref, in_one_batch, "sold"), side(seller_ref, in_one_batch, "sold")])
    ).json()["results"]
    assert [(r["outcome"], r["reason"]) for r in results] == [
        ("credited", None),
        ("rejected", "trade_already_credited"),
    ]
    # Two givers named for one trade (by two residents' records) at once: the trade still counts once.
    at_once = f"T-{uuid.uuid4().hex}"
    now = int(time.time())
    responses = await asyncio.gather(
        push(api, market, [side(seller_ref, at_once, "sold")], timestamp=now),
        push(api, market, [side(other_ref, at_once, "sold")], timestamp=now - 1),
    )
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    outcomes = sorted((r.json()["results"][0]["outcome"], r.json()["results"][0]["reason"]) for r in responses)
    assert outcomes == [("credited", None), ("rejected", "trade_already_credited")]
    assert await avoided(api, seller) + await avoided(api, other) == 2 * PHONE_G


async def test_a_second_hand_record_without_its_trade_or_of_an_unsourced_category_is_refused(
    api: AsyncTestClient, market: PartnerHandle, parties: tuple[Any, Any]
) -> None:
    (_, seller_ref), _ = parties
    unnamed = {k: v for k, v in side(seller_ref, "unused", "sold").items() if k != "trade_ref"}
    books = side(seller_ref, f"T-{uuid.uuid4().hex}", "sold", category="books")
    results = (await push(api, market, [unnamed, books])).json()["results"]
    assert [(r["outcome"], r["reason"]) for r in results] == [
        ("rejected", "invalid_record"),
        ("rejected", "factor_not_sourced"),
    ]


async def test_a_rejected_record_leaves_the_trade_to_a_later_giving_record(
    api: AsyncTestClient, market: PartnerHandle, parties: tuple[Any, Any]
) -> None:
    """A refused giving record (here: from the future) does not hold the trade; the corrected one is credited."""
    (seller, seller_ref), _ = parties
    trade_ref = f"T-{uuid.uuid4().hex}"
    future = {**side(seller_ref, trade_ref, "sold"), "occurred_at": "2999-01-01T00:00:00+00:00"}
    [refused] = (await push(api, market, [future])).json()["results"]
    assert (refused["outcome"], refused["reason"]) == ("rejected", "in_the_future")
    [credited] = (await push(api, market, [side(seller_ref, trade_ref, "sold")])).json()["results"]
    assert credited["outcome"] == "credited"


# ------------------------------------------------------------------------------------------ provenance


def recompute(provenance: dict[str, Any]) -> int:
    """The sum a resident would do by hand from what the action detail shows."""
    exact = Decimal(provenance["factor"]) * provenance["quantity"] / provenance["per_factor_unit"]
    return int(exact.to_integral_value(rounding=ROUND_FLOOR))


async def test_a_residents_action_detail_recomputes_to_the_credited_grams(
    api: AsyncTestClient, market: PartnerHandle, parties: tuple[Any, Any], admin: dict[str, str]
) -> None:
    (seller, seller_ref), (stranger, _) = parties
    with PartnerSimulator("transit", seed=4) as transit_sim, PartnerSimulator("recycling", seed=5) as station_sim:
        transit = await register_partner(api, admin, transit_sim)
        station = await register_partner(api, admin, station_sim)
        card = await link_account(api, seller, transit)
        bin_account = await link_account(api, seller, station)
        drop = {
            "external_id": f"drop-{uuid.uuid4().hex}",
            "account_ref": bin_account,
            "station_id": "SH-ST-0002",
            "occurred_at": recently().isoformat(),
            "material": "aluminium",
            "weight_g": 1_337,
        }
        credited = [
            (await push(api, transit, [trip(card, yesterday_at(9), 31, 12_345)])).json()["results"][0],
            (await push(api, station, [drop])).json()["results"][0],
            (await push(api, market, [side(seller_ref, f"T-{uuid.uuid4().hex}", "sold")])).json()["results"][0],
        ]
    assert [r["outcome"] for r in credited] == ["credited"] * 3, credited
    for result in credited:
        detail = await api.get(f"/v1/me/actions/{result['action_id']}", headers=seller)
        assert detail.status_code == 200, detail.text
        body = detail.json()
        provenance = body["provenance"]
        assert recompute(provenance) == result["grams_co2e"] == provenance["grams_co2e"] > 0
        assert provenance["working"].endswith(f"= {result['grams_co2e']} g CO2e")
        methodology = METHODOLOGIES.get(provenance["methodology_id"], provenance["methodology_version"])
        assert (provenance["methodology_id"], provenance["methodology_version"]) == (
            result["methodology_id"],
            result["methodology_version"],
        )
        assert provenance["formula"] == methodology.formula and provenance["category"] == body["action"]["category"]
        assert provenance["factor"] == str(methodology.factors[provenance["category"]].value)
        assert provenance["sources"] and all(s["confidence"] in ("primary", "secondary") for s in provenance["sources"])
        points = int(Decimal(result["grams_co2e"]) * Decimal(provenance["points_per_kg_co2e"]) / 1000)
        assert points == result["points"] + result["points_withheld"]
        # Another resident's action is not disclosed.
        hidden = await api.get(f"/v1/me/actions/{result['action_id']}", headers=stranger)
        assert hidden.status_code == 404 and hidden.json()["code"] == "action_not_found"
    missing = await api.get(f"/v1/me/actions/{uuid.uuid4()}", headers=seller)
    assert missing.status_code == 404 and missing.json()["code"] == "action_not_found"


async def test_a_refused_actions_detail_has_no_provenance(
    api: AsyncTestClient, market: PartnerHandle, parties: tuple[Any, Any]
) -> None:
    (seller, seller_ref), _ = parties
    books = side(seller_ref, f"T-{uuid.uuid4().hex}", "sold", category="books")
    [result] = (await push(api, market, [books])).json()["results"]
    detail = (await api.get(f"/v1/me/actions/{result['action_id']}", headers=seller)).json()
    assert detail["action"]["reason"] == "factor_not_sourced" and detail["provenance"] is None


@pytest.mark.skipif(
    datetime.now(UTC) - VERSION_2_STARTS > CLAIM_WINDOW - timedelta(days=1),
    reason="trips at version 2's start are now older than the service accepts (the domain tests keep the rule)",
)
async def test_trips_either_side_of_version_2s_start_are_judged_by_the_version_in_force_when_they_started(
    api: AsyncTestClient, admin: dict[str, str], sms_gateway: Any
) -> None:
    with PartnerSimulator("transit", seed=13) as sim:
        transit = await register_partner(api, admin, sim)
        resident = bearer(await sign_in_resident(api, sms_gateway))
        card = await link_account(api, resident, transit)
        before = trip(card, VERSION_2_STARTS - timedelta(minutes=10), 15, 10_000)  # ends after the start
        after = trip(card, VERSION_2_STARTS + timedelta(minutes=20), 15, 10_000)
        results = (await push(api, transit, [before, after])).json()["results"]
    assert [(r["outcome"], r["methodology_version"], r["grams_co2e"]) for r in results] == [
        ("credited", 1, 510),  # 51 g/km
        ("credited", 2, 460),  # 46 g/km
    ]


async def test_an_activity_now_is_judged_by_version_2(
    api: AsyncTestClient, market: PartnerHandle, parties: tuple[Any, Any]
) -> None:
    (_, seller_ref), _ = parties
    [result] = (await push(api, market, [side(seller_ref, f"T-{uuid.uuid4().hex}", "sold")])).json()["results"]
    assert (result["methodology_id"], result["methodology_version"]) == ("second-hand-trading", 2)
    assert result["grams_co2e"] == PHONE_G


# ------------------------------------------------------------------------------------------ simulators


@pytest.mark.parametrize("kind", ["transit", "recycling", "second_hand"])
async def test_simulated_partners_send_creditable_records_unless_asked_to_mix_in_refusals(
    api: AsyncTestClient, admin: dict[str, str], sms_gateway: Any, kind: str
) -> None:
    with PartnerSimulator(kind, seed=11) as honest, PartnerSimulator(kind, seed=12, refusals=0.5) as mixed:
        outcomes: dict[str, list[tuple[str, str | None]]] = {}
        for name, sim in (("honest", honest), ("mixed", mixed)):
            partner = await register_partner(api, admin, sim)
            resident = bearer(await sign_in_resident(api, sms_gateway))
            ref = await link_account(api, resident, partner)
            records = [sim.generate(ref) for _ in range(40)]
            results = (await push(api, partner, records)).json()["results"]
            outcomes[name] = [(r["outcome"], r["reason"]) for r in results]
    assert outcomes["honest"] == [("credited", None)] * 40, outcomes["honest"]
    refused = [reason for outcome, reason in outcomes["mixed"] if outcome != "credited"]
    assert 8 <= len(refused) <= 32, outcomes["mixed"]  # about half, of 40
    assert set(refused) <= {
        "factor_not_sourced",
        "forest_credit_excluded",
        "too_fast",
        "weight_too_large",
        "trade_credited_to_giver",
    }, refused
