"""Ledger write throughput against a baseline measured on the same server in the same run.

    python bench/ledger_throughput.py [--seconds 12] [--rounds 4] [--concurrency 32] [--batch 1000]
                                      [--batch-streams 2] [--batch-processes 2] [--writers 2]

Prints transfers per second for
  baseline  single-row INSERT + COMMIT from --concurrency asyncpg connections (autocommit),
  (a)       single-transfer ``Ledger.create_transfers`` calls from --concurrency tasks (group commit),
  (b)       ``Ledger.create_transfers`` with lists of --batch transfers from --batch-streams tasks in
            each of --batch-processes processes (each its own ``Ledger``, as each service process is),
and the ratios of (a) and (b) to the baseline. Every credited transfer touches the one issuance
account (the hot account) and one of 1,000 balance-limited resident accounts. A Python process
turns out to be the limit of (b) long before PostgreSQL is, so (b) runs in as many processes as
the machine has cores by default; with ``--batch-processes 1`` it shows one process alone.

Then the Merkle log: the sealing rate over the backlog that (a) and (b) left (transfers sealed per
second, with its ratio to (b)), and the lag from a transfer's timestamp to the first signed
checkpoint that covers it while (b) runs again with the sealer working alongside (p50, p99, max).

Every rate is printed twice: per wall-clock second, and per second during which the machine ran.
A shared virtual machine is sometimes frozen whole for seconds (CPU steal); ``bench/freeze_probe.py``
records those stalls from a separate idle process, and the second figure leaves them out.

With ``DATABASE_URL`` the server there is used (a scratch database is created and dropped);
otherwise an embedded PostgreSQL is started in a temporary directory and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.database import migrate  # noqa: E402
from bench.freeze_probe import THRESHOLD_S, FreezeProbe  # noqa: E402
from integrations.embedded_postgres import EmbeddedPostgres, drop_database, ensure_database, with_database  # noqa: E402
from ledger.checkpoint import Signer  # noqa: E402
from ledger.ids import uuid7  # noqa: E402
from ledger.sealer import Sealer  # noqa: E402
from ledger.service import Ledger  # noqa: E402
from ledger.types import AccountCode, LedgerUnit, NewAccount, NewTransfer, TransferCode  # noqa: E402

ROLE = "carbon_app"


@dataclass
class Measured:
    """Units of work done over a wall-clock span, of which ``frozen`` seconds the machine stood still."""

    units: float = 0.0
    wall: float = 0.0
    frozen: float = 0.0

    def __add__(self, other: Measured) -> Measured:
        return Measured(self.units + other.units, self.wall + other.wall, self.frozen + other.frozen)

    @property
    def rate(self) -> float:
        return self.units / self.wall

    @property
    def running_rate(self) -> float:
        """Units per second during which the machine ran (wall time minus frozen time)."""
        return self.units / max(self.wall - self.frozen, 1e-9)


async def run_for(
    seconds: float,
    workers: int,
    work: Callable[[], Awaitable[int]],
    probe: FreezeProbe,
    elsewhere: Callable[[float], Awaitable[int]] | None = None,
) -> Measured:
    """Run ``work`` in ``workers`` loops for ``seconds``; returns the units completed and the time taken.

    ``elsewhere`` (other processes doing the same for the same seconds) adds its units, and the span
    ends when it has finished too.
    """
    done = 0
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            units = await work()  # not `done += await …`: that reads `done` before awaiting
            done += units

    start = time.monotonic()
    others = asyncio.ensure_future(elsewhere(seconds)) if elsewhere is not None else None
    await asyncio.gather(*(loop() for _ in range(workers)))
    if others is not None:
        done += await others
    end = time.monotonic()
    await asyncio.sleep(2 * THRESHOLD_S)  # let the probe report a stall that straddles the end
    return Measured(done, end - start, probe.frozen_between(start, end))


class Baseline:
    """Single-row INSERT + COMMIT (autocommit) from a fixed set of connections."""

    def __init__(self, connections: list[asyncpg.Connection]) -> None:
        self.connections = connections
        self.idle: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
        for conn in connections:
            self.idle.put_nowait(conn)

    @classmethod
    async def open(cls, url: str, concurrency: int) -> Baseline:
        admin = await asyncpg.connect(url)
        await admin.execute("CREATE TABLE bench_baseline (id uuid PRIMARY KEY, amount bigint NOT NULL)")
        await admin.close()
        return cls([await asyncpg.connect(url, server_settings={"jit": "off"}) for _ in range(concurrency)])

    async def insert(self) -> int:
        conn = await self.idle.get()
        try:
            await conn.execute("INSERT INTO bench_baseline VALUES ($1, $2)", uuid.uuid4(), 1)
        finally:
            self.idle.put_nowait(conn)
        return 1

    async def close(self) -> None:
        for conn in self.connections:
            await conn.close()


def credit(issuance: uuid.UUID, residents: list[uuid.UUID]) -> NewTransfer:
    return NewTransfer(
        id=uuid7(),
        debit_account_id=issuance,
        credit_account_id=random.choice(residents),
        amount=random.randint(1, 50),
        ledger=LedgerUnit.POINTS,
        code=TransferCode.ACTION_CREDIT,
        reference=f"bench:{random.getrandbits(32)}",
    )


class BatchHelpers:
    """The other processes of (b): each runs --batch-streams batch loops on its own ``Ledger`` when told.

    Started before the first round (their start-up is not measured); each round sends every helper
    the seconds to run, and their counts join the parent's. Stopped, or killed, on the way out.
    """

    def __init__(self, count: int, url: str, args: argparse.Namespace, issuance: uuid.UUID, residents: list[uuid.UUID]):
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_helper_main,
                args=(theirs, url, args.writers, args.batch, args.batch_streams, issuance, residents),
                daemon=True,
            )
            process.start()
            theirs.close()  # so that a helper's end of the pipe closes with it, and recv() here fails, not hangs
            self.pipes.append(ours)
            self.processes.append(process)
        for pipe in self.pipes:  # each answers once its ledger is open
            if pipe.recv() != "ready":
                raise RuntimeError("a batch helper process failed to start")

    async def run_round(self, seconds: float) -> int:
        """Batches written by all helpers in ``seconds``."""
        for pipe in self.pipes:
            pipe.send(seconds)
        return sum([await asyncio.to_thread(pipe.recv) for pipe in self.pipes])

    def close(self) -> None:
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            with contextlib.suppress(OSError):
                pipe.send(None)
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()


def _helper_main(
    pipe: Connection, url: str, writers: int, size: int, streams: int, issuance: uuid.UUID, residents: list[uuid.UUID]
) -> None:
    asyncio.run(_helper(pipe, url, writers, size, streams, issuance, residents))


async def _helper(
    pipe: Connection, url: str, writers: int, size: int, streams: int, issuance: uuid.UUID, residents: list[uuid.UUID]
) -> None:
    ledger = await Ledger.open(url, role=ROLE, pool_size=writers + 2, max_batch=4000, writers=writers)

    async def batches_until(deadline: float) -> int:
        done = 0
        while time.monotonic() < deadline:
            outcomes = await ledger.create_transfers([credit(issuance, residents) for _ in range(size)])
            assert all(o.applied for o in outcomes)
            done += len(outcomes)
        return done

    try:
        pipe.send("ready")
        while (seconds := await asyncio.to_thread(pipe.recv)) is not None:
            deadline = time.monotonic() + seconds
            pipe.send(sum(await asyncio.gather(*(batches_until(deadline) for _ in range(streams)))))
    finally:
        await ledger.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="time per kind of measurement, in total")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds the time is split into")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batch-streams", type=int, default=2, help="batch loops in each process of (b)")
    parser.add_argument(
        "--batch-processes", type=int, default=os.cpu_count() or 1, help="processes of (b), each with its own Ledger"
    )
    parser.add_argument("--writers", type=int, default=2, help="group-commit writer tasks of the ledger")
    args = parser.parse_args()

    embedded = None
    server_url = os.environ.get("DATABASE_URL")
    scratch = tempfile.TemporaryDirectory(prefix="carbon-bench-")
    try:
        if not server_url:
            embedded = EmbeddedPostgres(Path(scratch.name) / "pg", ephemeral=True)
            server_url = await asyncio.to_thread(embedded.start)
        name = f"carbon_bench_{uuid.uuid4().hex[:10]}"
        await ensure_database(server_url, name)
        url = with_database(server_url, name)
        try:
            await migrate(url, ROLE)
            await measure(url, args)
        finally:
            await drop_database(server_url, name)
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        scratch.cleanup()


async def measure(url: str, args: argparse.Namespace) -> None:
    slice_s = args.seconds / args.rounds
    print(f"server: {'embedded PostgreSQL' if 'DATABASE_URL' not in os.environ else 'DATABASE_URL'}; "
          f"{os.cpu_count()} CPUs; {args.rounds} rounds of baseline, (a), (b) for {slice_s:g} s each, interleaved "
          f"so that the machine's drift affects all three alike; {args.writers} ledger writers per process")
    base_line = await Baseline.open(url, args.concurrency)
    probe = await FreezeProbe.start()
    ledger = await Ledger.open(url, role=ROLE, pool_size=args.writers + 6, max_batch=4000, writers=args.writers)
    helpers: BatchHelpers | None = None
    try:
        issuance = uuid.uuid4()
        residents = [uuid.uuid4() for _ in range(1000)]
        await ledger.create_accounts(
            [NewAccount(issuance, LedgerUnit.POINTS, AccountCode.ISSUANCE)]
            + [
                NewAccount(r, LedgerUnit.POINTS, AccountCode.RESIDENT_POINTS, debits_must_not_exceed_credits=True)
                for r in residents
            ]
        )
        helpers = await asyncio.to_thread(BatchHelpers, args.batch_processes - 1, url, args, issuance, residents)

        async def single() -> int:
            [outcome] = await ledger.create_transfers([credit(issuance, residents)])
            assert outcome.applied, outcome
            return 1

        async def batch() -> int:
            outcomes = await ledger.create_transfers([credit(issuance, residents) for _ in range(args.batch)])
            assert all(o.applied for o in outcomes)
            return len(outcomes)

        measured: dict[str, Measured] = {"base": Measured(), "a": Measured(), "b": Measured()}
        for index in range(args.rounds):
            base_round = await run_for(slice_s, args.concurrency, base_line.insert, probe)
            a_round = await run_for(slice_s, args.concurrency, single, probe)
            b_round = await run_for(slice_s, args.batch_streams, batch, probe, helpers.run_round)
            for key, value in (("base", base_round), ("a", a_round), ("b", b_round)):
                measured[key] += value
            print(f"  round {index + 1}: baseline {base_round.rate:8,.0f}/s   (a) {a_round.rate:8,.0f}/s "
                  f"({a_round.rate / base_round.rate:.2f}x)   (b) {b_round.rate:8,.0f}/s "
                  f"({b_round.rate / base_round.rate:.2f}x)   machine frozen "
                  f"{base_round.frozen:.1f}/{a_round.frozen:.1f}/{b_round.frozen:.1f} s")
        base, a, b = measured["base"], measured["a"], measured["b"]
        frozen_share = sum(m.frozen for m in measured.values()) / sum(m.wall for m in measured.values())
        print(f"{'':45} {'per wall-clock s':>17} {'per running s':>15}")
        print(f"baseline  INSERT+COMMIT, {args.concurrency} connections:    {base.rate:12,.0f} rows/s "
              f"{base.running_rate:12,.0f}")
        print(f"(a) single-transfer calls, {args.concurrency} tasks:      {a.rate:12,.0f} transfers/s "
              f"{a.running_rate:9,.0f}   = {a.rate / base.rate:5.2f}x / {a.running_rate / base.running_rate:5.2f}x "
              f"baseline")
        print(f"(b) batches of {args.batch}, {args.batch_streams} streams x {args.batch_processes} processes: "
              f"{b.rate:9,.0f} transfers/s "
              f"{b.running_rate:9,.0f}   = {b.rate / base.rate:5.2f}x / {b.running_rate / base.running_rate:5.2f}x "
              f"baseline")
        print(f"machine frozen (no process ran for > {THRESHOLD_S * 1000:.0f} ms) during {frozen_share:.0%} "
              f"of the measured time; 'per running s' leaves those stalls out (bench/freeze_probe.py)")

        await measure_sealing(ledger, args, b, batch, probe)

        start = time.perf_counter()
        report = await ledger.recompute_balances()
        totals = (await ledger.ledger_totals())["points"]
        print(f"check: recompute_balances over {report.accounts_checked} accounts in "
              f"{time.perf_counter() - start:.2f} s: {'no drift' if report.ok else f'{len(report.drifted)} DRIFTED'}; "
              f"points debits == credits: {totals['debits_posted'] == totals['credits_posted']}")
    finally:
        if helpers is not None:
            await asyncio.to_thread(helpers.close)
        await ledger.close()
        await base_line.close()
        await probe.stop()


async def measure_sealing(
    ledger: Ledger,
    args: argparse.Namespace,
    batched: Measured,
    batch: Callable[[], Awaitable[int]],
    probe: FreezeProbe,
) -> None:
    sealer = Sealer(ledger.pool, Signer.generate(), "bench", checkpoint_every=10_000, checkpoint_interval_s=1.0)
    async with ledger.pool.acquire() as conn:
        backlog = await conn.fetchval("SELECT count(*) FROM ledger_transfers")
    start = time.monotonic()
    checkpoint = await sealer.catch_up()
    end = time.monotonic()
    await asyncio.sleep(2 * THRESHOLD_S)
    assert checkpoint is not None and checkpoint.tree_size == backlog
    sealed = Measured(backlog, end - start, probe.frozen_between(start, end))
    print(f"sealing   backlog of {backlog:,} transfers in {sealed.wall:.2f} s: {sealed.rate:12,.0f} transfers/s "
          f"{sealed.running_rate:9,.0f}   = {sealed.rate / batched.rate:5.2f}x / "
          f"{sealed.running_rate / batched.running_rate:5.2f}x (b)")

    sealer.start()
    try:
        written = await run_for(args.seconds, args.batch_streams, batch, probe)
        await sealer.catch_up()
    finally:
        await sealer.stop()
    async with ledger.pool.acquire() as conn:
        lags = await conn.fetch(
            """
            SELECT extract(epoch FROM c.timestamp - t.timestamp)::float8 AS lag
            FROM ledger_log AS l JOIN ledger_transfers AS t ON t.id = l.transfer_id
            CROSS JOIN LATERAL (SELECT timestamp FROM ledger_checkpoints
                                WHERE tree_size > l.position ORDER BY tree_size LIMIT 1) AS c
            WHERE l.position >= $1 ORDER BY 1
            """,
            backlog,
        )
    values = [r["lag"] for r in lags]
    pct = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    print(f"seal lag  while (b) runs at {written.rate:,.0f} transfers/s ({written.frozen:.1f} s frozen): "
          f"p50 {pct(0.5):.2f} s, p99 {pct(0.99):.2f} s, "
          f"max {values[-1]:.2f} s over {len(values):,} transfers (checkpoint every 10,000 transfers or 1 s)")


if __name__ == "__main__":
    asyncio.run(main())
