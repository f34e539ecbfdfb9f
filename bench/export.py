"""Exporting the whole ledger over the API: transfers/s and the service's memory, beside PostgreSQL's own
``COPY`` of the same rows in the same run.

Starts, in a temporary directory, ``carbon-rewards serve`` (one process) on its embedded PostgreSQL (or
on ``DATABASE_URL``), writes ``--transfers`` transfers (1,000,000 by default) through the ledger's group
commit from this process, and waits until the service's sealer has put them all in the Merkle log under
a signed checkpoint. Then, one after the other:

* baseline: ``COPY (SELECT … FROM ledger_log JOIN ledger_transfers ORDER BY position) TO STDOUT``,
  the same rows the export reads, straight from PostgreSQL into this process: rows/s;
* ``GET /v1/operator/ledger/export`` as an auditor, the whole log as JSON Lines: transfers/s, the
  ratio to the baseline, MB/s; the service process's resident memory is sampled every 20 ms meanwhile,
  and its peak printed beside its size just before the export;
* the same export restricted (``from``) to the last tenth of the transfers: the memory it takes, to
  compare with the whole log's (constant memory means about the same).

The downloaded file is checked as ``carbon-rewards ledger verify --export`` would (``--verify``; it
takes a while for a million leaves). Everything started is stopped at the end, also on failure.

    python bench/export.py [--transfers 1000000] [--verify]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import PASSWORD, add_operator, free_port, process, stop_on_sigterm, wait_http  # noqa: E402
from ledger import (  # noqa: E402
    ISSUANCE_POINTS,
    Ledger,
    LedgerUnit,
    NewTransfer,
    TransferCode,
    read_export,
    resident_points_account,
    verify_log,
)

BATCH = 2000
WRITERS = 4
ACCOUNTS = 1000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class PeakMemory:
    """Samples a process's resident set every 20 ms in a thread, keeping the largest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_kib(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))


