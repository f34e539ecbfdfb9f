"""Ingestion throughput against the running service, with the transit simulator, and its baseline.

Starts, in a temporary directory, ``carbon-rewards serve`` on its embedded PostgreSQL (or on
``DATABASE_URL``), the transit partner simulator (``carbon-rewards simulate transit``) and, as the
baseline, Litestar's hello world served the same way (``bench/hello_app.py``), both from ``--workers``
processes (default: one per core; the lean client below needs little). Then it signs in 32
residents, links their accounts at the simulator, and measures with 32 concurrent connections of a
lean HTTP/1.1 client (``bench/http_load.py``; httpx itself saturated a core at ~400 requests/s, which
made the hello-world baseline a measure of the client):

* hello world: requests/s (the baseline);
* pushed batches of 500 records (4 concurrent pushers, each for its own 8 residents): records/s;
* single-record pushes from 32 connections: records/s, p50/p99 latency;
* single claims from 32 residents (each fetches the record from the simulator): claims/s, p50/p99.

Goals (issue 21): single pushes ≥ 0.20× hello world with p99 < 50 ms; claims ≥ 0.10× hello world
with p99 < 100 ms; batches of 500 ≥ 2× hello world's requests/s in records/s. The peak resident
memory of each service worker is printed for each load. Every rate is also given per running second
(the wall time minus the time the machine stood still, see ``bench/freeze_probe.py``). Everything
started is stopped at the end, also on failure or Ctrl-C. ``--only`` runs some of the measurements
(for profiling one load with py-spy).

    python bench/ingest.py [--seconds 10] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.freeze_probe import THRESHOLD_S, FreezeProbe  # noqa: E402
from bench.http_load import TRANSPORT_ERRORS, Connection, Response  # noqa: E402
from bench.ledger_throughput import Measured  # noqa: E402
from domain.signatures import SIGNATURE_HEADER, sign  # noqa: E402
from integrations.simulators.sms_gateway import SmsGatewaySimulator  # noqa: E402

PUSH_PATH = "/v1/partner/actions:batch"
RESIDENTS = 32
BATCH_PUSHERS = 4
ACCOUNTS_PER_RESIDENT = 8
PASSWORD = "bench-operator-password"
#: Outcomes that count as work done (a rejected record went through the same path: "rejected:<reason>").
DONE = ("ok", "credited", "pending_review", "rejected:")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, interrupted (then killed) on exit whatever happens."""
    with log.open("wb") as out:
        # A session of its own, so that its worker processes can be killed with it if it does not stop.
        child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        try:
            yield child
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
                try:
                    child.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()


def add_operator(cli: list[str], data: list[str], env: dict[str, str], role: str) -> None:
    """Create the ``bench`` operator (password ``PASSWORD`` from ``env``) on the running service's database:
    only ``serve`` creates a database, so operators are added once it runs."""
    command = [*cli, "operator", "create", "--username", "bench", "--role", role, *data]
    subprocess.run(command, env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def stop_on_sigterm() -> None:
    """``kill`` (SIGTERM) ends a benchmark like Ctrl-C: through its ``finally`` blocks, which stop what it started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def wait_http(url: str, seconds: float, child: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"{child.args} exited early:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.5)
    raise SystemExit(f"{url} did not come up in {seconds} s:\n{log.read_text()[-3000:]}")


@dataclass
class Timed(Measured):
    """Measured work plus each request's latency and how the requests ended."""

    latencies: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    #: Peak resident memory of each watched service worker during the measurement (MB).
    peak_mb: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(p) - 1] * 1000


