"""Group commit for ingestion: concurrent pushes and claims decided together decide as if one after another.

The serial-equivalence property runs seeded random cases through two partners set up alike: one gets
each case's requests one at a time (a group each), the other gets them all at once (one group); every
request's results must match. Then, over a real socket: failures stay per request where they can (a
bad signature, a replayed one, an invalid record), a database failure fails the whole group with 503
and writes nothing, and a client that goes away does not stall the group.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from api.app import create_app
from domain.actions import action_id
from integrations.simulators.partner import PartnerSimulator
from tests.helpers import (
    PartnerHandle,
    bearer,
    identity_settings,
    link_account,
    push,
    register_partner,
    served,
    sign_in_operator,
    sign_in_resident,
    yesterday_at,
)

RESIDENTS = 3
CASES = 30


def trip(ref: str, external_id: str, start_minute: int, minutes: int, metres: int, mode: str) -> dict[str, Any]:
    started = yesterday_at(5) + timedelta(minutes=start_minute)
    return {
        "external_id": external_id,
        "account_ref": ref,
        "mode": mode,
        "started_at": started.isoformat(),
        "ended_at": (started + timedelta(minutes=minutes)).isoformat(),
        "distance_m": metres,
    }


def case_requests(rng: random.Random, case: int) -> list[list[tuple[int, str, int, int, int, str]]]:
    """2–6 requests of 1–4 records over 3 residents: repeated ids, overlapping trips, long trips that
    reach the daily cap, an unlinked account and a too-fast trip among them."""
    requests = []
    for _ in range(rng.randint(2, 6)):
        records = []
        for _ in range(rng.randint(1, 4)):
            resident = rng.randrange(RESIDENTS + 1)  # the last one is an account no resident linked
            external_id = f"case{case}-{rng.randrange(6)}"
            start = case * 600 % 1000 + rng.randrange(0, 120, 10)
            minutes = rng.choice([5, 20, 45])
            metres = rng.choice([2_000, 9_000, 30_000, 60_000])
            records.append((resident, external_id, start, minutes, metres, rng.choice(["metro", "bus_electric"])))
        requests.append(records)
    return requests


@pytest.fixture(scope="module")
def simulators() -> Iterator[tuple[PartnerSimulator, PartnerSimulator, PartnerSimulator]]:
    with (
        PartnerSimulator("transit", seed=11) as one,
        PartnerSimulator("transit", seed=12) as other,
        PartnerSimulator("transit", seed=13) as third,
    ):
        yield one, other, third  # type: ignore[misc]


@pytest.fixture(scope="module")
async def service(database_url: str, sms_gateway: Any, city_idp: Any) -> AsyncIterator[tuple[Any, str]]:
    """A service whose groups wait 100 ms for company, so that concurrent requests share one."""
    app = create_app(identity_settings(sms_gateway, city_idp, ingest_group_wait_ms=100), database_url)
    async with served(app) as url:
        yield app, url


async def mirrored_partner(
    client: httpx.AsyncClient, admin: dict[str, str], sms_gateway: Any, simulator: PartnerSimulator
) -> tuple[PartnerHandle, list[str]]:
    partner = await register_partner(client, admin, simulator)
    refs = [await link_account(client, bearer(await sign_in_resident(client, sms_gateway)), partner) for _ in range(3)]
    return partner, [*refs, simulator.open_account()]  # the last account is linked to nobody


async def test_a_group_decides_as_its_requests_would_one_after_another(
    service: tuple[Any, str], database_url: str, sms_gateway: Any, simulators: tuple[PartnerSimulator, ...]
) -> None:
    app, url = service
    groups, rules = app.state.actions.groups, app.state.actions.rules
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        admin = bearer(await sign_in_operator(client, database_url, "admin"))
        serial, serial_refs = await mirrored_partner(client, admin, sms_gateway, simulators[0])
        grouped, grouped_refs = await mirrored_partner(client, admin, sms_gateway, simulators[1])
    rng = random.Random(20261130)
    one_group_cases = 0
    for case in range(CASES):
        requests = case_requests(rng, case)

        def raws(refs: list[str], records: list[tuple[int, str, int, int, int, str]]) -> list[dict[str, Any]]:
            return [
                trip(refs[r], eid, start, minutes, metres, mode) for r, eid, start, minutes, metres, mode in records
            ]

        one_by_one = [await groups.submit(rules, uuid.UUID(serial.id), "push", raws(serial_refs, r)) for r in requests]
        before = groups.formed
        together = await asyncio.gather(
            *(groups.submit(rules, uuid.UUID(grouped.id), "push", raws(grouped_refs, r)) for r in requests)
        )
        one_group_cases += groups.formed - before == 1

        def seen(results: list[list[Any]]) -> list[list[tuple[Any, ...]]]:
            return [
                [(d.index, d.outcome, d.reason, d.points, d.points_withheld, d.grams_co2e) for d in decisions]
                for decisions in results
            ]

        assert seen(list(together)) == seen(one_by_one), (case, requests)
    assert one_group_cases == CASES  # each case's requests really were decided as one group


@pytest.fixture(scope="module")
async def partner(
    service: tuple[Any, str], database_url: str, sms_gateway: Any, simulators: tuple[PartnerSimulator, ...]
) -> tuple[PartnerHandle, str]:
    _, url = service
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        admin = bearer(await sign_in_operator(client, database_url, "admin"))
        handle = await register_partner(client, admin, simulators[2])
        ref = await link_account(client, bearer(await sign_in_resident(client, sms_gateway)), handle)
        return handle, ref


async def test_failures_stay_with_their_request_in_a_group(
    service: tuple[Any, str], partner: tuple[PartnerHandle, str]
) -> None:
    app, url = service
    handle, ref = partner
    first = [trip(ref, f"fail-{uuid.uuid4().hex}", 0, 20, 8_000, "metro")]
    replayed_body, replayed_headers = handle.simulator.signed_push(first)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        earlier = await client.post(
            "/v1/partner/actions:batch", content=replayed_body, headers={**replayed_headers, **handle.headers}
        )
        assert earlier.status_code == 200, earlier.text
        formed = app.state.actions.groups.formed
        good = [trip(ref, f"good-{uuid.uuid4().hex}", 200, 20, 8_000, "metro")]
        invalid_and_good = [
            {"external_id": f"bad-{uuid.uuid4().hex}", "account_ref": ref, "mode": "metro"},
            trip(ref, f"good-{uuid.uuid4().hex}", 300, 20, 8_000, "metro"),
        ]
        body, headers = handle.simulator.signed_push(good)
        forged = {**headers, "X-Carbon-Signature": headers["X-Carbon-Signature"][:-4] + "0000"}
        responses = await asyncio.gather(
            client.post("/v1/partner/actions:batch", content=body, headers={**forged, **handle.headers}),
            client.post(
                "/v1/partner/actions:batch", content=replayed_body, headers={**replayed_headers, **handle.headers}
            ),
            push(client, handle, invalid_and_good),
            push(client, handle, good),
        )
    assert app.state.actions.groups.formed - formed == 1, "the four requests shared one group"
    bad_signature, replay, mixed, fine = responses
    assert (bad_signature.status_code, bad_signature.json()["code"]) == (401, "signature_invalid")
    assert (replay.status_code, replay.json()["code"]) == (409, "signature_replayed")
    assert mixed.status_code == 200
    assert [(r["index"], r["outcome"], r["reason"]) for r in mixed.json()["results"]] == [
        (0, "rejected", "invalid_record"),
        (1, "credited", None),
    ]
    assert [(r["index"], r["outcome"]) for r in fine.json()["results"]] == [(0, "credited")]


async def test_a_database_failure_fails_the_whole_group_with_503_and_writes_none_of_it(
    service: tuple[Any, str], partner: tuple[PartnerHandle, str], owner_conn: asyncpg.Connection
) -> None:
    _, url = service
    handle, ref = partner
    # The database drops the group's connection while it writes the failing record: an admin shutdown.
    await owner_conn.execute(
        """
        CREATE OR REPLACE FUNCTION test_drop_group() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.external_id LIKE 'drop-%' THEN
                RAISE EXCEPTION 'terminating connection' USING ERRCODE = '57P01';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_drop_group BEFORE INSERT ON actions FOR EACH ROW EXECUTE FUNCTION test_drop_group();
        """
    )
    innocent = [trip(ref, f"innocent-{uuid.uuid4().hex}", 400, 20, 8_000, "metro")]
    failing = [trip(ref, f"drop-{uuid.uuid4().hex}", 500, 20, 8_000, "metro")]
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            answers = await asyncio.gather(push(client, handle, innocent), push(client, handle, failing))
    finally:
        await owner_conn.execute("DROP TRIGGER test_drop_group ON actions; DROP FUNCTION test_drop_group()")
    for answer in answers:
        assert (answer.status_code, answer.json()["code"]) == (503, "database_unavailable"), answer.text
        assert answer.headers["retry-after"] == "5"
    ids = [innocent[0]["external_id"], failing[0]["external_id"]]
    assert await owner_conn.fetchval("SELECT count(*) FROM actions WHERE external_id = ANY($1)", ids) == 0
    references = [f"action:{action_id(uuid.UUID(handle.id), external_id)}" for external_id in ids]
    assert await owner_conn.fetchval("SELECT count(*) FROM ledger_transfers WHERE reference = ANY($1)", references) == 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:  # nothing was kept: a retry goes through
        retried = await push(client, handle, innocent + failing)
    assert [r["outcome"] for r in retried.json()["results"]] == ["credited", "credited"]


async def test_a_client_that_goes_away_does_not_stall_its_group(
    service: tuple[Any, str], partner: tuple[PartnerHandle, str]
) -> None:
    _, url = service
    handle, ref = partner
    gone = [trip(ref, f"gone-{uuid.uuid4().hex}", 600, 20, 8_000, "metro")]
    body, headers = handle.simulator.signed_push(gone)
    request = (
        f"POST /v1/partner/actions:batch HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in {**headers, **handle.headers}.items())
        + "\r\n"
    ).encode() + body
    parts = urlsplit(url)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        raw = socket.create_connection((parts.hostname, parts.port))
        raw.sendall(request)
        started = time.monotonic()
        stayed_task = asyncio.ensure_future(
            push(client, handle, [trip(ref, f"stayed-{uuid.uuid4().hex}", 700, 20, 8_000, "metro")])
        )
        await asyncio.sleep(0.03)  # both now wait in the group's 100 ms window
        raw.close()  # gone before the answer
        stayed = await stayed_task
        assert stayed.status_code == 200 and stayed.json()["results"][0]["outcome"] == "credited"
        assert time.monotonic() - started < 5
        # The departed client's record was decided all the same: sent again, it is a duplicate.
        again = await push(client, handle, gone, timestamp=int(time.time()) - 2)  # signed anew: not a replay
    assert again.json()["results"][0]["outcome"] == "duplicate"
