"""Pushing and claiming records: signatures, exactly-once crediting, the ledger entries, resident views."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from domain.signatures import SIGNATURE_HEADER, sign
from integrations.simulators.partner import PartnerSimulator
from ledger.accounts import CARBON_POOL, ISSUANCE_POINTS, resident_carbon_account, resident_points_account
from ledger.service import Ledger
from tests.helpers import (
    METHODOLOGIES,
    SHANGHAI,
    PartnerHandle,
    bearer,
    expected,
    link_account,
    push,
    register_partner,
    sign_in_operator,
    sign_in_resident,
    yesterday_at,
)


@pytest.fixture(scope="module")
def transit_sim() -> Iterator[PartnerSimulator]:
    with PartnerSimulator("transit", seed=1) as sim:
        yield sim  # type: ignore[misc]


@pytest.fixture(scope="module")
async def admin(api: AsyncTestClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(api, database_url, "admin"))


@pytest.fixture(scope="module")
async def transit(api: AsyncTestClient, admin: dict[str, str], transit_sim: PartnerSimulator) -> PartnerHandle:
    return await register_partner(api, admin, transit_sim)


@pytest.fixture
async def resident(api: AsyncTestClient, sms_gateway: Any) -> dict[str, str]:
    return bearer(await sign_in_resident(api, sms_gateway))


def trip(
    ref: str, started: datetime, minutes: int, distance_m: int, mode: str = "metro", **extra: Any
) -> dict[str, Any]:
    return {
        "external_id": extra.pop("external_id", f"trip-{uuid.uuid4().hex}"),
        "account_ref": ref,
        "mode": mode,
        "started_at": started.isoformat(),
        "ended_at": (started + timedelta(minutes=minutes)).isoformat(),
        "distance_m": distance_m,
        **extra,
    }


async def test_a_pushed_metro_trip_is_credited_by_the_methodology(
    api: AsyncTestClient, transit: PartnerHandle, resident: dict[str, str], ledger: Ledger
) -> None:
    ref = await link_account(api, resident, transit)
    # version 1: 10,000 m × 51 g/km = 510 g; 510 g × 10 points/kg = 5.1 → 5 points (both rounded down);
    # version 2: 10,000 m × 46 g/km = 460 g → 4 points. Which one depends on the day the suite runs.
    record = trip(ref, yesterday_at(8), 25, 10_000)
    credit = expected("transit", "metro", 10_000, yesterday_at(8))
    grams, points = credit.grams, credit.points
    response = await push(api, transit, [record])
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["outcome"] == "credited"
    assert (result["grams_co2e"], result["points"]) == (grams, points)
    assert (result["methodology_id"], result["methodology_version"]) == ("transit-trips", credit.version)

    action_id = uuid.UUID(result["action_id"])
    transfers = await ledger.lookup_transfers([uuid.uuid5(action_id, "co2e"), uuid.uuid5(action_id, "points")])
    me = (await api.get("/v1/me", headers=resident)).json()
    resident_id = uuid.UUID(me["id"])
    carbon, issued = transfers[uuid.uuid5(action_id, "co2e")], transfers[uuid.uuid5(action_id, "points")]
    assert (carbon.debit_account_id, carbon.credit_account_id, carbon.amount) == (
        resident_carbon_account(resident_id).id,
        CARBON_POOL.id,
        grams,
    )
    assert (issued.debit_account_id, issued.credit_account_id, issued.amount) == (
        ISSUANCE_POINTS.id,
        resident_points_account(resident_id).id,
        points,
    )
    assert carbon.linked and not issued.linked
    assert carbon.metadata is not None and carbon.metadata["factor"] == credit.factor

    balance = (await api.get("/v1/me/balance", headers=resident)).json()
    assert balance == {
        "points_available": points,
        "points_held": 0,
        "points_earned": points,
        "points_spent": 0,
        "co2e_avoided_g": grams,
    }
    actions = (await api.get("/v1/me/actions", headers=resident)).json()
    assert [(a["external_id"], a["status"], a["points"]) for a in actions["items"]] == [
        (record["external_id"], "credited", points)
    ]
    statement = (await api.get("/v1/me/ledger", headers=resident)).json()
    assert sorted((line["ledger"], line["direction"], line["amount"]) for line in statement["items"]) == [
        ("co2e_g", "debit", grams),
        ("points", "credit", points),
    ]
    impact = (await api.get("/v1/me/impact", headers=resident)).json()
    month = yesterday_at(8).strftime("%Y-%m")
    assert impact == {
        "co2e_avoided_g": grams,
        "by_kind": {"transit": grams},
        "by_month": [{"month": month, "kind": "transit", "co2e_avoided_g": grams}],
    }
    assert (await ledger.recompute_balances()).ok


async def test_pushed_and_claimed_copies_of_one_record_credit_once(
    api: AsyncTestClient, transit: PartnerHandle, resident: dict[str, str]
) -> None:
    ref = await link_account(api, resident, transit)
    record = transit.simulator.add_record(trip(ref, yesterday_at(9), 20, 8_000))
    now = int(time.time())
    first = await push(api, transit, [record], timestamp=now)
    assert first.json()["results"][0]["outcome"] == "credited"
    claimed = await api.post(
        "/v1/me/actions/claims", json={"partner_id": transit.id, "external_id": record["external_id"]}, headers=resident
    )
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["outcome"] == "duplicate"
    assert claimed.json()["action_id"] == first.json()["results"][0]["action_id"]
    again = await push(api, transit, [record], timestamp=now - 1)  # signed anew: not a replay
    assert again.json()["results"][0]["outcome"] == "duplicate"
    balance = (await api.get("/v1/me/balance", headers=resident)).json()
    assert balance["co2e_avoided_g"] == expected("transit", "metro", 8_000, yesterday_at(9)).grams  # once


async def test_a_claim_fetches_the_record_from_the_partner_and_credits_it(
    api: AsyncTestClient, transit: PartnerHandle, resident: dict[str, str]
) -> None:
    ref = await link_account(api, resident, transit)
    record = transit.simulator.add_record(trip(ref, yesterday_at(10), 10, 2_000, mode="shared_bike"))
    claimed = await api.post(
        "/v1/me/actions/claims", json={"partner_id": transit.id, "external_id": record["external_id"]}, headers=resident
    )
    assert claimed.status_code == 200, claimed.text
    credit = expected("transit", "shared_bike", 2_000, yesterday_at(10))  # 102 g, 1 point; by version 2: 66 g, 0
    assert (claimed.json()["outcome"], claimed.json()["grams_co2e"], claimed.json()["points"]) == (
        "credited",
        credit.grams,
        credit.points,
    )
    pushed = await push(api, transit, [record])
    assert pushed.json()["results"][0]["outcome"] == "duplicate"
    [action] = (await api.get("/v1/me/actions", headers=resident)).json()["items"]
    assert action["source"] == "claim"


async def test_fifty_concurrent_pushes_of_one_batch_credit_each_record_once(
    api: AsyncTestClient, transit: PartnerHandle, resident: dict[str, str], owner_conn: asyncpg.Connection
) -> None:
    refs = [await link_account(api, resident, transit) for _ in range(2)]
    records = [trip(refs[i % 2], yesterday_at(12, 0) + timedelta(minutes=40 * i), 30, 5_000) for i in range(5)]
    now = int(time.time())
    # Each push is signed anew (a byte-identical request would be refused as a replay).
    responses = await asyncio.gather(*(push(api, transit, records, timestamp=now - i) for i in range(50)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    outcomes = [r.json()["results"] for r in responses]
    for index in range(len(records)):
        kinds = [results[index]["outcome"] for results in outcomes]
        assert kinds.count("credited") == 1 and kinds.count("duplicate") == 49, kinds
    ids = [str(uuid.uuid5(uuid.UUID(r["action_id"]), "co2e")) for r in outcomes[0]]
    stored = await owner_conn.fetchval(
        "SELECT count(*) FROM ledger_transfers WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids]
    )
    assert stored == 5
    balance = (await api.get("/v1/me/balance", headers=resident)).json()
    credit = expected("transit", "metro", 5_000, yesterday_at(12))
    assert balance["co2e_avoided_g"] == 5 * credit.grams and balance["points_earned"] == 5 * credit.points


async def test_signature_missing_wrong_expired_or_replayed_is_refused_and_nothing_is_credited(
    api: AsyncTestClient, transit: PartnerHandle, resident: dict[str, str]
) -> None:
    ref = await link_account(api, resident, transit)
    record = trip(ref, yesterday_at(15), 20, 6_000)
    body, headers = transit.simulator.signed_push([record])

    missing = await api.post("/v1/partner/actions:batch", content=body, headers={**transit.headers})
    assert missing.status_code == 401 and missing.json()["code"] == "signature_missing"

    tampered = body.replace(b"6000", b"9000")
    wrong = await api.post("/v1/partner/actions:batch", content=tampered, headers={**headers, **transit.headers})
    assert wrong.status_code == 401 and wrong.json()["code"] == "signature_invalid"

    old_body, old_headers = transit.simulator.signed_push([record], timestamp=int(time.time()) - 301)
    expired = await api.post("/v1/partner/actions:batch", content=old_body, headers={**old_headers, **transit.headers})
    assert expired.status_code == 401 and expired.json()["code"] == "signature_expired"
    assert (await api.get("/v1/me/actions", headers=resident)).json()["items"] == []

    accepted = await api.post("/v1/partner/actions:batch", content=body, headers={**headers, **transit.headers})
    assert accepted.status_code == 200 and accepted.json()["credited"] == 1
    replayed = await api.post("/v1/partner/actions:batch", content=body, headers={**headers, **transit.headers})
    assert replayed.status_code == 409 and replayed.json()["code"] == "signature_replayed"

    resident_token = await api.post("/v1/partner/actions:batch", content=body, headers={**headers, **resident})
    assert resident_token.status_code == 403


async def test_records_are_judged_one_by_one_with_reason_codes(
    api: AsyncTestClient, transit: PartnerHandle, resident: dict[str, str]
) -> None:
    ref = await link_account(api, resident, transit)
    unlinked = transit.simulator.open_account()
    start = yesterday_at(18)
    records = [
        trip(ref, start, 30, 10_000),
        trip(ref, start + timedelta(minutes=10), 30, 10_000, mode="shared_bike"),  # overlaps the first
        trip(ref, start + timedelta(hours=1), 5, 20_000),  # 240 km/h by metro
        trip(ref, start + timedelta(hours=2), 20, 5_000, mode="bus"),  # bus factor not sourced yet
        trip(unlinked, start, 30, 10_000),
        {"external_id": "broken", "account_ref": ref, "mode": "teleport"},
        trip(ref, datetime.now(UTC) + timedelta(hours=1), 30, 10_000),
    ]
    response = await push(api, transit, records)
    assert response.status_code == 200
    got = [(r["outcome"], r.get("reason")) for r in response.json()["results"]]
    assert got == [
        ("credited", None),
        ("rejected", "overlapping_trip"),
        ("rejected", "too_fast"),
        ("rejected", "factor_not_sourced"),
        ("rejected", "account_not_linked"),
        ("rejected", "invalid_record"),
        ("rejected", "in_the_future"),
    ]
    assert response.json()["results"][5]["detail"].startswith("mode must be one of")
    statuses = {
        a["external_id"]: a["status"] for a in (await api.get("/v1/me/actions", headers=resident)).json()["items"]
    }
    # Rule rejections are decided and shown to the resident; unlinked and malformed records are not kept.
    assert sorted(statuses.values()) == ["credited", "rejected", "rejected", "rejected", "rejected"]
    assert records[4]["external_id"] not in statuses

    # Once the account is linked, the partner may send the refused record again and it counts.
    await link_account(api, resident, transit, ref=unlinked)
    later = await push(
        api,
        transit,
        [
            {
                **records[4],
                "started_at": (start + timedelta(hours=3)).isoformat(),
                "ended_at": (start + timedelta(hours=3, minutes=30)).isoformat(),
            }
        ],
    )
    assert later.json()["results"][0]["outcome"] == "credited"


async def test_a_record_the_database_cannot_hold_is_rejected_alone(
    api: AsyncTestClient, transit: PartnerHandle, resident: dict[str, str]
) -> None:
    """NUL characters, lone surrogates, integers past storage and deep nesting once failed a whole batch with a 500."""
    ref = await link_account(api, resident, transit)
    start = yesterday_at(5)
    nested: Any = "deep"
    for _ in range(20):
        nested = [nested]
    hostile = [
        trip(ref, start, 30, 10_000, external_id="nul\x00inside"),
        trip(ref, start, 30, 10_000, external_id="lone-\ud800-surrogate"),
        trip("card\x1fref", start, 30, 10_000),
        trip(ref, start, 30, 2**63),
        trip(ref, start, 30, 10_000, note="extra field with a NUL \x00"),
        trip(ref, start, 30, 10_000, route=nested),
    ]
    fine = trip(ref, start, 30, 10_000)
    response = await push(api, transit, [*hostile, fine])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["outcome"], r.get("reason")) for r in results] == [("rejected", "invalid_record")] * len(hostile) + [
        ("credited", None)
    ]
    # A record is named by its index; an id that cannot be stored is not echoed either.
    assert [r["index"] for r in results] == list(range(len(hostile) + 1))
    assert results[0]["external_id"] is None and results[1]["external_id"] is None
    assert "control characters" in results[2]["detail"] and "from 0 to 1000000000" in results[3]["detail"]

    # NaN is not JSON, though Python's encoder writes it: the whole body is refused, clearly.
    not_json = await push(api, transit, [trip(ref, start, 30, 10_000, speed=float("nan"))])
    assert not_json.status_code == 400 and not_json.json()["code"] == "bad_request", not_json.text


async def test_the_same_trip_from_two_partners_credits_once(
    api: AsyncTestClient, admin: dict[str, str], transit: PartnerHandle, resident: dict[str, str]
) -> None:
    with PartnerSimulator("transit", seed=2) as maas_sim:
        maas = await register_partner(api, admin, maas_sim)
        card = await link_account(api, resident, transit)
        app_account = await link_account(api, resident, maas)
        start = yesterday_at(7)
        by_card = await push(api, transit, [trip(card, start, 30, 12_000)])
        assert by_card.json()["results"][0]["outcome"] == "credited"
        by_app = await push(api, maas, [trip(app_account, start + timedelta(minutes=1), 28, 11_800)])
        assert [(r["outcome"], r["reason"]) for r in by_app.json()["results"]] == [
            ("rejected", "same_trip_other_partner")
        ]


def metres_of_metro(grams: int, at: datetime) -> int:
    """The shortest metro trip that avoids ``grams`` under the methodology in force at ``at``."""
    per_km = int(METHODOLOGIES.current("transit", at.astimezone(SHANGHAI).date()).factors["metro"].value)
    return -(-grams * 1000 // per_km)


async def test_daily_cap_boundaries(api: AsyncTestClient, transit: PartnerHandle, resident: dict[str, str]) -> None:
    """Default transit cap: 100 points a day. A 1,000 g trip (19,608 m at 51 g/km, 21,740 m at 46) is 10 points."""
    ref = await link_account(api, resident, transit)
    start = yesterday_at(6)
    kilo, kilo_and_half = metres_of_metro(1_000, start), metres_of_metro(1_500, start)
    nine = [trip(ref, start + timedelta(minutes=35 * i), 30, kilo) for i in range(9)]
    results = (await push(api, transit, nine)).json()["results"]
    assert [r["points"] for r in results] == [10] * 9
    # 90 points: a 15-point trip (1,500 g) gets the last 10, the rest is withheld.
    boundary = trip(ref, start + timedelta(minutes=35 * 9), 40, kilo_and_half)
    [at_cap] = (await push(api, transit, [boundary])).json()["results"]
    assert (at_cap["outcome"], at_cap["grams_co2e"], at_cap["points"], at_cap["points_withheld"]) == (
        "credited",
        1_500,
        10,
        5,
    )
    assert at_cap["cap_reason"] == "daily_cap_reached"
    # At the cap: the reduction still counts, no more points that day.
    over = trip(ref, start + timedelta(minutes=35 * 11), 30, kilo)
    [beyond] = (await push(api, transit, [over])).json()["results"]
    assert (beyond["outcome"], beyond["points"], beyond["points_withheld"]) == ("credited", 0, 10)
    balance = (await api.get("/v1/me/balance", headers=resident)).json()
    assert balance["points_earned"] == 100
    assert balance["co2e_avoided_g"] == 9 * 1_000 + 1_500 + 1_000
    # Another local day has its own allowance (and perhaps another methodology version).
    day_before = start - timedelta(days=1)
    [other_day] = (await push(api, transit, [trip(ref, day_before, 30, metres_of_metro(1_000, day_before))])).json()[
        "results"
    ]
    assert other_day["points"] == 10

    # 12 actions and 23 ledger entries (the capped one has no points transfer), paged 5 at a time.
    for path, total in (("/v1/me/actions", 12), ("/v1/me/ledger", 23)):
        seen: list[str] = []
        cursor = None
        while True:
            page = (
                await api.get(path, params={"limit": 5, **({"cursor": cursor} if cursor else {})}, headers=resident)
            ).json()
            seen += [item.get("id") or item["transfer_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == total, path
    bad = await api.get("/v1/me/actions", params={"cursor": "not-a-cursor"}, headers=resident)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"


async def test_batches_are_bounded_and_must_be_json(api: AsyncTestClient, transit: PartnerHandle) -> None:
    # Not JSON at all is a 400, as on every route; JSON of the wrong shape is a 422.
    for body, status in ((b"not json", 400), (b'{"records": []}', 422), (b'{"records": {}}', 422)):
        headers = transit.simulator.signed_push([])[1]
        headers[SIGNATURE_HEADER] = sign(
            transit.simulator.secret, int(time.time()), "POST", "/v1/partner/actions:batch", body
        )
        response = await api.post("/v1/partner/actions:batch", content=body, headers={**headers, **transit.headers})
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    too_many = [{"external_id": str(i), "account_ref": "x"} for i in range(1001)]
    response = await push(api, transit, too_many)
    assert response.status_code == 422 and response.json()["code"] == "invalid_input"
