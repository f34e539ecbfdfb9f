"""``GET /metrics`` after a real flow, parsed by Prometheus's own text parser: requests by route and
status, the pools, group commits, partner calls, credited actions and grams, and the database's
figures; and who may read it (loopback without a proxy, or the metrics token)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from integrations.simulators.partner import PartnerSimulator
from tests.helpers import (
    bearer,
    expected,
    identity_settings,
    link_account,
    make_issuance,
    push,
    register_partner,
    served,
    sign_in_operator,
    sign_in_resident,
    transfer,
    yesterday_at,
)
from tests.test_actions_ingest import trip

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels; the parser refuses anything malformed."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture(scope="module")
def transit_sim() -> Iterator[PartnerSimulator]:
    with PartnerSimulator("transit", seed=7) as sim:
        yield sim  # type: ignore[misc]


async def test_metrics_after_a_real_flow_count_what_happened(
    database_url: str, sms_gateway: Any, city_idp: Any, transit_sim: PartnerSimulator
) -> None:
    app = create_app(identity_settings(sms_gateway, city_idp), database_url)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        admin = bearer(await sign_in_operator(client, database_url, "admin"))
        transit = await register_partner(client, admin, transit_sim)
        resident = bearer(await sign_in_resident(client, sms_gateway))
        ref = await link_account(client, resident, transit)  # one call to the partner: verify the code
        trips = [trip(ref, yesterday_at(7, m), 20, 8_000) for m in (0, 30)]
        too_fast = trip(ref, yesterday_at(9), 1, 60_000)  # 3,600 km/h: refused
        pushed = await push(client, transit, [*trips, too_fast])
        assert [r["outcome"] for r in pushed.json()["results"]] == ["credited", "credited", "rejected"]
        claimed_record = transit_sim.add_record(trip(ref, yesterday_at(11), 10, 2_000, mode="shared_bike"))
        claim = {"partner_id": transit.id, "external_id": claimed_record["external_id"]}
        claimed = await client.post("/v1/me/actions/claims", json=claim, headers=resident)
        assert claimed.status_code == 200 and claimed.json()["outcome"] == "credited", claimed.text
        missing = {"partner_id": transit.id, "external_id": "no-such-trip"}
        assert (await client.post("/v1/me/actions/claims", json=missing, headers=resident)).status_code == 404
        for _ in range(3):
            assert (await client.get("/v1/me/balance", headers=resident)).status_code == 200
        assert (await client.get("/v1/no-such-route")).status_code == 404

        # Twelve concurrent ledger submissions: group commit gathers them into one or more groups.
        ledger = app.state.ledger
        issuance = await make_issuance(ledger)
        target = await make_issuance(ledger)
        outcomes = await asyncio.gather(*(ledger.create_transfers([transfer(issuance, target, 1)]) for _ in range(12)))
        assert all(o.applied for [o] in outcomes)

        scraped = await client.get("/metrics")
        assert scraped.status_code == 200, scraped.text
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = parse(scraped.text)

    count = "carbon_http_request_duration_seconds_count"
    assert value(samples, count, method="POST", route="/v1/partner/actions:batch", status="200") == 1
    assert value(samples, count, method="POST", route="/v1/me/actions/claims", status="200") == 1
    assert value(samples, count, method="POST", route="/v1/me/actions/claims", status="404") == 1
    assert value(samples, count, method="GET", route="/v1/me/balance", status="200") == 3
    assert value(samples, count, method="GET", route="(no route)", status="404") == 1
    assert total(samples, "carbon_http_request_duration_seconds_bucket", route="/v1/me/balance", le="+Inf") == 3

    kind = {"kind": "transit"}
    assert value(samples, "carbon_actions_total", outcome="credited", **kind) == 3
    assert value(samples, "carbon_actions_total", outcome="rejected", **kind) == 1
    grams = sum(expected("transit", "metro", 8_000, yesterday_at(7, m)).grams for m in (0, 30))
    grams += expected("transit", "shared_bike", 2_000, yesterday_at(11)).grams
    assert value(samples, "carbon_actions_credited_co2e_grams_total", **kind) == grams

    partner = {"partner": transit.id}
    # The link's verification and the claim's fetch answered; the missing record was a 404.
    assert value(samples, "carbon_partner_call_duration_seconds_count", outcome="ok", **partner) == 2
    assert value(samples, "carbon_partner_call_duration_seconds_count", outcome="not_found", **partner) == 1
    assert value(samples, "carbon_partner_circuit_open", **partner) == 0

    assert value(samples, "carbon_ledger_group_transfers_sum") == 12
    groups = value(samples, "carbon_ledger_group_transfers_count")
    assert 1 <= groups <= 12 and value(samples, "carbon_ledger_group_commit_seconds_count") == groups
    assert value(samples, "carbon_ledger_group_submissions_sum") == 12

    assert value(samples, "carbon_db_pool_wait_seconds_count", pool="requests") > 0
    assert ("carbon_db_pool_connections", frozenset({("pool", "ledger"), ("state", "idle")})) in samples
    assert value(samples, "carbon_database_up") == 1
    assert value(samples, "carbon_ledger_log_size") >= 0 and value(samples, "carbon_ledger_sealer_lag_transfers") >= 0
    assert ("carbon_webhook_deliveries_pending", frozenset()) in samples
    assert value(samples, "process_resident_memory_bytes") > 0


async def test_metrics_need_loopback_without_a_proxy_or_the_token(
    database_url: str, sms_gateway: Any, city_idp: Any
) -> None:
    """Behind a proxy on the same host every request comes from loopback: a forwarded one needs the token."""
    open_app = create_app(identity_settings(sms_gateway, city_idp), database_url)
    async with served(open_app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/metrics")).status_code == 200
        forwarded = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert forwarded.status_code == 401
        assert forwarded.headers["content-type"] == "application/problem+json"
        assert forwarded.json()["code"] == "metrics_token_required"

    token = "metrics-token-0123456789"
    proxied = identity_settings(sms_gateway, city_idp, metrics_token=token, trusted_proxies=["127.0.0.1/32"])
    async with served(create_app(proxied, database_url)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        outside = {"X-Forwarded-For": "203.0.113.9"}
        assert (await client.get("/metrics", headers=outside)).status_code == 401
        wrong = {**outside, "Authorization": "Bearer not-the-token"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        right = {**outside, "Authorization": f"Bearer {token}"}
        scraped = await client.get("/metrics", headers=right)
        assert scraped.status_code == 200 and "carbon_database_up 1.0" in scraped.text
        # A trusted proxy relaying a client on loopback (an agent on the same host) needs no token.
        assert (await client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})).status_code == 200