def service_workers(root: int) -> list[int]:
    """The worker processes of ``carbon-rewards serve`` (pid ``root``): its Python descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                frontier.append(pid)
                with contextlib.suppress(OSError):
                    if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        found.append(pid)
    return sorted(found) or [root]


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run_for(
    seconds: float,
    workers: int,
    work: Callable[[int], Awaitable[dict[str, int]]],
    probe: FreezeProbe,
    watched: list[int] | None = None,
) -> Timed:
    """``workers`` loops of ``work(worker)`` for ``seconds``; work returns how many records ended how.

    A unit is a request answered (hello world) or a record the service decided (credited, held, or
    rejected by a rule: the same path); duplicates and HTTP errors are shown but not counted.
    """
    measured = Timed()
    deadline = time.monotonic() + seconds

    async def loop(worker: int) -> None:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                outcomes = await work(worker)
            except TRANSPORT_ERRORS as exc:
                outcomes = {f"transport error {type(exc).__name__}": 1}
            measured.latencies.append(time.perf_counter() - began)
            for outcome, count in outcomes.items():
                measured.outcomes[outcome] = measured.outcomes.get(outcome, 0) + count
                if outcome.startswith(DONE):
                    measured.units += count

    async def sample_memory() -> None:
        while True:
            measured.peak_mb = [max(a, rss_mb(pid)) for a, pid in zip(measured.peak_mb, watched or [], strict=True)]
            await asyncio.sleep(0.1)

    measured.peak_mb = [0.0] * len(watched or [])
    sampler = asyncio.create_task(sample_memory())
    start = time.monotonic()
    try:
        await asyncio.gather(*(loop(w) for w in range(workers)))
    finally:
        sampler.cancel()
    end = time.monotonic()
    await asyncio.sleep(2 * THRESHOLD_S)
    measured.wall, measured.frozen = end - start, probe.frozen_between(start, end)
    return measured


class Trips:
    """Plausible metro trips that never overlap another trip of the same resident (whichever card).

    Each resident's trips (2.5 minutes, 1–3 km) follow one another in 3-minute slots from 12 days
    ago, round robin over residents and over each resident's cards: about 5,700 trips per resident
    before they would reach the present and be refused as in the future. That is room for about
    15 s at 6,000 records/s even when one pusher is served faster than the others (each worker
    process of the service takes whichever connections it accepts, not an even share). The
    simulator's records for the accounts kept for claims lie before that: from 20 days ago, about
    200 of them (--claims-per-resident) before 13 days ago.
    ``next(lane, lanes)`` deals residents to lanes (resident i to lane i mod lanes), so that
    concurrent pushers in different lanes never name the same resident.
    """

    def __init__(self, accounts_by_resident: list[list[str]]) -> None:
        start = datetime.now(UTC) - timedelta(days=12)
        self.accounts = accounts_by_resident
        self.cursor = [start + timedelta(seconds=random.randint(0, 600)) for _ in accounts_by_resident]
        self.turns: dict[tuple[int, int], int] = {}

    def next(self, lane: int = 0, lanes: int = 1) -> dict[str, Any]:
        members = range(lane, len(self.accounts), lanes)
        turn = self.turns.get((lane, lanes), 0)
        self.turns[(lane, lanes)] = turn + 1
        resident = members[turn % len(members)]
        account = self.accounts[resident][(turn // len(members)) % len(self.accounts[resident])]
        started = self.cursor[resident]
        self.cursor[resident] = started + timedelta(minutes=3)
        return {
            "external_id": uuid.uuid4().hex,
            "account_ref": account,
            "mode": "metro",
            "started_at": started.isoformat(),
            "ended_at": (started + timedelta(seconds=150)).isoformat(),
            "distance_m": random.randint(1_000, 3_000),
        }


def signed(secret: str, records: list[dict[str, Any]], token: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"records": records}, separators=(",", ":")).encode()
    return body, {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
        SIGNATURE_HEADER: sign(secret, int(time.time()), "POST", PUSH_PATH, body),
    }


async def setup(service: str, sim: str, sms: SmsGatewaySimulator, secret: str, partner_id: str) -> dict[str, Any]:
    """Residents signed in, each with accounts linked at the simulator (one kept for claims)."""
    import re

    async with (
        httpx.AsyncClient(base_url=service, timeout=60) as client,
        httpx.AsyncClient(base_url=sim, timeout=60) as partner,
    ):

        async def resident(i: int) -> dict[str, Any]:
            phone = f"+86138{random.randrange(10**8):08d}"
            (await client.post("/v1/auth/otp", json={"phone": phone})).raise_for_status()
            code = re.search(r"\b(\d{6})\b", sms.messages_to(phone)[-1]).group(1)  # type: ignore[union-attr]
            tokens = (await client.post("/v1/auth/otp/verify", json={"phone": phone, "code": code})).json()
            headers = {"Authorization": f"Bearer {tokens['access_token']}"}
            refs = []
            for _ in range(ACCOUNTS_PER_RESIDENT + 1):
                ref = (await partner.post("/accounts")).json()["account_ref"]
                link_code = (await partner.post(f"/accounts/{ref}/link-code")).json()["code"]
                linked = await client.post(
                    "/v1/me/links",
                    json={"partner_id": partner_id, "partner_account_ref": ref, "link_code": link_code},
                    headers=headers,
                )
                linked.raise_for_status()
                refs.append(ref)
            return {"headers": headers, "push_accounts": refs[:-1], "claim_account": refs[-1]}

        residents = []
        for batch in range(0, RESIDENTS, 8):
            residents += await asyncio.gather(*(resident(i) for i in range(batch, min(batch + 8, RESIDENTS))))
        return {"residents": residents}


async def claimable(sim: str, residents: list[dict[str, Any]], per_resident: int) -> list[list[str]]:
    """Records the simulator holds but nobody pushed: what the residents will claim."""

    async def make(r: dict[str, Any]) -> list[str]:
        partner = Connection(sim)
        try:
            return [
                (await partner.request("POST", f"/accounts/{r['claim_account']}/records")).json()["external_id"]
                for _ in range(per_resident)
            ]
        finally:
            await partner.close()

    return list(await asyncio.gather(*(make(r) for r in residents)))


def report(name: str, m: Timed, unit: str, baseline: Timed | None = None) -> None:
    ratio = f"  = {m.rate / baseline.rate:.2f}× hello world" if baseline else ""
    running_ratio = f" ({m.running_rate / baseline.running_rate:.2f}×)" if baseline else ""
    print(
        f"{name:<34} {m.rate:>9,.0f} {unit}/s{ratio}   per running s: {m.running_rate:,.0f}{running_ratio}   "
        f"p50 {m.percentile(50):.1f} ms  p99 {m.percentile(99):.1f} ms   "
        f"frozen {m.frozen / m.wall:.0%}   {m.outcomes}"
        + (f"   peak RSS per worker: {', '.join(f'{mb:.0f} MB' for mb in m.peak_mb)}" if m.peak_mb else ""),
        flush=True,
    )


async def sealed(service: str, limit_s: float = 300) -> float:
    """Wait until the sealer has put every committed transfer in the Merkle log; returns the seconds it took.

    Each load starts from a sealed log: otherwise the sealing of one load's transfers (done by the same
    worker processes) would be counted against the next.
    """
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=service, timeout=10) as client:
        while time.monotonic() - started < limit_s:
            text = (await client.get("/metrics")).text
            lag = next(
                (float(line.split()[1]) for line in text.splitlines() if line.startswith("carbon_ledger_sealer_lag")),
                None,
            )
            if lag == 0:
                break
            await asyncio.sleep(0.5)
    return time.monotonic() - started


async def measure(
    args: argparse.Namespace, service: str, hello: str, sim: str, state: dict[str, Any], service_pid: int
) -> None:
    secret, token, residents = state["secret"], state["token"], state["residents"]
    workers = service_workers(service_pid)
    trips = Trips([r["push_accounts"] for r in residents])
    probe = await FreezeProbe.start()
    to_hello = [Connection(hello) for _ in range(RESIDENTS)]
    to_service = [Connection(service) for _ in range(RESIDENTS)]
    try:

        async def hello_world(worker: int) -> dict[str, int]:
            response = await to_hello[worker].request("GET", "/hello")
            return {"ok" if response.status == 200 else str(response.status): 1}

        await run_for(2, RESIDENTS, hello_world, probe)  # warm-up
        baseline = await run_for(args.seconds, RESIDENTS, hello_world, probe)
        report("hello world (32 connections)", baseline, "req")

        def outcome(response: Response) -> dict[str, int]:
            if response.status != 200:
                return {f"http {response.status}: {response.text[:60]}": 1}
            body = response.json()
            counts: dict[str, int] = {}
            for result in body.get("results", [body]):
                key = result["outcome"] if result["outcome"] != "rejected" else f"rejected:{result['reason']}"
                counts[key] = counts.get(key, 0) + 1
            return counts

        async def push(worker: int, records: list[dict[str, Any]]) -> dict[str, int]:
            body, headers = signed(secret, records, token)
            return outcome(await to_service[worker].request("POST", PUSH_PATH, headers, body))

        async def batch(worker: int) -> dict[str, int]:
            # Each pusher has its own quarter of the residents: a city's concurrent batches rarely name
            # one rider twice, and every batch naming all 32 would only measure the per-resident lock.
            return await push(worker, [trips.next(worker, BATCH_PUSHERS) for _ in range(args.batch)])

        async def single(worker: int) -> dict[str, int]:
            return await push(worker, [trips.next()])

        queues = await claimable(sim, residents, args.claims_per_resident)

        async def claim(worker: int) -> dict[str, int]:
            if not queues[worker]:
                await asyncio.sleep(0.01)
                return {"ran out of prepared records": 1}
            external_id = queues[worker].pop()
            body = json.dumps({"partner_id": state["partner_id"], "external_id": external_id}).encode()
            headers = {"Content-Type": "application/json", **residents[worker]["headers"]}
            return outcome(await to_service[worker].request("POST", "/v1/me/actions/claims", headers, body))

        # Single records first: the batches write ~1,000 trips per resident in seconds (a city's resident
        # rides ~100 a month), and deciding a record reads its resident's month (caps, overlaps).
        if "singles" in args.only:
            await sealed(service)
            await run_for(2, RESIDENTS, single, probe)  # warm-up: every pooled connection opened and prepared
            print("measuring single-record pushes…", flush=True)
            report(
                "single-record pushes (32 conns)",
                await run_for(args.seconds, RESIDENTS, single, probe, workers),
                "record",
                baseline,
            )
        if "claims" in args.only:
            await sealed(service)
            print("measuring single claims…", flush=True)
            report(
                "single claims (32 residents)",
                await run_for(args.seconds, RESIDENTS, claim, probe, workers),
                "claim",
                baseline,
            )
        if "batches" in args.only:
            await sealed(service)
            print("measuring pushed batches…", flush=True)
            await run_for(2, BATCH_PUSHERS, batch, probe)  # warm-up
            report(
                f"pushed batches of {args.batch} ({BATCH_PUSHERS} pushers)",
                await run_for(args.seconds, BATCH_PUSHERS, batch, probe, workers),
                "record",
            )
    finally:
        for connection in to_hello + to_service:
            await connection.close()
        await probe.stop()


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--claims-per-resident", type=int, default=200)
    parser.add_argument(
        "--only", default="batches,singles,claims", help="which measurements to run (comma-separated; for profiling)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes of the service and of hello world alike (default: one per core)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="carbon-bench-") as tmp, SmsGatewaySimulator() as sms:
        work = Path(tmp)
        service_port, hello_port, sim_port = free_port(), free_port(), free_port()
        service, hello, sim = (f"http://127.0.0.1:{p}" for p in (service_port, hello_port, sim_port))
        env = {
            **os.environ,
            "CARBON_LOG_LEVEL": "WARNING",
            "CARBON_SMS_GATEWAY_URL": sms.send_url,
            "CARBON_OTP_LIMIT_PER_IP": "1000000",
            "CARBON_ANOMALY_FLOOR_PER_HOUR": "1000000000",
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
            ) as hp,
        ):
            wait_http(f"{service}/health/ready", 180, service_proc, work / "service.log")
            wait_http(f"{hello}/hello", 60, hp, work / "hello.log")
            add_operator(cli, data, env, "admin")
            with httpx.Client(base_url=service, timeout=60) as client:
                login = client.post("/v1/auth/operator/login", json={"username": "bench", "password": PASSWORD})
                login.raise_for_status()
                admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
                created = client.post(
                    "/v1/operator/partners",
                    json={"name": "bench metro", "kind": "transit", "api_base_url": sim},
                    headers=admin,
                )
                created.raise_for_status()
                credentials = created.json()["credentials"]
                token = client.post(
                    "/v1/auth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": credentials["client_id"],
                        "client_secret": credentials["client_secret"],
                    },
                ).json()["access_token"]
            sim_env = {**env, "CARBON_SIM_WEBHOOK_SECRET": credentials["webhook_secret"]}
            with process(
                [*cli, "simulate", "transit", "--port", str(sim_port), "--accounts", "0"],
                sim_env,
                work / "simulator.log",
            ) as sp:
                wait_http(f"{sim}/health", 60, sp, work / "simulator.log")
                print("signing in 32 residents and linking their accounts…", flush=True)
                state = asyncio.run(
                    setup(service, sim, sms, credentials["webhook_secret"], created.json()["partner"]["id"])
                )
                state |= {
                    "secret": credentials["webhook_secret"],
                    "token": token,
                    "partner_id": created.json()["partner"]["id"],
                }
                asyncio.run(measure(args, service, hello, sim, state, service_proc.pid))


if __name__ == "__main__":
    main()
