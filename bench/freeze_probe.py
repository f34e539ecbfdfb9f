"""Measure how long the machine itself stood still, so that benchmark figures can be read honestly.

On a shared virtual machine the whole guest is sometimes descheduled for seconds (CPU steal):
every process, PostgreSQL included, stops. A figure averaged over wall-clock time then mostly
measures the host. The probe is a separate, almost idle process that sleeps 5 ms at a time and
reports every wake-up that came more than ``THRESHOLD_S`` late as a frozen interval; a busy but
running machine wakes a sleeper within a scheduler slice, far below the threshold.

    probe = await FreezeProbe.start()
    ... measure ...
    frozen = probe.frozen_between(t0, t1)   # seconds of [t0, t1] (time.monotonic) the machine stood still
    await probe.stop()

Run directly (``python bench/freeze_probe.py --seconds 20``) it prints the frozen share of that time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

TICK_S = 0.005
THRESHOLD_S = 0.1


def _raise_priority() -> str:
    """Run ahead of every busy process, so that a late wake-up means the machine, not the queue."""
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return "real-time"
    except (PermissionError, AttributeError, OSError):
        pass
    try:
        os.nice(-20)
        return "nice -20"
    except (PermissionError, OSError):
        return "normal"


def _child() -> None:
    """Sleep in ticks; print ``start end`` (time.monotonic) of every late wake-up until stdin closes."""
    import select

    print(f"priority {_raise_priority()}", flush=True)
    last = time.monotonic()
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], TICK_S)
        now = time.monotonic()
        if now - last > TICK_S + THRESHOLD_S:
            print(f"{last + TICK_S!r} {now!r}", flush=True)
        last = now
        if readable and not sys.stdin.buffer.read1(4096):
            return


class FreezeProbe:
    """A child process recording the intervals during which the machine did not run it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.intervals: list[tuple[float, float]] = []
        self.priority = "unknown"
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> FreezeProbe:
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--child", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        return cls(process)

    async def _read(self) -> None:
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            first, second = line.split()
            if first == b"priority":
                self.priority = second.decode()
            else:
                self.intervals.append((float(first), float(second)))

    def frozen_between(self, start: float, end: float) -> float:
        """Seconds of ``[start, end]`` (``time.monotonic`` values) that fell in frozen intervals."""
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.intervals)

    async def stop(self) -> None:
        """Close the child's stdin (it exits), wait for it, and read its last reports."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 5)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        await self._reader


async def _report(seconds: float) -> None:
    probe = await FreezeProbe.start()
    try:
        start = time.monotonic()
        await asyncio.sleep(seconds)
        end = time.monotonic()
    finally:
        await probe.stop()
    frozen = probe.frozen_between(start, end)
    print(f"frozen {frozen:.2f} s of {end - start:.2f} s ({frozen / (end - start):.0%}) "
          f"in {len(probe.intervals)} stalls longer than {THRESHOLD_S * 1000:.0f} ms "
          f"(probe priority: {probe.priority})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=20.0)
    arguments = parser.parse_args()
    if arguments.child:
        _child()
    else:
        asyncio.run(_report(arguments.seconds))
