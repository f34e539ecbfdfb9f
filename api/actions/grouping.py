"""Group commit for ingestion: concurrent submissions of one partner decided and written together.

A single-record push or claim alone pays a whole transaction: the reads its decision needs, the
writes, a commit, some twenty round trips. Submitted here instead, it waits while the group before
it is written; everything that arrived meanwhile (up to ``max_records``) then forms one group: the
replay checks of its signatures in one statement, one read of what the decision needs, one decision
over all its records in arrival order, one write, one commit. Each request gets its own results.

The decision is the one a batch gets, and a batch decides as its records would one after another
(``domain.decision``, property-tested), so a group decides exactly as its requests would have, one
after another in arrival order: the same record twice, one resident in several requests, caps and
overlapping trips across requests. Failure stays per request where it can: an invalid record fails
only itself and a replayed signature only its request. A database failure fails the whole group,
which writes nothing (its transaction rolls back), and every request answers 503. A client that
goes away does not stall the group: the group runs in its own task, not in any request's.

A group owns its transaction (the request scope owns none here), and requests hold no database
connection while they wait. The partner is read once per group, and each push's signature is
checked there against its secret: a bad signature fails its request alone (401).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.actions import repository
from api.actions.deciding import ingest
from api.actions.errors import PartnerNotFound
from api.database import raw_connection
from api.observability import shared_work_context
from api.identity import Partner, find_partner
from domain.actions import ActionKind
from domain.decision import Decision, Rules
from domain.errors import CarbonRewardsError
from domain.signatures import SignatureReplayed, verify
from ledger import LedgerConflict, current_outage

log = logging.getLogger(__name__)

#: A group that lost a race with another process's (``LedgerConflict``) is decided again, this often.
_ATTEMPTS = 3
GroupKey = tuple[UUID, str]
#: Told, once a group has committed, of its kind and each record's (outcome, grams): the metrics.
DecisionObserver = Callable[[str, Sequence[tuple[str, int]]], None]
#: Told of each group: its requests, its records and how long it took to decide and write (s).
IngestGroupObserver = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Signed:
    """A push as signed: checked in its group against the partner's secret, then for replay."""

    header: str | None
    method: str
    path: str
    body: bytes
    received_at: int


