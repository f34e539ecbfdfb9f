"""Operators' action routes: list and trail (auditors and admins), reverse (admins), reduction statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from api import idempotency
from api.actions import oversight, reversals, stats
from api.actions.operator_schemas import (
    OperatorActionOut,
    OperatorActionPage,
    ReductionGroupOut,
    ReductionStats,
    ReversalOut,
    Reverse,
    TrailOut,
)
from api.actions.runtime import ActionsRuntime
from api.actions.schemas import ActionOut
from api.audit_log import Actor
from api.guards import ANY_OPERATOR, OPERATOR_ADMIN
from api.request_meta import RequestMeta
from domain.actions import ActionKind, ActionStatus
from domain.identity import Principal
from ledger import LogReader, TreeSizeNotFound


class OperatorActionsController(Controller):
    path = "/v1/operator"
    tags = ["operator"]
    security = [{"bearer": []}]
    cache_control = CacheControlHeader(no_store=True)

    @get("/actions", guards=[ANY_OPERATOR], summary="Actions, newest first (cursor-paginated), filtered")
    async def list_actions(
        self,
        db_session: NamedDependency[AsyncSession],
        resident_id: Annotated[UUID | None, QueryParameter(name="resident", required=False)] = None,
        partner_id: Annotated[UUID | None, QueryParameter(name="partner", required=False)] = None,
        kind: Annotated[ActionKind | None, QueryParameter(required=False)] = None,
        status: Annotated[ActionStatus | None, QueryParameter(required=False)] = None,
        reason: Annotated[str | None, QueryParameter(required=False, max_length=64)] = None,
        received_from: Annotated[datetime | None, QueryParameter(name="from", required=False)] = None,
        received_to: Annotated[datetime | None, QueryParameter(name="to", required=False)] = None,
        cursor: Annotated[str | None, QueryParameter(required=False, max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> OperatorActionPage:
        where = oversight.ActionFilter(
            resident_id,
            partner_id,
            kind.value if kind else None,
            status.value if status else None,
            reason,
            received_from,
            received_to,
        )
        page = await oversight.list_actions(db_session, where, cursor, limit)
        return OperatorActionPage(
            [OperatorActionOut(ActionOut.of(a), a.resident_id, a.account_ref) for a in page.items], page.next_cursor
        )

    @get(
        "/actions/{action_id:uuid}",
        guards=[ANY_OPERATOR],
        summary="The whole trail of an action: record, rules, methodology, review, reversal, transfers and proofs",
    )
    async def action_trail(
        self,
        action_id: Annotated[UUID, PathParameter()],
        db_session: NamedDependency[AsyncSession],
        actions: NamedDependency[ActionsRuntime],
        log_reader: NamedDependency[LogReader],
    ) -> TrailOut:
        try:
            tree_size: int | None = (await log_reader.latest_checkpoint()).tree_size
        except TreeSizeNotFound:
            tree_size = None
        return TrailOut.of(await oversight.action_trail(db_session, actions, action_id, tree_size))

    @post(
        "/actions/{action_id:uuid}/reverse",
        status_code=200,
        guards=[OPERATOR_ADMIN],
        summary="Reverse a credited action (fraud): compensating transfers in both ledgers, audited",
        description="Points the resident already spent become a debt that their next credits settle first. "
        "Reversing twice answers the first reversal. 409 action_not_credited for an action not credited.",
    )
    async def reverse(
        self,
        action_id: Annotated[UUID, PathParameter()],
        data: JSONBody[Reverse],
        db_session: NamedDependency[AsyncSession],
        actions: NamedDependency[ActionsRuntime],
        actor: NamedDependency[Actor],
        principal: NamedDependency[Principal],
        request_meta: NamedDependency[RequestMeta],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", required=False, max_length=200)
        ] = None,
    ) -> Response[ReversalOut]:
        async def write() -> ReversalOut:
            return ReversalOut.of(await reversals.reverse(db_session, actor, action_id, data.reason, request_meta))

        call = idempotency.Idempotent.of(principal, "action.reverse", idempotency_key, action_id, data)
        return await idempotency.once(db_session, actions.secret, call, write, ReversalOut, 200)

    @get(
        "/stats/reductions",
        guards=[ANY_OPERATOR],
        summary="Grams CO₂e avoided, actions and points issued over a period, grouped",
        description="`from` defaults to 30 days before `to`, `to` to now. Credits count when they were written to "
        "the ledger, reversals (negative) when they were: the total grams equal the carbon pool's action credits "
        "less its reversals over the same period.",
    )
    async def reductions(
        self,
        db_session: NamedDependency[AsyncSession],
        actions: NamedDependency[ActionsRuntime],
        group_by: Annotated[stats.GroupBy, QueryParameter()] = stats.GroupBy.KIND,
        start: Annotated[datetime | None, QueryParameter(name="from", required=False)] = None,
        end: Annotated[datetime | None, QueryParameter(name="to", required=False)] = None,
    ) -> ReductionStats:
        end = end or datetime.now(UTC)
        start = start or end - timedelta(days=30)
        groups = await stats.reductions(db_session, group_by, start, end, actions.rules.local_offset)
        total = stats.ReductionGroup(
            "total",
            sum(g.grams_co2e for g in groups),
            sum(g.actions_credited for g in groups),
            sum(g.actions_reversed for g in groups),
            sum(g.points_issued for g in groups),
        )
        return ReductionStats(
            group_by.value, start, end, [ReductionGroupOut.of(g) for g in groups], ReductionGroupOut.of(total)
        )
