"""Fraud reversal and the carbon exchange, end to end on a database of their own (a batch takes every
reduction of the database, so no other test's actions may be in it), with the exchange simulator on
127.0.0.1: batches export each reduction once, reversals after an export come back as adjustments,
a crash between building and submitting neither loses nor duplicates a batch, the evidence package
verifies offline and a tampered one does not, and the reduction statistics equal the ledger's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.cli import main as cli
from integrations.evidence import action_ids_root, verify_evidence
from integrations.simulators.city_idp import CityIdpSimulator
from integrations.simulators.exchange import ExchangeSimulator
from integrations.simulators.partner import PartnerSimulator
from integrations.simulators.sms_gateway import SmsGatewaySimulator
from ledger import CARBON_POOL, EXCHANGE, resident_receivable_account
from tests.helpers import (
    PartnerHandle,
    bearer,
    identity_settings,
    link_account,
    push,
    register_merchant,
    register_partner,
    scratch_database,
    sign_in_operator,
    sign_in_resident,
    unused_port,
)
from tests.helpers import yesterday_at
from tests.test_actions_ingest import trip

TOKEN = "exchange-test-token"


def exchange_settings(sms: SmsGatewaySimulator, idp: CityIdpSimulator, exchange_url: str | None) -> Any:
    return identity_settings(
        sms,
        idp,
        exchange_url=exchange_url,
        exchange_token=TOKEN,
        exchange_timeout_s=20,
        exchange_backoff_s=0.1,
        exchange_max_backoff_s=0.3,
        exchange_poll_interval_s=0.1,
        checkpoint_interval_s=0.2,
        seal_poll_interval_s=0.05,
    )


@pytest.fixture(scope="module")
def exchange_sim() -> Iterator[ExchangeSimulator]:
    with ExchangeSimulator(token=TOKEN) as sim:
        yield sim  # type: ignore[misc]


@pytest.fixture(scope="module")
def transit_sim() -> Iterator[PartnerSimulator]:
    with PartnerSimulator("transit") as sim:
        yield sim  # type: ignore[misc]


@pytest.fixture(scope="module")
async def scratch_url(server_url: str) -> AsyncIterator[str]:
    async with scratch_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
async def svc(
    scratch_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator, exchange_sim: ExchangeSimulator
) -> AsyncIterator[AsyncTestClient]:
    app = create_app(exchange_settings(sms_gateway, city_idp, exchange_sim.url), scratch_url)
    async with AsyncTestClient(app=app, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
async def admin(svc: AsyncTestClient, scratch_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(svc, scratch_url, "admin"))


@pytest.fixture(scope="module")
async def auditor(svc: AsyncTestClient, scratch_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(svc, scratch_url, "auditor"))


@pytest.fixture(scope="module")
async def transit(svc: AsyncTestClient, admin: dict[str, str], transit_sim: PartnerSimulator) -> PartnerHandle:
    return await register_partner(svc, admin, transit_sim)


@asynccontextmanager
async def owner_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def resident_with_trips(
    client: AsyncTestClient, sms: SmsGatewaySimulator, partner: PartnerHandle, distances_m: list[int]
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """A new resident, linked, with one credited metro trip per distance (10 km: 510 g, 5 points by version 1)."""
    resident = bearer(await sign_in_resident(client, sms))
    ref = await link_account(client, resident, partner)
    start = yesterday_at(6)
    records = [trip(ref, start + timedelta(minutes=40 * i), 30, d) for i, d in enumerate(distances_m)]
    response = await push(client, partner, records)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["outcome"] for r in results] == ["credited"] * len(records), results
    return resident, results


async def build(client: AsyncTestClient, admin: dict[str, str], key: str | None = None, **body: Any) -> Any:
    headers = {**admin, **({"Idempotency-Key": key} if key else {})}
    return await client.post(
        "/v1/operator/exchange-batches", json={"cutoff": datetime.now(UTC).isoformat(), **body}, headers=headers
    )


async def until(check: Any, what: str, seconds: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def submitted(client: AsyncTestClient, headers: dict[str, str], batch_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = (await client.get(f"/v1/operator/exchange-batches/{batch_id}", headers=headers)).json()
        return body if body["status"] == "submitted" else None

    return await until(check, f"batch {batch_id} to be submitted")  # type: ignore[no-any-return]


async def evidence(client: AsyncTestClient, headers: dict[str, str], batch_id: str, path: Path) -> list[dict[str, Any]]:
    """The batch's evidence package, written to ``path`` (waiting while it is not ready)."""

    async def check() -> bytes | None:
        response = await client.get(f"/v1/operator/exchange-batches/{batch_id}/evidence", headers=headers)
        if response.status_code == 503:
            assert response.json()["code"] == "evidence_not_ready" and response.headers["retry-after"]
            return None
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return response.content

    path.write_bytes(await until(check, "the evidence package"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(source: Path, target: Path, change: Any) -> Path:
    lines = [json.loads(line) for line in source.read_text().splitlines()]
    change(lines)
    target.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return target


async def exchange_balance(client: AsyncTestClient, headers: dict[str, str]) -> int:
    response = await client.get(f"/v1/operator/ledger/accounts/{EXCHANGE.id}", headers=headers)
    if response.status_code == 404:  # created with the first batch
        assert response.json()["code"] == "account_not_found"
        return 0
    account = response.json()
    return account["balance"]["credits_posted"] - account["balance"]["debits_posted"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------ batches


async def test_a_batch_exports_each_reduction_once_and_its_evidence_verifies_offline(
    svc: AsyncTestClient,
    admin: dict[str, str],
    auditor: dict[str, str],
    transit: PartnerHandle,
    sms_gateway: SmsGatewaySimulator,
    exchange_sim: ExchangeSimulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, first = await resident_with_trips(svc, sms_gateway, transit, [10_000, 4_000])
    _, second = await resident_with_trips(svc, sms_gateway, transit, [20_000])
    credited = first + second
    before = await exchange_balance(svc, auditor)

    built = await build(svc, admin)
    assert built.status_code == 201, built.text
    batch = built.json()
    grams = sum(r["grams_co2e"] for r in credited)
    assert (batch["actions"], batch["grams_co2e"], batch["adjustments"], batch["net_g"]) == (3, grams, 0, grams)
    assert batch["by_kind"] == {"transit": {"actions": 3, "grams_co2e": grams}}
    [(methodology, totals)] = batch["by_methodology"].items()
    assert methodology.endswith(" v1") and totals == {"actions": 3, "grams_co2e": grams}
    ids = sorted(uuid.UUID(r["action_id"]) for r in credited)
    assert base64.b64decode(batch["merkle_root"]) == action_ids_root(ids)

    nothing = await svc.post("/v1/operator/exchange-batches", json={}, headers=admin)  # the cut-off defaults to now
    assert nothing.status_code == 409 and nothing.json()["code"] == "nothing_to_export", nothing.text
    assert (await build(svc, auditor)).status_code == 403

    done = await submitted(svc, auditor, batch["id"])
    held = exchange_sim.batches[batch["id"]]
    assert done["receipt_id"] == held["receipt_id"] and held["summary"]["grams_co2e"] == grams
    assert held["summary"]["merkle_root"] == batch["merkle_root"]
    assert await exchange_balance(svc, auditor) - before == grams
    listed = (await svc.get("/v1/operator/exchange-batches", headers=auditor)).json()["items"]
    assert listed[0]["id"] == batch["id"] and listed[0]["status"] == "submitted"

    package = tmp_path / "evidence.jsonl"
    lines = await evidence(svc, auditor, batch["id"], package)
    kinds = [line["type"] for line in lines]
    assert kinds[0] == "header" and kinds[-1] == "totals" and "key" in kinds and "checkpoint" in kinds
    reductions = [line for line in lines if line["type"] == "reduction"]
    assert [r["action_id"] for r in reductions] == [str(i) for i in ids]
    assert all(r["activity"]["mode"] == "metro" and r["factor"] for r in reductions)
    [methodology_line] = [line for line in lines if line["type"] == "methodology"]
    assert all(f["sources"] for f in methodology_line["data"]["factors"].values())
    assert [m["name"] for m in lines if m["type"] == "movement"] == ["export"]

    report = verify_evidence(package)
    assert report.ok, report.problems
    assert (report.reductions, report.total_g) == (3, grams)
    assert cli(["exchange", "verify", str(package)]) == 0
    assert "OK" in capsys.readouterr().out

    def tamper_factor(lines: list[dict[str, Any]]) -> None:
        factors = next(line for line in lines if line["type"] == "methodology")["data"]["factors"]
        factors["metro"]["value"] = str(int(float(factors["metro"]["value"])) + 9)

    def tamper_amount(lines: list[dict[str, Any]]) -> None:
        next(line for line in lines if line["type"] == "reduction")["grams_co2e"] += 1

    def tamper_proof(lines: list[dict[str, Any]]) -> None:
        line = next(line for line in lines if line["type"] == "reduction" and line["audit_path"])
        digest = bytearray(base64.b64decode(line["audit_path"][0]))
        digest[0] ^= 1
        line["audit_path"][0] = base64.b64encode(bytes(digest)).decode()

    first_reduction = kinds.index("reduction") + 1
    for name, change, first_problem in (
        ("factor", tamper_factor, f"line {first_reduction}: action {ids[0]}"),
        ("amount", tamper_amount, f"line {first_reduction}: action {ids[0]}"),
        ("proof", tamper_proof, "inclusion proof"),
    ):
        tampered = rewrite(package, tmp_path / f"tampered-{name}.jsonl", change)
        report = verify_evidence(tampered)
        assert not report.ok, name
        assert report.problems[0].startswith(first_problem) or first_problem in report.problems[0], report.problems
        assert cli(["exchange", "verify", str(tampered)]) == 1
        assert "FAILED" in capsys.readouterr().out


async def test_a_retried_build_with_its_idempotency_key_answers_the_same_batch(
    svc: AsyncTestClient, admin: dict[str, str], transit: PartnerHandle, sms_gateway: SmsGatewaySimulator
) -> None:
    await resident_with_trips(svc, sms_gateway, transit, [8_000])
    key = f"batch-{uuid.uuid4()}"
    first = await build(svc, admin, key)
    assert first.status_code == 201, first.text
    cutoff = first.json()["cutoff"]
    again = await svc.post(
        "/v1/operator/exchange-batches", json={"cutoff": cutoff}, headers={**admin, "Idempotency-Key": key}
    )
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    missing = await svc.get(f"/v1/operator/exchange-batches/{uuid.uuid4()}", headers=admin)
    assert missing.status_code == 404 and missing.json()["code"] == "batch_not_found"


# ---------------------------------------------------------------------------------------- reversals


async def test_a_reversal_takes_back_points_and_grams_once_and_is_audited(
    svc: AsyncTestClient,
    admin: dict[str, str],
    auditor: dict[str, str],
    transit: PartnerHandle,
    sms_gateway: SmsGatewaySimulator,
) -> None:
    resident, [action, kept] = await resident_with_trips(svc, sms_gateway, transit, [10_000, 10_000])
    impact = (await svc.get("/v1/me/balance", headers=resident)).json()
    grams, points = action["grams_co2e"], action["points"]
    assert (impact["points_available"], impact["co2e_avoided_g"]) == (2 * points, 2 * grams)
    path = f"/v1/operator/actions/{action['action_id']}/reverse"
    assert (await svc.post(path, json={"reason": "card cloned"}, headers=auditor)).status_code == 403
    assert (await svc.post(path, json={"reason": "card cloned"}, headers=resident)).status_code == 403

    key = {"Idempotency-Key": f"rev-{uuid.uuid4()}"}
    reversed_ = await svc.post(path, json={"reason": "card cloned"}, headers={**admin, **key})
    assert reversed_.status_code == 200, reversed_.text
    body = reversed_.json()
    assert (body["status"], body["grams_co2e"], body["points_recovered"], body["points_owed"]) == (
        "reversed",
        grams,
        points,
        0,
    )
    replay = await svc.post(path, json={"reason": "card cloned"}, headers={**admin, **key})
    assert replay.json() == body and replay.headers.get("idempotent-replayed") == "true"
    again = await svc.post(path, json={"reason": "another reason"}, headers=admin)
    assert again.status_code == 200 and again.json() == body  # reversing twice answers the first reversal

    after = (await svc.get("/v1/me/balance", headers=resident)).json()
    assert (after["points_available"], after["co2e_avoided_g"]) == (points, grams)
    impact = (await svc.get("/v1/me/impact", headers=resident)).json()
    assert impact["co2e_avoided_g"] == grams
    trail = (await svc.get(f"/v1/operator/actions/{action['action_id']}", headers=auditor)).json()
    assert trail["action"]["status"] == "reversed" and trail["reversal"]["reason"] == "card cloned"
    assert {t["code"] for t in trail["transfers"]} == {"action_credit", "reversal"}
    log = (await svc.get("/v1/operator/audit-log", headers=auditor)).json()
    assert [(e["action"], e["target_id"]) for e in log].count(("action.reverse", action["action_id"])) == 1

    pending = await svc.post(f"/v1/operator/actions/{uuid.uuid4()}/reverse", json={"reason": "x"}, headers=admin)
    assert pending.status_code == 404 and pending.json()["code"] == "action_not_found"
    assert kept["outcome"] == "credited"


async def test_reversing_spent_points_leaves_a_debt_that_the_next_credits_settle_first(
    svc: AsyncTestClient,
    admin: dict[str, str],
    auditor: dict[str, str],
    transit: PartnerHandle,
    sms_gateway: SmsGatewaySimulator,
) -> None:
    resident, [action] = await resident_with_trips(svc, sms_gateway, transit, [20_000])  # 9 or 10 points
    merchant = await register_merchant(svc, admin)
    offer = await svc.post("/v1/merchant/offers", json={"title": "Tea", "points_price": 8}, headers=merchant.headers)
    held = await svc.post("/v1/me/redemptions", json={"offer_id": offer.json()["id"]}, headers=resident)
    captured = await svc.post(
        "/v1/merchant/redemptions:capture", json={"code": held.json()["code"]}, headers=merchant.headers
    )
    assert captured.status_code == 200, captured.text

    reversed_ = await svc.post(
        f"/v1/operator/actions/{action['action_id']}/reverse", json={"reason": "fake trip"}, headers=admin
    )
    assert reversed_.status_code == 200, reversed_.text
    assert (reversed_.json()["points_recovered"], reversed_.json()["points_owed"]) == (action["points"] - 8, 8)
    balance = (await svc.get("/v1/me/balance", headers=resident)).json()
    assert (balance["points_available"], balance["co2e_avoided_g"]) == (0, 0)
    me = (await svc.get("/v1/me", headers=resident)).json()
    page = (await svc.get(f"/v1/operator/residents/{me['id']}", headers=auditor)).json()
    assert page["balances"]["points_owed"] == 8

    ref = (await svc.get("/v1/me/links", headers=resident)).json()[0]["partner_account_ref"]
    later = [trip(ref, yesterday_at(12 + i), 30, 10_000) for i in range(3)]  # 4 or 5 points each
    results = (await push(svc, transit, later)).json()["results"]
    assert [r["outcome"] for r in results] == ["credited"] * 3
    balance = (await svc.get("/v1/me/balance", headers=resident)).json()
    earned = sum(r["points"] for r in results)
    assert earned > 8 and balance["points_available"] == earned - 8  # the debt is settled before any spending
    page = (await svc.get(f"/v1/operator/residents/{me['id']}", headers=auditor)).json()
    assert page["balances"]["points_owed"] == 0
    receivable = resident_receivable_account(uuid.UUID(me["id"]))
    account = (await svc.get(f"/v1/operator/ledger/accounts/{receivable.id}", headers=auditor)).json()
    assert (account["balance"]["debits_posted"], account["balance"]["credits_posted"]) == (8, 8)


async def test_a_reversal_after_export_is_carried_into_the_next_batch_as_an_adjustment(
    svc: AsyncTestClient,
    admin: dict[str, str],
    auditor: dict[str, str],
    transit: PartnerHandle,
    sms_gateway: SmsGatewaySimulator,
    tmp_path: Path,
) -> None:
    _, [action] = await resident_with_trips(svc, sms_gateway, transit, [10_000])
    exported = await build(svc, admin)
    assert exported.status_code == 201, exported.text
    assert action["action_id"] in await batch_action_ids(svc, auditor, exported.json()["id"], tmp_path / "a.jsonl")
    before = await exchange_balance(svc, auditor)

    reversed_ = await svc.post(
        f"/v1/operator/actions/{action['action_id']}/reverse", json={"reason": "fraud"}, headers=admin
    )
    assert reversed_.status_code == 200, reversed_.text
    adjusted = await build(svc, admin)
    assert adjusted.status_code == 201, adjusted.text
    batch = adjusted.json()
    assert (batch["actions"], batch["adjustments"], batch["adjustment_g"], batch["net_g"]) == (
        0,
        1,
        action["grams_co2e"],
        -action["grams_co2e"],
    )
    assert await exchange_balance(svc, auditor) - before == -action["grams_co2e"]
    lines = await evidence(svc, auditor, batch["id"], tmp_path / "b.jsonl")
    [adjustment] = [line for line in lines if line["type"] == "adjustment"]
    assert adjustment["action_id"] == action["action_id"] and adjustment["exported_in"] == exported.json()["id"]
    assert [m["name"] for m in lines if m["type"] == "movement"] == ["adjustment"]
    assert verify_evidence(tmp_path / "b.jsonl").ok
    again = await build(svc, admin)
    assert again.status_code == 409  # adjusted once


async def batch_action_ids(client: AsyncTestClient, headers: dict[str, str], batch_id: str, path: Path) -> set[str]:
    return {
        line["action_id"] for line in await evidence(client, headers, batch_id, path) if line["type"] == "reduction"
    }


# ------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("group_by", ["kind", "day", "month", "partner", "methodology"])
async def test_reduction_statistics_equal_the_carbon_pools_ledger_movements(
    svc: AsyncTestClient,
    auditor: dict[str, str],
    transit: PartnerHandle,
    sms_gateway: SmsGatewaySimulator,
    scratch_url: str,
    group_by: str,
) -> None:
    await resident_with_trips(svc, sms_gateway, transit, [3_000, 12_000])
    period = {"from": "2000-01-01T00:00:00Z", "to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    response = await svc.get("/v1/operator/stats/reductions", params={**period, "group_by": group_by}, headers=auditor)
    assert response.status_code == 200, response.text
    stats = response.json()
    async with owner_connection(scratch_url) as conn:
        ledger = await conn.fetchrow(
            """
            SELECT coalesce(sum(amount) FILTER (WHERE credit_account_id = $1 AND code = 'action_credit'), 0)
                 - coalesce(sum(amount) FILTER (WHERE debit_account_id = $1 AND code = 'reversal'), 0) AS net,
                   count(*) FILTER (WHERE credit_account_id = $1 AND code = 'action_credit') AS credits,
                   count(*) FILTER (WHERE debit_account_id = $1 AND code = 'reversal') AS reversals
            FROM ledger_transfers WHERE timestamp >= $2 AND timestamp < $3
            """,
            CARBON_POOL.id,
            datetime.fromisoformat(period["from"]),
            datetime.fromisoformat(period["to"]),
        )
        points = await conn.fetchval(
            """
            SELECT coalesce(sum(amount) FILTER (WHERE code = 'action_credit'), 0)
                 - coalesce(sum(amount) FILTER (WHERE code = 'reversal'), 0)
            FROM ledger_transfers WHERE ledger = 'points' AND timestamp >= $1 AND timestamp < $2
            """,
            datetime.fromisoformat(period["from"]),
            datetime.fromisoformat(period["to"]),
        )
    total = stats["total"]
    assert total["grams_co2e"] == ledger["net"] > 0
    assert sum(g["grams_co2e"] for g in stats["groups"]) == ledger["net"]
    assert (total["actions_credited"], total["actions_reversed"]) == (ledger["credits"], ledger["reversals"])
    assert total["points_issued"] == points
    assert (
        await svc.get("/v1/operator/stats/reductions", params=period, headers=bearer_of_nobody())
    ).status_code == 401


def bearer_of_nobody() -> dict[str, str]:
    return {"Authorization": "Bearer not-a-token"}


# ------------------------------------------------------------------------------ crash between build and submit


async def test_a_crash_between_building_and_submitting_neither_loses_nor_duplicates_the_batch(
    server_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator, transit_sim: PartnerSimulator
) -> None:
    with ExchangeSimulator(token=TOKEN) as exchange:
        async with scratch_database(server_url) as url:
            # The exchange is unreachable while the batch is built: it stays built, with the failure recorded.
            down = f"http://127.0.0.1:{unused_port()}"
            async with AsyncTestClient(app=create_app(exchange_settings(sms_gateway, city_idp, down), url)) as first:
                admin = bearer(await sign_in_operator(first, url, "admin"))
                partner = await register_partner(first, admin, transit_sim)
                await resident_with_trips(first, sms_gateway, partner, [10_000, 5_000])
                key = {"Idempotency-Key": "the-one-batch"}
                body = {"cutoff": datetime.now(UTC).isoformat()}
                built = await first.post("/v1/operator/exchange-batches", json=body, headers={**admin, **key})
                assert built.status_code == 201, built.text
                batch_id = built.json()["id"]

                async def failed_once() -> bool:
                    body = (await first.get(f"/v1/operator/exchange-batches/{batch_id}", headers=admin)).json()
                    return body["attempts"] >= 1 and body["last_error"] is not None and body["status"] == "built"

                await until(failed_once, "a failed submission")
            # The worker is gone. Its successor submits the batch; the exchange's first answer is lost.
            exchange.lose_next_answer()
            async with AsyncTestClient(
                app=create_app(exchange_settings(sms_gateway, city_idp, exchange.url), url)
            ) as second:
                retried = await second.post("/v1/operator/exchange-batches", json=body, headers={**admin, **key})
                assert retried.json()["id"] == batch_id, retried.text  # the operator's retry: the same batch
                done = await submitted(second, admin, batch_id)
                assert exchange.submissions >= 2  # the lost answer was retried …
                assert list(exchange.batches) == [batch_id]  # … and the exchange holds the batch once
                assert done["receipt_id"] == exchange.batches[batch_id]["receipt_id"]
                listed = (await second.get("/v1/operator/exchange-batches", headers=admin)).json()["items"]
                assert [b["id"] for b in listed] == [batch_id]
                assert (await build(second, admin)).status_code == 409


async def test_exports_adjustments_and_reversals_are_append_only(scratch_url: str) -> None:
    """Runs after the module's batches and reversals, so each table has rows to refuse changing."""
    async with owner_connection(scratch_url) as conn:
        for table in ("exchange_batch_items", "exchange_adjustments", "action_reversals"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") > 0, table
            for change in (f"UPDATE {table} SET grams_co2e = grams_co2e + 1", f"DELETE FROM {table}"):
                with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute(change)
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(f"TRUNCATE {table}")
