"""Linking partner accounts and claiming records when the partner is down, slow or talks garbage.

The partners are the shipped simulators, real HTTP servers on 127.0.0.1; each test that breaks one
registers its own, so that one partner's open circuit never affects another test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from domain.signatures import SIGNATURE_HEADER, sign
from integrations.partners import PartnerEndpoint, PartnerGateway, PartnerLimits, PartnerUnavailable, RetryPolicy
from integrations.simulators.partner import PartnerSimulator
from tests.helpers import (
    PartnerHandle,
    bearer,
    identity_settings,
    link_account,
    register_partner,
    served,
    sign_in_operator,
    sign_in_resident,
)
from tests.helpers import yesterday_at
from tests.test_actions_ingest import trip


@pytest.fixture(scope="module")
async def admin(api: AsyncTestClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(api, database_url, "admin"))


@pytest.fixture
async def partner(api: AsyncTestClient, admin: dict[str, str]) -> AsyncIterator[PartnerHandle]:
    with PartnerSimulator("transit") as sim:
        yield await register_partner(api, admin, sim)


@pytest.fixture
async def resident(api: AsyncTestClient, sms_gateway: Any) -> dict[str, str]:
    return bearer(await sign_in_resident(api, sms_gateway))


async def _link(api: AsyncTestClient, resident: dict[str, str], partner: PartnerHandle, ref: str, code: str) -> Any:
    return await api.post(
        "/v1/me/links", json={"partner_id": partner.id, "partner_account_ref": ref, "link_code": code}, headers=resident
    )


async def test_linking_needs_the_code_the_partner_showed_and_one_account_has_one_resident(
    api: AsyncTestClient, partner: PartnerHandle, resident: dict[str, str], sms_gateway: Any
) -> None:
    ref = partner.simulator.open_account()
    partner.simulator.link_code(ref)
    wrong = await _link(api, resident, partner, ref, "000000x")
    assert wrong.status_code == 422 and wrong.json()["code"] == "link_not_verified"
    code = partner.simulator.link_code(ref)
    linked = await _link(api, resident, partner, ref, code)
    assert linked.status_code == 201
    again = await _link(api, resident, partner, ref, "anything")
    assert again.status_code == 200 and again.json()["id"] == linked.json()["id"]

    thief = bearer(await sign_in_resident(api, sms_gateway))
    stolen = await _link(api, thief, partner, ref, partner.simulator.link_code(ref))
    assert stolen.status_code == 409 and stolen.json()["code"] == "account_already_linked"
    assert (await api.get("/v1/me/links", headers=thief)).json() == []
    # BOLA: the thief cannot unlink someone else's link either.
    link_id = linked.json()["id"]
    assert (await api.delete(f"/v1/me/links/{link_id}", headers=thief)).status_code == 404

    assert [link["partner_account_ref"] for link in (await api.get("/v1/me/links", headers=resident)).json()] == [ref]
    assert (await api.delete(f"/v1/me/links/{link_id}", headers=resident)).status_code == 204
    assert (await api.get("/v1/me/links", headers=resident)).json() == []
    # Unlinked, the account is free for its (verified) holder to link elsewhere.
    relinked = await _link(api, thief, partner, ref, partner.simulator.link_code(ref))
    assert relinked.status_code == 201


async def test_a_verification_whose_answer_was_lost_is_retried_and_confirmed() -> None:
    """The partner uses the code up on the first call; its answer comes after our timeout, so we retry.

    The late answer is held until the simulator stops, so the first attempt times out however slow
    this machine is, and each retry has the whole timeout to be answered.
    """
    policy = RetryPolicy(attempts=3, backoff_s=0.01, breaker_threshold=5, breaker_cooldown_s=30.0)
    with PartnerSimulator(seed=6) as simulator:
        simulator.secret = "whsec_test"
        endpoint = PartnerEndpoint(uuid.uuid4(), simulator.url, "whsec_test")
        ref = simulator.open_account()
        code = simulator.link_code(ref)
        simulator.slow_s = 600.0
        simulator.late_answers = 1
        gateway = PartnerGateway(policy, PartnerLimits(timeout_s=5, deadline_s=60))
        try:
            assert await gateway.verify_account(endpoint, ref, code, request_id=uuid.uuid4()) is True
            assert simulator.late_answers == 0 and simulator.calls >= 2, "the first answer should have come too late"
            # Another verification (a new link attempt) cannot reuse the code the first one used up.
            assert await gateway.verify_account(endpoint, ref, code, request_id=uuid.uuid4()) is False
        finally:
            await gateway.aclose()


def test_the_partner_answers_a_repeated_verification_alike_and_refuses_another_use() -> None:
    with PartnerSimulator(seed=5) as simulator:
        simulator.secret = "whsec_test"
        ref = simulator.open_account()
        code = simulator.link_code(ref)

        def verify(request_id: str, account_ref: str = ref) -> bool:
            target = f"/accounts/{account_ref}/verify?code={code}&request_id={request_id}"
            headers = {SIGNATURE_HEADER: sign("whsec_test", int(time.time()), "GET", target)}
            answer = httpx.get(simulator.url + target, headers=headers, timeout=30).json()
            return bool(answer["verified"])

        assert verify("first", account_ref="no-such-account") is False
        assert verify("first") is True
        assert verify("first") is True  # a retry of the same verification
        assert verify("second") is False  # anybody else: the code is used up
        assert verify("") is False


async def test_link_with_unknown_partner_is_404(api: AsyncTestClient, resident: dict[str, str]) -> None:
    response = await api.post(
        "/v1/me/links",
        json={"partner_id": "00000000-0000-0000-0000-000000000001", "partner_account_ref": "x", "link_code": "1"},
        headers=resident,
    )
    assert response.status_code == 404 and response.json()["code"] == "partner_not_found"


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("down", 503, "partner_unavailable"),
        ("slow", 503, "partner_unavailable"),
        ("garbage", 502, "partner_bad_response"),
    ],
)
async def test_partner_verification_failing_links_nothing(
    api: AsyncTestClient, partner: PartnerHandle, resident: dict[str, str], mode: str, status: int, code: str
) -> None:
    ref = partner.simulator.open_account()
    link_code = partner.simulator.link_code(ref)
    partner.simulator.mode = mode
    partner.simulator.slow_s = 600.0  # held until the simulator stops: beyond the tests' partner timeout
    response = await _link(api, resident, partner, ref, link_code)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await api.get("/v1/me/links", headers=resident)).json() == []
    partner.simulator.mode = "ok"
    # As the app would: ask the partner for a new code (a slow call may still use up the old one), then link.
    assert (await _link(api, resident, partner, ref, partner.simulator.link_code(ref))).status_code == 201


async def test_a_claim_while_the_partner_is_down_keeps_nothing_and_can_be_retried(
    api: AsyncTestClient, partner: PartnerHandle, resident: dict[str, str]
) -> None:
    ref = await link_account(api, resident, partner)
    record = partner.simulator.add_record(trip(ref, yesterday_at(11), 20, 6_000))
    claim = {"partner_id": partner.id, "external_id": record["external_id"]}
    partner.simulator.mode = "down"
    down = await api.post("/v1/me/actions/claims", json=claim, headers=resident)
    assert down.status_code == 503 and down.json()["code"] == "partner_unavailable"
    assert "retry-after" in down.headers
    assert (await api.get("/v1/me/actions", headers=resident)).json()["items"] == []
    partner.simulator.mode = "ok"
    retried = await api.post("/v1/me/actions/claims", json=claim, headers=resident)
    assert retried.status_code == 200 and retried.json()["outcome"] == "credited"


async def test_repeated_failures_open_the_circuit_and_it_closes_after_the_cooldown() -> None:
    """The breaker on its own clock: a stall of this machine can neither open nor close it early."""
    now = 1_000.0
    policy = RetryPolicy(attempts=2, backoff_s=0.01, breaker_threshold=3, breaker_cooldown_s=30.0)
    with PartnerSimulator(seed=7) as simulator:
        simulator.secret = "whsec_test"
        endpoint = PartnerEndpoint(uuid.uuid4(), simulator.url, "whsec_test")
        record = simulator.add_record(trip(simulator.open_account(), yesterday_at(13), 20, 6_000))
        gateway = PartnerGateway(policy, PartnerLimits(timeout_s=30, deadline_s=120), clock=lambda: now)
        try:
            simulator.mode = "down"
            for _ in range(3):  # the threshold
                with pytest.raises(PartnerUnavailable) as failed:
                    await gateway.fetch_record(endpoint, record["external_id"])
                assert "circuit" not in failed.value.extra
            simulator.mode = "ok"
            calls = simulator.calls
            now += 29.0
            with pytest.raises(PartnerUnavailable) as fast:
                await gateway.fetch_record(endpoint, record["external_id"])
            assert fast.value.extra["circuit"] == "open" and int(fast.value.headers["Retry-After"]) >= 1
            assert simulator.calls == calls, "an open circuit must not call the partner"
            now += 1.0  # the cooldown has passed: one trial call, which succeeds and closes the circuit
            assert await gateway.fetch_record(endpoint, record["external_id"]) == record
            assert await gateway.fetch_record(endpoint, record["external_id"]) == record
        finally:
            await gateway.aclose()


async def test_claims_only_reach_records_of_the_residents_own_linked_accounts(
    api: AsyncTestClient, partner: PartnerHandle, resident: dict[str, str], sms_gateway: Any
) -> None:
    other = bearer(await sign_in_resident(api, sms_gateway))
    theirs = await link_account(api, other, partner)
    record = partner.simulator.add_record(trip(theirs, yesterday_at(14), 20, 6_000))
    claim = {"partner_id": partner.id, "external_id": record["external_id"]}
    not_linked = await api.post("/v1/me/actions/claims", json=claim, headers=resident)
    assert not_linked.status_code == 422 and not_linked.json()["code"] == "not_linked_at_partner"
    await link_account(api, resident, partner)
    not_mine = await api.post("/v1/me/actions/claims", json=claim, headers=resident)
    assert not_mine.status_code == 404 and not_mine.json()["code"] == "record_not_found"
    missing = await api.post("/v1/me/actions/claims", json={**claim, "external_id": "nope"}, headers=resident)
    assert missing.status_code == 404
    assert (await api.post("/v1/me/actions/claims", json=claim, headers=other)).json()["outcome"] == "credited"


async def test_a_malformed_record_from_the_partner_is_a_bad_gateway(
    api: AsyncTestClient, partner: PartnerHandle, resident: dict[str, str]
) -> None:
    ref = await link_account(api, resident, partner)
    partner.simulator.add_record({"external_id": "weird-1", "account_ref": ref, "mode": "metro"})
    response = await api.post(
        "/v1/me/actions/claims", json={"partner_id": partner.id, "external_id": "weird-1"}, headers=resident
    )
    assert response.status_code == 502 and response.json()["code"] == "partner_bad_response"


def test_the_simulator_refuses_unsigned_and_wrongly_signed_calls(partner_sim_url: tuple[str, str]) -> None:
    url, secret = partner_sim_url
    target = "/records/x"
    with httpx.Client(base_url=url) as client:
        assert client.get(target).status_code == 401
        bad = sign("whsec_wrong", int(time.time()), "GET", target)
        assert client.get(target, headers={SIGNATURE_HEADER: bad}).status_code == 401
        good = sign(secret, int(time.time()), "GET", target)
        assert client.get(target, headers={SIGNATURE_HEADER: good}).status_code == 404
        other_path = sign(secret, int(time.time()), "GET", "/records/y")
        assert client.get(target, headers={SIGNATURE_HEADER: other_path}).status_code == 401


@pytest.fixture
def partner_sim_url() -> Any:
    with PartnerSimulator("recycling") as sim:
        sim.configure("whsec_test")
        yield sim.url, "whsec_test"


@pytest.mark.parametrize("waiting", ["claim", "link"])
async def test_a_request_waiting_on_a_slow_partner_holds_no_database_connection(
    database_url: str, sms_gateway: Any, city_idp: Any, waiting: str
) -> None:
    """With one pooled connection, a request served while a claim (or a link) waits on its partner still gets it."""
    # The pool's wait (2 s) is shorter than the partner's delay (6 s, within the 8 s partner timeout):
    # a request that needed the claim's connection would be answered 503 database_busy.
    app = create_app(identity_settings(sms_gateway, city_idp, db_pool_size=1, db_pool_timeout_s=2.0), database_url)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        admin = bearer(await sign_in_operator(client, database_url, "admin"))
        resident = bearer(await sign_in_resident(client, sms_gateway))
        with PartnerSimulator("transit") as simulator:
            partner = await register_partner(client, admin, simulator)
            ref = await link_account(client, resident, partner)
            if waiting == "claim":
                record = simulator.add_record(trip(ref, yesterday_at(11), 20, 6_000))
                path, body = "/v1/me/actions/claims", {"partner_id": partner.id, "external_id": record["external_id"]}
            else:
                other = simulator.open_account()
                path = "/v1/me/links"
                body = {"partner_id": partner.id, "partner_account_ref": other, "link_code": simulator.link_code(other)}
            simulator.mode, simulator.slow_s = "slow", 6.0
            calls = simulator.calls
            slow = asyncio.ensure_future(client.post(path, json=body, headers=resident))
            while simulator.calls == calls:  # until the request is waiting on the partner
                assert not slow.done(), slow.result().text
                await asyncio.sleep(0.02)
            meanwhile = await client.get("/v1/me/links", headers=resident)
            assert meanwhile.status_code == 200, meanwhile.text  # 503 database_busy if the first held it
            answered = await slow
            assert answered.status_code in (200, 201), answered.text
            if waiting == "claim":
                assert answered.json()["outcome"] == "credited"


async def test_link_codes_cannot_be_guessed_and_a_wrong_one_does_not_tell_the_accounts_state(
    api: AsyncTestClient, partner: PartnerHandle, sms_gateway: Any
) -> None:
    """Once 600 wrong codes were answered in 29 s, and a wrong code answered 409 for a linked account."""
    owner = bearer(await sign_in_resident(api, sms_gateway))
    linked_ref = await link_account(api, owner, partner)
    free_ref = partner.simulator.open_account()
    guesser = bearer(await sign_in_resident(api, sms_gateway))
    answers = [await _link(api, guesser, partner, ref, "000000") for ref in (linked_ref, free_ref)]
    assert [(a.status_code, a.json()["code"]) for a in answers] == [(422, "link_not_verified")] * 2
    assert answers[0].json()["detail"] == answers[1].json()["detail"]
    for _ in range(3):  # five wrong codes from this resident in all
        assert (await _link(api, guesser, partner, free_ref, "000001")).status_code == 422
    calls = partner.simulator.calls
    refused = await _link(api, guesser, partner, free_ref, partner.simulator.link_code(free_ref))
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited", refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert partner.simulator.calls == calls  # refused before the partner is asked

    # The account too: five wrong codes for it, from several residents, and it is refused to anyone for now.
    target = partner.simulator.open_account()
    for _ in range(5):
        someone = bearer(await sign_in_resident(api, sms_gateway))
        assert (await _link(api, someone, partner, target, "999999")).status_code == 422
    holder = bearer(await sign_in_resident(api, sms_gateway))
    blocked = await _link(api, holder, partner, target, partner.simulator.link_code(target))
    assert blocked.status_code == 429 and blocked.json()["code"] == "rate_limited"
    # Others and the owner's own link are untouched.
    assert (await _link(api, owner, partner, linked_ref, "anything")).status_code == 200
    assert (await link_account(api, holder, partner)) is not None
