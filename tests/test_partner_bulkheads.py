"""Partners cannot take each other down: each has its own share of connections, every call has a deadline,
only a partner's own failures count against its circuit, and its answers are bounded in size and depth."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from integrations.partners import (
    PartnerBadResponse,
    PartnerEndpoint,
    PartnerGateway,
    PartnerLimits,
    PartnerUnavailable,
    RetryPolicy,
    json_depth,
)
from integrations.simulators.partner import PartnerSimulator
from tests.helpers import (
    PartnerHandle,
    bearer,
    link_account,
    register_partner,
    sign_in_operator,
    sign_in_resident,
    yesterday_at,
)
from tests.test_actions_ingest import trip

POLICY = RetryPolicy(attempts=2, backoff_s=0.01, breaker_threshold=3, breaker_cooldown_s=60.0)


def endpoint(simulator: PartnerSimulator) -> PartnerEndpoint:
    simulator.secret = "whsec_test"
    return PartnerEndpoint(uuid.uuid4(), simulator.url, "whsec_test")


async def test_a_partner_that_drips_its_answer_is_cut_off_at_the_calls_deadline() -> None:
    """One byte every 0.5 s keeps every read inside its timeout; only the deadline bounds the call."""
    with PartnerSimulator(seed=21) as dripping:
        partner = endpoint(dripping)
        record = dripping.add_record(trip(dripping.open_account(), yesterday_at(9), 20, 6_000))
        dripping.mode, dripping.slow_s = "drip", 0.5  # the record would take over two minutes
        gateway = PartnerGateway(POLICY, PartnerLimits(timeout_s=3.0, deadline_s=2.0))
        try:
            started = time.monotonic()
            with pytest.raises(PartnerUnavailable, match="within 2 s"):
                await asyncio.wait_for(gateway.fetch_record(partner, record["external_id"]), timeout=30)
            assert time.monotonic() - started < 10
        finally:
            await gateway.aclose()


async def test_a_slow_partner_uses_up_its_own_connections_and_never_a_healthy_ones() -> None:
    # A second's wait for a connection: 40 quick calls through 4 connections fit in it even on a loaded
    # machine (0.2 s did not, once, in CI), and the slow partner's callers still hear "busy" long before
    # its 3 s deadline.
    limits = PartnerLimits(timeout_s=5.0, deadline_s=3.0, connections=4, pool_wait_s=1.0)
    with PartnerSimulator(seed=22) as slow_sim, PartnerSimulator(seed=23) as healthy_sim:
        slow, healthy = endpoint(slow_sim), endpoint(healthy_sim)
        stuck = slow_sim.add_record(trip(slow_sim.open_account(), yesterday_at(9), 20, 6_000))
        fine = healthy_sim.add_record(trip(healthy_sim.open_account(), yesterday_at(9), 20, 6_000))
        slow_sim.mode, slow_sim.slow_s = "drip", 1.0
        gateway = PartnerGateway(POLICY, limits)
        try:
            stalled = [asyncio.ensure_future(gateway.fetch_record(slow, stuck["external_id"])) for _ in range(12)]
            await asyncio.sleep(0.5)  # the slow partner's four connections are taken, eight calls wait
            answers = await asyncio.gather(*(gateway.fetch_record(healthy, fine["external_id"]) for _ in range(40)))
            assert answers == [fine] * 40
            outcomes = await asyncio.gather(*stalled, return_exceptions=True)
        finally:
            await gateway.aclose()
    assert all(isinstance(o, PartnerUnavailable) for o in outcomes), outcomes
    busy = [o for o in outcomes if "in flight" in str(o)]
    assert len(busy) >= 6, [str(o) for o in outcomes]  # told to retry at once, not after the deadline
    # Only the slow partner's own failures (its deadlines) count, against its own circuit.
    assert gateway.circuit_state(healthy.partner_id) == "closed"
    assert gateway.circuit_state(slow.partner_id) == "open"


def test_json_depth() -> None:
    assert json_depth(1) == 0 and json_depth({}) == 1 and json_depth({"a": [1, {"b": []}]}) == 4


@pytest.fixture(scope="module")
async def admin(api: AsyncTestClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(api, database_url, "admin"))


@pytest.fixture
async def partner(api: AsyncTestClient, admin: dict[str, str]) -> AsyncIterator[PartnerHandle]:
    with PartnerSimulator("transit") as sim:
        yield await register_partner(api, admin, sim)


@pytest.mark.parametrize("mode", ["huge", "deep"])
async def test_an_answer_too_large_or_too_deep_is_a_502_and_keeps_nothing(
    api: AsyncTestClient, partner: PartnerHandle, sms_gateway: Any, mode: str
) -> None:
    resident = bearer(await sign_in_resident(api, sms_gateway))
    ref = await link_account(api, resident, partner)
    record = partner.simulator.add_record(trip(ref, yesterday_at(9), 20, 6_000))
    partner.simulator.mode = mode
    claim = {"partner_id": partner.id, "external_id": record["external_id"]}
    claimed = await api.post("/v1/me/actions/claims", json=claim, headers=resident)
    assert claimed.status_code == 502 and claimed.json()["code"] == "partner_bad_response", claimed.text
    assert ("larger than" if mode == "huge" else "nested more than") in claimed.json()["detail"]
    assert (await api.get("/v1/me/actions", headers=resident)).json()["items"] == []
    partner.simulator.mode = "ok"
    retried = await api.post("/v1/me/actions/claims", json=claim, headers=resident)
    assert retried.status_code == 200 and retried.json()["outcome"] == "credited", retried.text


async def test_the_gateway_refuses_an_oversized_answer_before_holding_it_whole() -> None:
    with PartnerSimulator(seed=24) as huge:
        partner = endpoint(huge)
        huge.mode = "huge"
        gateway = PartnerGateway(POLICY, PartnerLimits(max_response_bytes=10_000))
        try:
            with pytest.raises(PartnerBadResponse, match="larger than 10000 bytes"):
                await gateway.fetch_record(partner, "any")
        finally:
            await gateway.aclose()
