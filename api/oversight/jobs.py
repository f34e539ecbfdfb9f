"""Background jobs an operator starts and polls: today, verifying the whole ledger on live data.

A job runs in the worker that accepted the request, in a task of its own with its own short
transactions: the row is written (``queued``) before the answer, then ``running`` with its progress
(leaves checked of the log's size) and a heartbeat, then ``succeeded`` with the result (or
``failed``). A job whose worker stopped is ``interrupted``: reported so once its heartbeat is older than
``STALE``, and marked so when the next job starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.audit_log import Actor
from api.oversight.models import Job
from domain.errors import NotFound
from ledger import current_outage, database_unreachable
from ledger import LogReader, LongRead, VerifyReport

log = logging.getLogger(__name__)

#: A running job whose heartbeat is older than this has lost its worker.
STALE = timedelta(minutes=5)
#: Problems listed in a verification's result (the count is always given).
MAX_PROBLEMS = 100


class JobNotFound(NotFound):
    code = "job_not_found"
    title = "No such job"


def status_of(job: Job, now: datetime) -> str:
    if job.status in ("queued", "running") and now - job.heartbeat_at > STALE:
        return "interrupted"
    return job.status


def report_result(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "tree_size": report.tree_size,
        "checkpoints_checked": report.checkpoints_checked,
        "first_bad_position": report.first_bad_position,
        "problem_count": len(report.problems),
        "problems": [
            {"kind": p.kind, "detail": p.detail, "position": p.position} for p in report.problems[:MAX_PROBLEMS]
        ],
    }


class JobRunner:
    """Runs this worker's jobs; ``close`` cancels those still running (they end ``interrupted``)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], log_reader: LogReader) -> None:
        self.sessionmaker = sessionmaker
        self.log_reader = log_reader
        self._tasks: set[asyncio.Task[None]] = set()
        self._outage = current_outage()  # the service's, current while it starts

    @staticmethod
    async def _mark_interrupted(session: AsyncSession) -> None:
        """Mark the jobs whose workers are gone as interrupted (reads report them so meanwhile)."""
        await session.execute(
            update(Job)
            .where(Job.status.in_(["queued", "running"]))  # type: ignore[attr-defined]
            .where(Job.heartbeat_at < datetime.now(UTC) - STALE)  # type: ignore[arg-type, operator]
            .values(status="interrupted", finished_at=datetime.now(UTC))
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def start_verification(self, actor: Actor) -> Job:
        """Write the job and start it; ``LongReadsBusy`` (nothing written) when no long read may start."""
        slot = self.log_reader.reserve()
        try:
            job = await self._queue(actor)
        except BaseException:
            slot.release()
            raise
        task = asyncio.create_task(self._verify(job.id, slot), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _queue(self, actor: Actor) -> Job:
        job = Job(id=uuid.uuid4(), kind="ledger.verify", status="queued", requested_by=actor.name)
        async with self.sessionmaker() as session, session.begin():
            await self._mark_interrupted(session)
            session.add(job)
        return job

    async def _set(self, job_id: uuid.UUID, **values: Any) -> None:
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(Job).where(Job.id == job_id).values(heartbeat_at=datetime.now(UTC), **values)  # type: ignore[arg-type]
            )

    async def _verify(self, job_id: uuid.UUID, slot: LongRead) -> None:
        try:
            await self._run_verification(job_id, slot)
        finally:
            slot.release()

    async def _run_verification(self, job_id: uuid.UUID, slot: LongRead) -> None:
        await self._set(job_id, status="running", started_at=datetime.now(UTC))

        async def progress(done: int, total: int) -> None:
            await self._set(job_id, done=done, total=total)

        try:
            report = await self.log_reader.verify(slot, progress)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._set(job_id, status="interrupted", finished_at=datetime.now(UTC)))
            raise
        except Exception as exc:  # noqa: BLE001 - the job records why it failed; the worker goes on
            if database_unreachable(exc):
                # Logged once per outage; the job cannot be marked now, and is marked interrupted when read.
                self._outage.failed(exc, f"job {job_id}")
                return
            log.exception("job %s failed", job_id)
            await self._set(
                job_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:500], finished_at=datetime.now(UTC)
            )
            return
        await self._set(job_id, status="succeeded", result=report_result(report), finished_at=datetime.now(UTC))


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job:
    job = await session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job
