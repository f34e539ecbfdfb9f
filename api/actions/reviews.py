"""Operator reviews of actions held for review (a partner's anomalous volume): approve or reject.

Approving credits the action now, by the methodology version it was judged with and within the
resident's caps as they stand (``domain.decision.approve_held``, the caps of ingestion), under the
same per-resident lock as ingestion. Every decision is recorded in ``action_reviews`` and in the
operator audit log, in the same transaction as the action's new state and its credit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.actions import crediting, events, repository
from api.actions.errors import ActionNotFound, AlreadyReviewed
from api.actions.models import Action
from api.actions.runtime import ActionsRuntime
from api.audit_log import Actor, record
from api.database import raw_connection
from api.request_meta import RequestMeta
from domain.actions import ActionStatus, Reason, month_start
from domain.decision import approve_held


async def pending_reviews(session: AsyncSession, limit: int) -> Sequence[Action]:
    return await repository.held_actions(session, limit)


async def decide_review(
    session: AsyncSession,
    rt: ActionsRuntime,
    actor: Actor,
    action_id: uuid.UUID,
    approve: bool,
    reason: str,
    meta: RequestMeta,
) -> Action:
    """Approve (credit now, within the caps as they stand) or reject an action held for review."""
    conn = await raw_connection(session)
    resident_id = await repository.resident_of_action(conn, action_id)
    if resident_id is None:
        raise ActionNotFound(f"no action {action_id}")
    await repository.lock_residents(conn, [resident_id])
    action = await repository.action_for_update(session, action_id)
    if action.status != ActionStatus.PENDING_REVIEW.value:
        raise AlreadyReviewed(f"this action is {action.status}")
    if approve:
        approval = approve_held(
            rt.rules,
            methodology=(action.methodology_id or "", action.methodology_version or 0),
            category=action.category,
            quantity=action.quantity,
            kind=action.kind,
            resident_id=action.resident_id,
            day=action.local_day,
            points=await repository.points_credited(conn, {action.resident_id}, month_start(action.local_day)),
        )
        capped = approval.capped
        credited = await crediting.credit(
            conn, [crediting.Credit(action.id, action.resident_id, approval.reduction, capped.credited)]
        )
        action.status, action.reason = ActionStatus.CREDITED.value, None
        action.points, action.points_withheld, action.cap_reason = capped.credited, capped.cut, capped.reason
        action.decided_at = credited.at[action.id]
    else:
        action.status, action.reason = ActionStatus.REJECTED.value, Reason.REJECTED_BY_OPERATOR.value
        action.decided_at = datetime.now(UTC)
    decision = "approve" if approve else "reject"
    await repository.insert_review(conn, action.id, actor.operator_id, decision, reason)
    await session.flush()
    await events.reviewed(conn, action, decision)
    await record(
        session, actor, "action.review", "action", str(action.id), {"decision": decision, "reason": reason}, meta
    )
    await session.flush()
    return action
