"""Redemption throughput against the running service, beside Litestar's hello world in the same run.

Starts, in a temporary directory, ``carbon-rewards serve`` on its embedded PostgreSQL (or on
``DATABASE_URL``) and the hello world (``bench/hello_app.py``), both from ``--workers`` processes.
Registers 32 merchants, each with an offer of unlimited stock, and 32 residents, each given points
straight through the ledger (the benchmark reaches inside: earning points is ``bench/ingest.py``'s
subject). Then 32 concurrent loops, one per merchant and resident, each on its own lean keep-alive
connections (``bench/http_load.py``), repeat a whole redemption: the resident redeems (a ledger hold
and a code), the merchant captures the code (the hold posted). It prints:

* hello world: requests/s (the baseline);
* captures/s (each one a hold and a capture: two requests, two transactions), and the ratio to hello
  world's requests/s;
* hold→capture latency, p50 and p99: from sending the redemption to the capture's answer.

Everything started is stopped at the end, also on failure or Ctrl-C.

    python bench/redemption.py [--seconds 10] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.freeze_probe import FreezeProbe  # noqa: E402
from bench.http_load import Connection  # noqa: E402
from bench.ingest import PASSWORD, add_operator, Timed, free_port, process, report, run_for, stop_on_sigterm, wait_http  # noqa: E402
from integrations.simulators.sms_gateway import SmsGatewaySimulator  # noqa: E402
from ledger import ISSUANCE_POINTS, Ledger, LedgerUnit, NewTransfer, TransferCode, resident_points_account  # noqa: E402

PAIRS = 32
POINTS_EACH = 10_000_000


async def setup(service: str, sms: SmsGatewaySimulator, database_url: str) -> list[dict[str, Any]]:
    """32 (merchant, offer, resident) triples, the residents given points through the ledger."""
    import re

    async with httpx.AsyncClient(base_url=service, timeout=60) as client:
        login = await client.post("/v1/auth/operator/login", json={"username": "bench", "password": PASSWORD})
        login.raise_for_status()
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}

        async def pair(i: int) -> dict[str, Any]:
            created = await client.post("/v1/operator/merchants", json={"name": f"bench shop {i}"}, headers=admin)
            created.raise_for_status()
            credentials = created.json()["credentials"]
            token = await client.post(
                "/v1/auth/token",
                data={
                    "grant_type": "client_credentials",
                    **{k: credentials[k] for k in ("client_id", "client_secret")},
                },
            )
            merchant = {"Authorization": f"Bearer {token.json()['access_token']}"}
            offer = await client.post(
                "/v1/merchant/offers", json={"title": f"coffee {i}", "points_price": 1}, headers=merchant
            )
            offer.raise_for_status()
            phone = f"+86137{i:08d}"
            (await client.post("/v1/auth/otp", json={"phone": phone})).raise_for_status()
            code = re.search(r"\b(\d{6})\b", sms.messages_to(phone)[-1]).group(1)  # type: ignore[union-attr]
            tokens = (await client.post("/v1/auth/otp/verify", json={"phone": phone, "code": code})).json()
            resident = {"Authorization": f"Bearer {tokens['access_token']}"}
            resident_id = uuid.UUID((await client.get("/v1/me", headers=resident)).json()["id"])
            return {"merchant": merchant, "resident": resident, "resident_id": resident_id, "offer": offer.json()["id"]}

        pairs = list(await asyncio.gather(*(pair(i) for i in range(PAIRS))))
    ledger = await Ledger.open(database_url, role=None, pool_size=2)
    try:
        accounts = [resident_points_account(p["resident_id"]) for p in pairs]
        await ledger.create_accounts([ISSUANCE_POINTS, *accounts])
        outcomes = await ledger.create_transfers(
            [
                NewTransfer(
                    uuid.uuid4(), ISSUANCE_POINTS.id, a.id, POINTS_EACH, LedgerUnit.POINTS, TransferCode.ADJUSTMENT
                )
                for a in accounts
            ]
        )
        assert all(o.applied for o in outcomes), outcomes
    finally:
        await ledger.close()
    return pairs


async def measure(args: argparse.Namespace, service: str, hello: str, pairs: list[dict[str, Any]]) -> None:
    probe = await FreezeProbe.start()
    to_hello = [Connection(hello) for _ in range(PAIRS)]
    residents = [Connection(service) for _ in range(PAIRS)]
    merchants = [Connection(service) for _ in range(PAIRS)]
    try:

        async def hello_world(worker: int) -> dict[str, int]:
            response = await to_hello[worker].request("GET", "/hello")
            return {"ok" if response.status == 200 else str(response.status): 1}

        await run_for(2, PAIRS, hello_world, probe)
        baseline = await run_for(args.seconds, PAIRS, hello_world, probe)
        report("hello world (32 connections)", baseline, "req")

        async def redeem_and_capture(worker: int) -> dict[str, int]:
            pair = pairs[worker]
            body = json.dumps({"offer_id": pair["offer"]}).encode()
            headers = {"Content-Type": "application/json", **pair["resident"]}
            held = await residents[worker].request("POST", "/v1/me/redemptions", headers, body)
            if held.status != 201:
                return {f"redeem http {held.status}: {held.text[:60]}": 1}
            capture = json.dumps({"code": held.json()["code"]}).encode()
            headers = {"Content-Type": "application/json", **pair["merchant"]}
            captured = await merchants[worker].request("POST", "/v1/merchant/redemptions:capture", headers, capture)
            if captured.status != 200:
                return {f"capture http {captured.status}: {captured.text[:60]}": 1}
            return {"ok": 1}

        await run_for(2, PAIRS, redeem_and_capture, probe)  # warm-up: every pooled connection opened and prepared
        measured: Timed = await run_for(args.seconds, PAIRS, redeem_and_capture, probe)
        report("hold + capture (32 merchants)", measured, "capture", baseline)
    finally:
        for connection in to_hello + residents + merchants:
            await connection.close()
        await probe.stop()


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes of the service and of hello world"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="carbon-bench-") as tmp, SmsGatewaySimulator() as sms:
        work = Path(tmp)
        service_port, hello_port = free_port(), free_port()
        service, hello = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{hello_port}"
        env = {
            **os.environ,
            "CARBON_LOG_LEVEL": "WARNING",
            "CARBON_SMS_GATEWAY_URL": sms.send_url,
            "CARBON_OTP_LIMIT_PER_IP": "1000000",
            "CARBON_DB_POOL_SIZE": "20",
            "CARBON_OPERATOR_PASSWORD": PASSWORD,
        }
        cli = [sys.executable, "-m", "api.cli"]
        data = ["--data-dir", str(work / "data")]
        with (
            process(
                [*cli, "serve", "--port", str(service_port), "--workers", str(args.workers), *data],
                env,
                work / "service.log",
            ) as service_proc,
            process(
                [sys.executable, "bench/hello_app.py", "--port", str(hello_port), "--workers", str(args.workers)],
                env,
                work / "hello.log",
            ) as hello_proc,
        ):
            wait_http(f"{service}/health/ready", 180, service_proc, work / "service.log")
            wait_http(f"{hello}/hello", 60, hello_proc, work / "hello.log")
            add_operator(cli, data, env, "admin")
            database_url = subprocess.run(
                [*cli, "db-url", *data], env=env, check=True, cwd=ROOT, capture_output=True, text=True
            ).stdout.splitlines()[-1]
            print("registering 32 merchants and offers, and 32 residents with points…", flush=True)
            pairs = asyncio.run(setup(service, sms, database_url))
            started = time.monotonic()
            asyncio.run(measure(args, service, hello, pairs))
            print(f"(measured in {time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
