"""The operators' audit API on the shared service: who may call each route, transfers paged by log
position while another task appends, accounts and statements as of a past moment, the whole log
exported and verified offline, verification as a job, one resident's page and one action's trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.cli import main as cli
from integrations.simulators.city_idp import CityIdpSimulator
from integrations.simulators.partner import PartnerSimulator
from integrations.simulators.sms_gateway import SmsGatewaySimulator
from ledger import Ledger, LogReader, LongReadsBusy, read_export, verify_log
from tests.helpers import (
    LOG_ORIGIN,
    PartnerHandle,
    bearer,
    identity_settings,
    link_account,
    make_account,
    make_issuance,
    open_ledger,
    post,
    push,
    register_merchant,
    register_partner,
    scratch_database,
    sign_in_operator,
    sign_in_resident,
    transfer,
)
from tests.helpers import yesterday_at
from tests.test_actions_ingest import trip
from tests.test_ledger_tamper import RELOCK, UNLOCK


@pytest.fixture(scope="module")
def transit_sim() -> Iterator[PartnerSimulator]:
    with PartnerSimulator("transit") as sim:
        yield sim  # type: ignore[misc]


@pytest.fixture(scope="module")
async def admin(api: AsyncTestClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(api, database_url, "admin"))


@pytest.fixture(scope="module")
async def auditor(api: AsyncTestClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(api, database_url, "auditor"))


@pytest.fixture(scope="module")
async def transit(api: AsyncTestClient, admin: dict[str, str], transit_sim: PartnerSimulator) -> PartnerHandle:
    return await register_partner(api, admin, transit_sim)


async def until_sealed(api: AsyncTestClient, headers: dict[str, str], account_id: uuid.UUID, count: int) -> None:
    for _ in range(600):
        page = await api.get(
            "/v1/operator/ledger/transfers", params={"account_id": str(account_id), "limit": 500}, headers=headers
        )
        if len(page.json()["items"]) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the transfers were never sealed")


# ------------------------------------------------------------------------------------------ roles

READ_ROUTES = [
    "/v1/operator/ledger/transfers",
    f"/v1/operator/ledger/accounts/{uuid.uuid4()}",
    f"/v1/operator/ledger/accounts/{uuid.uuid4()}/statement",
    "/v1/operator/ledger/export",
    f"/v1/operator/jobs/{uuid.uuid4()}",
    f"/v1/operator/residents/{uuid.uuid4()}",
    "/v1/operator/actions",
    f"/v1/operator/actions/{uuid.uuid4()}",
    "/v1/operator/stats/reductions",
    "/v1/operator/exchange-batches",
    f"/v1/operator/exchange-batches/{uuid.uuid4()}",
    f"/v1/operator/exchange-batches/{uuid.uuid4()}/evidence",
]
ADMIN_WRITES = [
    (f"/v1/operator/actions/{uuid.uuid4()}/reverse", {"reason": "fraud"}),
    ("/v1/operator/exchange-batches", {"cutoff": "2026-01-01T00:00:00Z"}),
]


async def test_only_operators_read_and_only_admins_reverse_or_export(
    api: AsyncTestClient,
    admin: dict[str, str],
    auditor: dict[str, str],
    transit: PartnerHandle,
    sms_gateway: SmsGatewaySimulator,
) -> None:
    resident = bearer(await sign_in_resident(api, sms_gateway))
    merchant = (await register_merchant(api, admin)).headers
    outsiders = {"resident": resident, "merchant": merchant, "partner": transit.headers}
    for path in READ_ROUTES:
        assert (await api.get(path)).status_code == 401, path
        for who, headers in outsiders.items():
            response = await api.get(path, headers=headers)
            assert response.status_code == 403, (path, who, response.text)
            assert response.json()["code"] == "forbidden"
        for headers in (auditor, admin):
            assert (await api.get(path, headers=headers)).status_code in (200, 404), path
    verify = await api.post("/v1/operator/ledger/verify", headers=resident)
    assert verify.status_code == 403
    for path, body in ADMIN_WRITES:
        assert (await api.post(path, json=body)).status_code == 401, path
        for headers in (*outsiders.values(), auditor):
            response = await api.post(path, json=body, headers=headers)
            assert response.status_code == 403, (path, response.text)


# ------------------------------------------------------------------------------------- transfers


async def test_transfer_pages_skip_and_repeat_nothing_while_transfers_are_appended(
    api: AsyncTestClient, auditor: dict[str, str], ledger: Ledger
) -> None:
    issuance = await make_issuance(ledger)
    account = await make_account(ledger)
    first = [transfer(issuance, account, 1 + i) for i in range(120)]
    assert all(o.applied for o in await ledger.create_transfers(first))
    await until_sealed(api, auditor, account, len(first))

    appending = True

    async def append() -> int:
        written = 0
        while appending:
            outcomes = await ledger.create_transfers([transfer(issuance, account, 7) for _ in range(5)])
            written += sum(o.applied for o in outcomes)
            await asyncio.sleep(0.01)
        return written

    appender = asyncio.create_task(append())
    try:
        for order in ("desc", "asc"):
            seen: list[dict[str, Any]] = []
            cursor = None
            while True:
                params = {
                    "account_id": str(account),
                    "limit": 25,
                    "order": order,
                    **({"cursor": cursor} if cursor else {}),
                }
                page = (await api.get("/v1/operator/ledger/transfers", params=params, headers=auditor)).json()
                seen += page["items"]
                cursor = page["next_cursor"]
                if cursor is None or (order == "asc" and len(seen) > 300):
                    break
                await asyncio.sleep(0.02)  # the appender writes between pages
            positions = [t["log_position"] for t in seen]
            assert len(set(t["id"] for t in seen)) == len(seen), f"{order}: a transfer was repeated"
            assert positions == sorted(positions, reverse=order == "desc"), order
            assert {t.id for t in first} <= {uuid.UUID(t["id"]) for t in seen}, f"{order}: a transfer was skipped"
    finally:
        appending = False
        assert await appender > 0
    bad = await api.get("/v1/operator/ledger/transfers", params={"cursor": "x1"}, headers=auditor)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"


async def test_filters_account_balances_as_of_a_moment_and_running_statements(
    api: AsyncTestClient, auditor: dict[str, str], ledger: Ledger
) -> None:
    owner = uuid.uuid4()
    issuance = await make_issuance(ledger)
    account = await make_account(ledger, owner_ref=f"merchant:{owner}")
    [a] = await ledger.create_transfers([transfer(issuance, account, 40, reference="first")])
    await asyncio.sleep(0.05)
    between = datetime.now(UTC)
    await asyncio.sleep(0.05)
    [b] = await ledger.create_transfers([transfer(issuance, account, 2, reference="second")])
    assert a.applied and b.applied
    await until_sealed(api, auditor, account, 2)

    by_owner = await api.get("/v1/operator/ledger/transfers", params={"owner": str(owner)}, headers=auditor)
    assert [t["amount"] for t in by_owner.json()["items"]] == [2, 40]
    by_reference = await api.get(
        "/v1/operator/ledger/transfers", params={"owner": str(owner), "reference": "first"}, headers=auditor
    )
    assert [t["id"] for t in by_reference.json()["items"]] == [str(a.id)]
    in_period = await api.get(
        "/v1/operator/ledger/transfers",
        params={"account_id": str(account), "from": between.isoformat(), "ledger": "points", "code": "action_credit"},
        headers=auditor,
    )
    assert [t["id"] for t in in_period.json()["items"]] == [str(b.id)]

    now = (await api.get(f"/v1/operator/ledger/accounts/{account}", headers=auditor)).json()
    assert now["owner_ref"] == f"merchant:{owner}" and now["balance"]["net_posted"] == 42
    then = await api.get(f"/v1/operator/ledger/accounts/{account}", params={"at": between.isoformat()}, headers=auditor)
    assert then.json()["balance"]["net_posted"] == 40 and then.json()["at"] is not None
    statement = (await api.get(f"/v1/operator/ledger/accounts/{account}/statement", headers=auditor)).json()
    assert [(e["transfer"]["amount"], e["balance"]["net_posted"]) for e in statement["items"]] == [(40, 40), (2, 42)]
    paged = (
        await api.get(f"/v1/operator/ledger/accounts/{account}/statement", params={"limit": 1}, headers=auditor)
    ).json()
    rest = await api.get(
        f"/v1/operator/ledger/accounts/{account}/statement",
        params={"limit": 1, "cursor": paged["next_cursor"]},
        headers=auditor,
    )
    assert [e["balance"]["net_posted"] for e in paged["items"] + rest.json()["items"]] == [40, 42]
    missing = await api.get(f"/v1/operator/ledger/accounts/{uuid.uuid4()}", headers=auditor)
    assert missing.status_code == 404 and missing.json()["code"] == "account_not_found"

    [hold] = await ledger.create_transfers([transfer(issuance, account, 10, pending=True, timeout_s=3600)])
    await asyncio.sleep(0.05)
    held = datetime.now(UTC)
    await asyncio.sleep(0.05)
    [posted] = await ledger.create_transfers([post(hold.id)])
    assert hold.applied and posted.applied
    then = (
        await api.get(f"/v1/operator/ledger/accounts/{account}", params={"at": held.isoformat()}, headers=auditor)
    ).json()["balance"]
    assert (then["credits_pending"], then["credits_posted"]) == (10, 42)
    now = (await api.get(f"/v1/operator/ledger/accounts/{account}", headers=auditor)).json()["balance"]
    assert (now["credits_pending"], now["credits_posted"]) == (0, 52)
    statement = (await api.get(f"/v1/operator/ledger/accounts/{account}/statement", headers=auditor)).json()
    assert [(e["balance"]["credits_pending"], e["balance"]["credits_posted"]) for e in statement["items"]] == [
        (0, 40),
        (0, 42),
        (10, 42),
        (0, 52),
    ]


# ------------------------------------------------------------------------------ export and verify


async def test_the_exported_log_verifies_offline(
    api: AsyncTestClient, auditor: dict[str, str], ledger: Ledger, tmp_path: Path
) -> None:
    issuance = await make_issuance(ledger)
    account = await make_account(ledger)
    await ledger.create_transfers([transfer(issuance, account, 5)])
    await until_sealed(api, auditor, account, 1)
    response = await api.get("/v1/operator/ledger/export", headers=auditor)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(response.content)
    export = read_export(path)
    report = verify_log(export.records(), export.checkpoints, export.keys, export.origin)
    assert report.ok, report.problems
    assert report.tree_size >= 1
    assert cli(["ledger", "verify", "--export", str(path)]) == 0

    tampered = path.read_text().replace('"amount":5,', '"amount":6,', 1)
    assert tampered != path.read_text()
    (tmp_path / "tampered.jsonl").write_text(tampered)
    assert cli(["ledger", "verify", "--export", str(tmp_path / "tampered.jsonl")]) == 1

    period = {"from": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(), "format": "csv"}
    csv_body = await api.get("/v1/operator/ledger/export", params=period, headers=auditor)
    assert csv_body.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_body.text)))
    assert rows and {"position", "transfer_id", "amount"} <= set(rows[0])
    assert all(datetime.fromisoformat(r["timestamp"]) >= datetime.fromisoformat(period["from"]) for r in rows)
    backwards = await api.get(
        "/v1/operator/ledger/export",
        params={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=auditor,
    )
    assert backwards.status_code == 422 and backwards.json()["code"] == "invalid_input"


async def test_verification_runs_as_a_job_with_progress_and_a_result(
    api: AsyncTestClient, auditor: dict[str, str]
) -> None:
    started = await api.post("/v1/operator/ledger/verify", headers=auditor)
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    assert started.headers["location"] == f"/v1/operator/jobs/{job_id}"
    for _ in range(1200):
        job = (await api.get(f"/v1/operator/jobs/{job_id}", headers=auditor)).json()
        if job["status"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "succeeded", job
    assert job["result"]["ok"] is True and job["result"]["first_bad_position"] is None
    assert job["total"] == job["done"] == job["result"]["tree_size"] > 0
    missing = await api.get(f"/v1/operator/jobs/{uuid.uuid4()}", headers=auditor)
    assert missing.status_code == 404 and missing.json()["code"] == "job_not_found"


# --------------------------------------------------------------------------- residents and actions


async def test_a_residents_page_and_an_actions_whole_trail(
    api: AsyncTestClient, auditor: dict[str, str], transit: PartnerHandle, sms_gateway: SmsGatewaySimulator
) -> None:
    resident = bearer(await sign_in_resident(api, sms_gateway))
    ref = await link_account(api, resident, transit)
    start = yesterday_at(7)
    overlapping = trip(ref, start + timedelta(minutes=10), 30, 10_000, mode="shared_bike")
    records = [trip(ref, start, 25, 10_000), overlapping]
    results = (await push(api, transit, records)).json()["results"]
    assert [(r["outcome"], r.get("reason")) for r in results] == [("credited", None), ("rejected", "overlapping_trip")]
    resident_id = (await api.get("/v1/me", headers=resident)).json()["id"]

    page = (await api.get(f"/v1/operator/residents/{resident_id}", headers=auditor)).json()
    grams, points = results[0]["grams_co2e"], results[0]["points"]
    assert page["balances"]["points_available"] == points and page["balances"]["co2e_avoided_g"] == grams
    assert [link["partner_account_ref"] for link in page["links"]] == [ref]
    assert {a["id"] for a in page["recent_actions"]} == {r["action_id"] for r in results}
    assert (await api.get(f"/v1/operator/residents/{uuid.uuid4()}", headers=auditor)).status_code == 404

    listed = await api.get(
        "/v1/operator/actions", params={"resident": resident_id, "status": "credited"}, headers=auditor
    )
    assert [a["action"]["id"] for a in listed.json()["items"]] == [results[0]["action_id"]]
    rejected = await api.get(
        "/v1/operator/actions", params={"resident": resident_id, "reason": results[1]["reason"]}, headers=auditor
    )
    assert [a["action"]["id"] for a in rejected.json()["items"]] == [results[1]["action_id"]]

    trail = (await api.get(f"/v1/operator/actions/{results[0]['action_id']}", headers=auditor)).json()
    assert trail["record"]["external_id"] == records[0]["external_id"]
    assert trail["rules"] and all(r["outcome"] for r in trail["rules"])
    methodology = trail["methodology"]
    assert methodology["version"] >= 1 and methodology["category"] == "metro" and methodology["sources"]
    assert {(t["ledger"], t["amount"]) for t in trail["transfers"]} == {("co2e_g", grams), ("points", points)}
    for _ in range(300):  # positions once sealed, proof links once a checkpoint covers them
        if all(t["inclusion_proof"] for t in trail["transfers"]):
            break
        await asyncio.sleep(0.1)
        trail = (await api.get(f"/v1/operator/actions/{results[0]['action_id']}", headers=auditor)).json()
    for t in trail["transfers"]:
        assert t["log_position"] is not None
        proof = await api.get(t["inclusion_proof"], headers=auditor)
        assert proof.status_code == 200 and proof.json()["leaf_index"] == t["log_position"]


async def test_a_verification_job_names_the_first_bad_position(
    server_url: str, sms_gateway: SmsGatewaySimulator, city_idp: CityIdpSimulator
) -> None:
    async with scratch_database(server_url) as url:
        settings = identity_settings(sms_gateway, city_idp, checkpoint_interval_s=0.2, seal_poll_interval_s=0.05)
        async with AsyncTestClient(app=create_app(settings, url)) as client, open_ledger(url) as ledger:
            auditor = bearer(await sign_in_operator(client, url, "auditor"))
            issuance, account = await make_issuance(ledger), await make_account(ledger)
            written = await ledger.create_transfers([transfer(issuance, account, 10 + i) for i in range(6)])
            await until_sealed(client, auditor, account, 6)
            listed = await client.get(
                "/v1/operator/ledger/transfers", params={"account_id": str(account), "order": "asc"}, headers=auditor
            )
            victim = listed.json()["items"][3]
            assert victim["id"] in {str(o.id) for o in written}
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(UNLOCK)
                await conn.execute(
                    "UPDATE ledger_transfers SET amount = amount + 1 WHERE id = $1", uuid.UUID(victim["id"])
                )
                await conn.execute(RELOCK)
            finally:
                await conn.close()
            job_id = (await client.post("/v1/operator/ledger/verify", headers=auditor)).json()["id"]
            for _ in range(1200):
                job = (await client.get(f"/v1/operator/jobs/{job_id}", headers=auditor)).json()
                if job["status"] in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.05)
            assert job["status"] == "succeeded", job
            assert job["result"]["ok"] is False
            assert job["result"]["first_bad_position"] == victim["log_position"]
            assert any(p["position"] == victim["log_position"] for p in job["result"]["problems"])


async def test_long_reads_are_limited_per_worker_and_their_slots_come_back(
    api: AsyncTestClient, auditor: dict[str, str], ledger: Ledger
) -> None:
    reader: LogReader = api.app.state.log_reader
    held = []
    with contextlib.suppress(LongReadsBusy):
        while True:
            held.append(reader.reserve())
    assert held, "the worker had no free slot"
    try:
        for response in (
            await api.get("/v1/operator/ledger/export", headers=auditor),
            await api.post("/v1/operator/ledger/verify", headers=auditor),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "long_reads_busy" and response.headers["retry-after"]
    finally:
        for slot in held:
            slot.release()
            slot.release()  # a second release gives nothing back twice
    assert (await api.get("/v1/operator/ledger/export", params={"format": "csv"}, headers=auditor)).status_code == 200

    # A stream closed early (the client went away) gives its slot back too.
    own = LogReader(ledger.pool, LOG_ORIGIN, long_reads=1)
    stream = own.export(own.reserve())
    await anext(stream)
    with pytest.raises(LongReadsBusy):
        own.reserve()
    await stream.aclose()
    own.reserve().release()