async def load(database_url: str, count: int) -> None:
    """``count`` transfers from issuance to ``ACCOUNTS`` residents, in batches, from ``WRITERS`` tasks."""
    ledger = await Ledger.open(database_url, role="carbon_app", pool_size=WRITERS + 2, max_batch=BATCH, writers=2)
    try:
        accounts = [resident_points_account(uuid.uuid4()) for _ in range(ACCOUNTS)]
        await ledger.create_accounts([ISSUANCE_POINTS, *accounts])
        remaining = count
        started = time.monotonic()

        async def writer() -> None:
            nonlocal remaining
            while remaining > 0:
                size = min(BATCH, remaining)
                remaining -= size
                batch = [
                    NewTransfer(
                        uuid.uuid4(),
                        ISSUANCE_POINTS.id,
                        accounts[i % ACCOUNTS].id,
                        1 + i % 97,
                        LedgerUnit.POINTS,
                        TransferCode.ACTION_CREDIT,
                        reference=f"bench:{i}",
                    )
                    for i in range(size)
                ]
                outcomes = await ledger.create_transfers(batch)
                assert all(o.applied for o in outcomes), next(o for o in outcomes if not o.applied)

        async def progress() -> None:
            while remaining > 0:
                await asyncio.sleep(10)
                print(f"  … {count - max(remaining, 0):,} written", flush=True)

        reporter = asyncio.create_task(progress())
        await asyncio.gather(*(writer() for _ in range(WRITERS)))
        reporter.cancel()
        print(f"wrote {count:,} transfers in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        await ledger.close()


async def sealed(service: str, count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=service, timeout=30) as client:
        while time.monotonic() < deadline:
            latest = await client.get("/v1/ledger/checkpoints/latest")
            if latest.status_code == 200 and latest.json()["tree_size"] >= count:
                return
            await asyncio.sleep(1)
    raise SystemExit(f"the log did not reach {count} leaves under a checkpoint in {seconds} s")


async def copy_baseline(database_url: str) -> tuple[int, float]:
    """Rows and seconds of PostgreSQL's COPY of the rows the export reads, into this process."""
    conn = await asyncpg.connect(database_url)
    rows = 0

    async def sink(chunk: bytes) -> None:
        nonlocal rows
        rows += chunk.count(b"\n")

    try:
        started = time.perf_counter()
        await conn.copy_from_query(
            "SELECT l.position, l.leaf_hash, t.* FROM ledger_log AS l "
            "JOIN ledger_transfers AS t ON t.id = l.transfer_id ORDER BY l.position",
            output=sink,
        )
        return rows, time.perf_counter() - started
    finally:
        await conn.close()


async def first_timestamp_of_last_tenth(database_url: str, count: int) -> datetime:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(  # type: ignore[no-any-return]
            "SELECT t.timestamp FROM ledger_log AS l JOIN ledger_transfers AS t ON t.id = l.transfer_id "
            "WHERE l.position = $1",
            count - count // 10,
        )
    finally:
        await conn.close()


async def export(
    service: str, token: str, pid: int, target: Path, params: dict[str, str]
) -> tuple[int, int, float, PeakMemory]:
    """Leaves, bytes and seconds of one export, with the service's memory meanwhile."""
    size = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=service, timeout=600) as client:
        with PeakMemory(pid) as memory, target.open("wb") as out:
            started = time.perf_counter()
            async with client.stream("GET", "/v1/operator/ledger/export", params=params, headers=headers) as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    size += len(chunk)
            seconds = time.perf_counter() - started
    with target.open("rb") as exported:
        leaves = sum(line.startswith(b'{"type":"leaf"') for line in exported)
    return leaves, size, seconds, memory


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=1_000_000)
    parser.add_argument("--verify", action="store_true", help="verify the exported file offline")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="carbon-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        service = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "CARBON_LOG_LEVEL": "WARNING",
            "CARBON_OPERATOR_PASSWORD": PASSWORD,
            "CARBON_CHECKPOINT_INTERVAL_S": "1",
        }
        cli = [sys.executable, "-m", "api.cli"]
        data = ["--data-dir", str(work / "data")]
        with process([*cli, "serve", "--port", str(port), "--workers", "1", *data], env, work / "service.log") as child:
            wait_http(f"{service}/health/ready", 180, child, work / "service.log")
            add_operator(cli, data, env, "auditor")
            database_url = subprocess.run(
                [*cli, "db-url", *data], env=env, check=True, cwd=ROOT, capture_output=True, text=True
            ).stdout.splitlines()[-1]
            print(f"writing {args.transfers:,} transfers through the ledger…", flush=True)
            asyncio.run(load(database_url, args.transfers))
            started = time.monotonic()
            asyncio.run(sealed(service, args.transfers, 3600))
            print(f"sealed and checkpointed {time.monotonic() - started:.0f} s after the last write", flush=True)
            token = httpx.post(
                f"{service}/v1/auth/operator/login", json={"username": "bench", "password": PASSWORD}, timeout=30
            ).json()["access_token"]

            rows, copy_s = asyncio.run(copy_baseline(database_url))
            print(
                f"baseline  COPY of the log's rows:   {rows / copy_s:>10,.0f} rows/s ({rows:,} rows in {copy_s:.1f} s)"
            )
            whole = work / "ledger.jsonl"
            leaves, size, seconds, memory = asyncio.run(export(service, token, child.pid, whole, {}))
            rate = leaves / seconds
            print(
                f"export    whole log as JSON Lines:  {rate:>10,.0f} transfers/s = {rate / (rows / copy_s):.2f}× COPY "
                f"({leaves:,} leaves, {size / 1e6:,.0f} MB in {seconds:.1f} s, {size / 1e6 / seconds:.1f} MB/s)"
            )
            print(
                f"          service memory: {memory.before / 1024:,.0f} MiB before, peak {memory.peak / 1024:,.0f} MiB "
                f"(+{(memory.peak - memory.before) / 1024:,.1f} MiB for a {size / 1e6:,.0f} MB answer)"
            )
            since = asyncio.run(first_timestamp_of_last_tenth(database_url, args.transfers))
            part = work / "tenth.jsonl"
            tenth_leaves, tenth_size, _, tenth_memory = asyncio.run(
                export(service, token, child.pid, part, {"from": since.isoformat()})
            )
            print(
                f"export    last tenth ({tenth_leaves:,} leaves, {tenth_size / 1e6:,.0f} MB): service memory "
                f"+{(tenth_memory.peak - tenth_memory.before) / 1024:,.1f} MiB"
            )
            if args.verify:
                started = time.monotonic()
                exported = read_export(whole)
                report = verify_log(exported.records(), exported.checkpoints, exported.keys, exported.origin)
                print(
                    f"verified offline in {time.monotonic() - started:.0f} s: ok={report.ok}, {report.tree_size:,} leaves"
                )
                if not report.ok:
                    raise SystemExit(f"the export does not verify: {report.problems[:3]}")


if __name__ == "__main__":
    main()