@dataclass(eq=False)
class _Submission:
    raws: list[Any]
    signed: Signed | None
    digest: str | None = None
    future: asyncio.Future[list[Decision]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class IngestGroups:
    """This process's ingestion groups: one queue and at most one group in flight per partner and source."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        secret_of: Callable[[Partner], str],
        *,
        signature_tolerance_s: int = 300,
        max_records: int = 1000,
        wait_s: float = 0.005,
        observe_decided: DecisionObserver | None = None,
        observe_group: IngestGroupObserver | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._secret_of = secret_of
        self.signature_tolerance_s = signature_tolerance_s
        self.max_records = max_records
        self.wait_s = wait_s
        self._observe_decided = observe_decided
        self._observe_group = observe_group
        #: Groups formed so far (tests and metrics).
        self.formed = 0
        self._queues: dict[GroupKey, deque[_Submission]] = {}
        self._leaders: dict[GroupKey, asyncio.Task[None]] = {}

    async def submit(
        self, rules: Rules, partner_id: UUID, source: str, raws: list[Any], signed: Signed | None = None
    ) -> list[Decision]:
        """Decide ``raws`` in the next group of this partner and source (``push`` with its signature, or
        ``claim``); one decision per raw, in order."""
        key = (partner_id, source)
        submission = _Submission(raws, signed)
        self._queues.setdefault(key, deque()).append(submission)
        if key not in self._leaders:
            self._leaders[key] = asyncio.create_task(
                self._lead(rules, key), name=f"ingest-group-{source}", context=shared_work_context()
            )
        # Shielded: a request cancelled while it waits (its client went away) leaves the group alone.
        return await asyncio.shield(submission.future)

    async def close(self) -> None:
        """Let the groups in flight finish (at shutdown)."""
        leaders = list(self._leaders.values())
        if leaders:
            await asyncio.gather(*leaders, return_exceptions=True)

    async def _lead(self, rules: Rules, key: GroupKey) -> None:
        queue = self._queues[key]
        try:
            while queue:
                if self.wait_s:
                    await asyncio.sleep(self.wait_s)
                group = [queue.popleft()]
                size = len(group[0].raws)
                while queue and size + len(queue[0].raws) <= self.max_records:
                    size += len(queue[0].raws)
                    group.append(queue.popleft())
                await self._decide(rules, key, group)
        finally:
            del self._leaders[key]
            if queue:  # arrived while the last group was being settled
                self._leaders[key] = asyncio.create_task(
                    self._lead(rules, key), name=f"ingest-group-{key[1]}", context=shared_work_context()
                )

    async def _decide(self, rules: Rules, key: GroupKey, group: list[_Submission]) -> None:
        self.formed += 1
        started = time.perf_counter()
        try:
            await self._settle_group(rules, key, group)
        finally:
            if self._observe_group is not None:
                records = sum(len(s.raws) for s in group)
                self._observe_group(len(group), records, time.perf_counter() - started)

    async def _settle_group(self, rules: Rules, key: GroupKey, group: list[_Submission]) -> None:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                kind, refusals, decisions = await self._write(rules, key, group)
                break
            except LedgerConflict as exc:
                if attempt < _ATTEMPTS:
                    continue
                _fail(group, exc)
                return
            except BaseException as exc:  # noqa: BLE001 - every request of the group hears of it
                _fail(group, exc)
                if not isinstance(exc, Exception):
                    raise
                return
        offset = 0
        for submission in group:
            refusal = refusals.get(submission)
            if refusal is not None:
                _settle(submission, exc=refusal)
                continue
            mine = decisions[offset : offset + len(submission.raws)]
            offset += len(submission.raws)
            _settle(submission, result=[dataclasses.replace(d, index=d.index - mine[0].index) for d in mine])
        if self._observe_decided is not None:
            self._observe_decided(str(kind), [(d.outcome.value, d.grams_co2e) for d in decisions])

    async def _write(
        self, rules: Rules, key: GroupKey, group: Sequence[_Submission]
    ) -> tuple[ActionKind, dict[_Submission, CarbonRewardsError | None], list[Decision]]:
        """One transaction: the partner, the signatures and their replay checks, then every accepted
        request's records decided as one batch. Returns each request's refusal (None: accepted)."""
        partner_id, source = key
        async with self._sessionmaker() as session, session.begin():
            partner = await find_partner(session, partner_id)
            if partner is None:
                raise PartnerNotFound(f"no partner {partner_id}")
            kind = ActionKind(partner.kind)
            outcome = self._check_signatures(partner, group)
            conn = await raw_connection(session)
            digests = [s.digest for s in group if s.digest is not None and outcome[s] is None]
            fresh = await repository.remember_signatures(conn, partner_id, digests) if digests else set()
            for submission in group:
                if submission.digest is not None and outcome[submission] is None:
                    if submission.digest in fresh:
                        fresh.discard(submission.digest)  # a second request with the same signature is a replay
                    else:
                        outcome[submission] = SignatureReplayed(
                            "a request with this signature was already received; sign each request anew"
                        )
            raws = [raw for s in group if outcome[s] is None for raw in s.raws]
            decisions = await ingest(conn, rules, partner_id, kind, raws, source, datetime.now(UTC)) if raws else []
        current_outage().recovered()
        return kind, outcome, decisions

    def _check_signatures(
        self, partner: Partner, group: Sequence[_Submission]
    ) -> dict[_Submission, CarbonRewardsError | None]:
        secret = self._secret_of(partner) if any(s.signed for s in group) else ""
        outcome: dict[_Submission, CarbonRewardsError | None] = {}
        for submission in group:
            signed = submission.signed
            outcome[submission] = None
            if signed is None:
                continue
            try:
                submission.digest = verify(
                    signed.header,
                    secret,
                    signed.received_at,
                    signed.method,
                    signed.path,
                    signed.body,
                    self.signature_tolerance_s,
                )
            except CarbonRewardsError as exc:
                outcome[submission] = exc
        return outcome


def _settle(submission: _Submission, *, result: list[Decision] | None = None, exc: BaseException | None = None) -> None:
    if submission.future.done():
        return
    if exc is not None:
        submission.future.set_exception(exc)
    else:
        submission.future.set_result(result or [])


def _fail(group: Sequence[_Submission], exc: BaseException) -> None:
    for submission in group:
        _settle(submission, exc=exc)
