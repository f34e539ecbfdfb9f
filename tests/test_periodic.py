"""The background loop shared by the sealer, pending expiry and housekeeping."""

from __future__ import annotations

import asyncio

import pytest

from ledger.periodic import PeriodicTask


async def test_rounds_with_more_work_run_back_to_back_and_then_the_loop_pauses() -> None:
    rounds: list[bool] = []
    paused = asyncio.Event()

    async def run_round() -> bool:
        more = len(rounds) < 2
        rounds.append(more)
        if not more:
            paused.set()
        return more

    # An hour's pause: had the loop paused after a round reporting more work, the test would time out.
    task = PeriodicTask("test-backlog", run_round, interval_s=3600)
    task.start()
    await asyncio.wait_for(paused.wait(), timeout=60)
    await asyncio.sleep(0.05)
    await task.stop()
    assert rounds == [True, True, False]


async def test_a_failed_round_is_logged_and_retried_after_the_pause(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[str] = []
    recovered = asyncio.Event()

    async def flaky_round() -> bool:
        if not attempts:
            attempts.append("failed")
            raise RuntimeError("database went away")
        attempts.append("ran")
        recovered.set()
        return False

    task = PeriodicTask("test-flaky", flaky_round, interval_s=0.01)
    task.start()
    await asyncio.wait_for(recovered.wait(), timeout=60)
    await task.stop()
    # More rounds may have run before stop() did: the loop went on after the failure.
    assert attempts[:2] == ["failed", "ran"]
    assert "test-flaky: round failed" in caplog.text


async def test_stop_cancels_a_round_in_flight_and_the_task_can_start_again() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow_round() -> bool:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return False

    task = PeriodicTask("test-slow", slow_round, interval_s=0.01)
    task.start()
    await asyncio.wait_for(entered.wait(), timeout=60)
    await task.stop()
    assert cancelled.is_set()
    await task.stop()  # stopping twice is harmless

    entered.clear()
    task.start()
    await asyncio.wait_for(entered.wait(), timeout=60)
    await task.stop()
