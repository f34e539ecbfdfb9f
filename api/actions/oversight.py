"""What operators see of actions: a filtered list, and the whole trail of one action.

A trail holds what the partner sent (or the claim fetched), each rule and how it ended
(``domain.trail``), the methodology version and factor with its sources, the review and the reversal
if any, and every ledger transfer the action produced with its Merkle log position and the inclusion
proof to ask for, against the latest signed checkpoint that covers it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.actions import repository
from api.actions.crediting import co2e_transfer_id
from api.actions.errors import ActionNotFound
from api.actions.models import Action, ActionReversal, ActionReview
from api.actions.runtime import ActionsRuntime
from api.database import raw_connection
from api.pagination import Page, decode_cursor, page_of
from domain.methodologies import Factor, Methodology, MethodologyNotFound
from domain.trail import RuleOutcome, trail
from ledger import Transfer, find_transfers

#: The transfers an action can produce, by the name its id derives from (``uuid5(action id, name)``).
TRANSFER_NAMES = ("co2e", "points", "settlement", "reverse-co2e", "reverse-points", "reverse-owed")


@dataclass(frozen=True)
class ActionFilter:
    resident_id: uuid.UUID | None = None
    partner_id: uuid.UUID | None = None
    kind: str | None = None
    status: str | None = None
    reason: str | None = None
    received_from: datetime | None = None
    received_to: datetime | None = None


async def list_actions(session: AsyncSession, where: ActionFilter, cursor: str | None, limit: int) -> Page[Action]:
    rows = await repository.operator_actions(session, where, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda a: (a.received_at, a.id))


@dataclass(frozen=True)
class Trail:
    action: Action
    rules: list[RuleOutcome]
    methodology: Methodology | None
    factor: Factor | None
    review: ActionReview | None
    reversal: ActionReversal | None
    transfers: Sequence[tuple[Transfer, int | None]]
    #: The tree size to ask inclusion proofs at: the latest checkpoint's (None before the first one).
    proof_tree_size: int | None


async def action_trail(
    session: AsyncSession, rt: ActionsRuntime, action_id: uuid.UUID, latest_tree_size: int | None
) -> Trail:
    action = await session.get(Action, action_id)
    if action is None:
        raise ActionNotFound(f"no action {action_id}")
    review = await repository.review_of(session, action_id)
    reversal = await session.get(ActionReversal, action_id)
    methodology = factor = None
    if action.methodology_id is not None and action.methodology_version is not None:
        try:
            methodology = rt.rules.methodologies.get(action.methodology_id, action.methodology_version)
            factor = methodology.factors.get(action.category)
        except MethodologyNotFound:
            methodology = None
    ids = [co2e_transfer_id(action.id), *(uuid.uuid5(action.id, name) for name in TRANSFER_NAMES[1:])]
    transfers = await find_transfers(await raw_connection(session), ids)
    rules = trail(
        action.status, action.reason, action.cap_reason, action.points_withheld, review.decision if review else None
    )
    return Trail(action, rules, methodology, factor, review, reversal, transfers, latest_tree_size)
