"""Actions routes: a resident's links, claims and views; partners' signed pushes; operator reviews.

Handlers parse, authorise (guards), call one service function and return a schema.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.actions import ingestion, links, reviews, views
from api.actions.operator_controllers import OperatorActionsController
from api.actions.runtime import ActionsRuntime
from api.actions.schemas import (
    ActionDetailOut,
    ActionOut,
    ActionPage,
    BalanceOut,
    BatchResult,
    ImpactOut,
    LinkOut,
    NewClaim,
    NewLink,
    PushOperation,
    RecordResultOut,
    ReviewDecision,
    ReviewItem,
    StatementLineOut,
    StatementPage,
)
from api.audit_log import Actor
from api.guards import ANY_OPERATOR, OPERATOR_ADMIN, PARTNER_ONLY, RESIDENT_ONLY
from api.request_meta import RequestMeta
from domain.identity import Principal

Cursor = Annotated[str | None, QueryParameter(required=False, max_length=200)]
Limit = Annotated[int, QueryParameter(ge=1, le=200)]


class ResidentActionsController(Controller):
    path = "/v1/me"
    tags = ["resident"]
    guards = [RESIDENT_ONLY]
    security = [{"bearer": []}]
    cache_control = CacheControlHeader(no_store=True)

    @post(
        "/links",
        summary="Link an account at a partner (confirmed by the code the partner's app shows)",
        description="201 for a new link, 200 when this resident had already linked the account.",
    )
    async def link(
        self,
        data: JSONBody[NewLink],
        db_session: NamedDependency[AsyncSession],
        actions: NamedDependency[ActionsRuntime],
        principal: NamedDependency[Principal],
    ) -> Response[LinkOut]:
        link, created = await links.link_account(
            db_session, actions, principal.subject_id, data.partner_id, data.partner_account_ref, data.link_code
        )
        return Response(LinkOut.of(link), status_code=201 if created else 200)

    @get("/links", summary="The resident's linked partner accounts")
    async def links(
        self, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[LinkOut]:
        return [LinkOut.of(link) for link in await links.list_links(db_session, principal.subject_id)]

    @delete("/links/{link_id:uuid}", status_code=204, summary="Unlink a partner account")
    async def unlink(
        self,
        link_id: Annotated[UUID, PathParameter()],
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> None:
        await links.unlink(db_session, principal.subject_id, link_id)

    @post(
        "/actions/claims",
        status_code=200,
        summary="Claim a record the partner has not pushed (fetched from the partner, then decided like a push)",
        description="Safe to retry: a record is decided once, a repeat answers `duplicate`. "
        "503 partner_unavailable when the partner cannot be reached; nothing is kept, retry later.",
    )
    async def claim(
        self,
        data: JSONBody[NewClaim],
        db_session: NamedDependency[AsyncSession],
        actions: NamedDependency[ActionsRuntime],
        principal: NamedDependency[Principal],
    ) -> RecordResultOut:
        result = await ingestion.claim(db_session, actions, principal.subject_id, data.partner_id, data.external_id)
        return RecordResultOut.of(result)

    @get("/actions", summary="The resident's actions, newest first (cursor-paginated)")
    async def actions(
        self,
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> ActionPage:
        page = await views.resident_actions(db_session, principal.subject_id, cursor, limit)
        return ActionPage([ActionOut.of(a) for a in page.items], page.next_cursor)

    @get(
        "/actions/{action_id:uuid}",
        summary="One of the resident's actions, with the methodology, factor, sources and sums behind its credit",
        description="Enough to recompute the reduction by hand: `provenance.working` is the formula with the "
        "action's numbers in it. Another resident's action answers 404 `action_not_found`.",
    )
    async def action(
        self,
        action_id: Annotated[UUID, PathParameter()],
        db_session: NamedDependency[AsyncSession],
        actions: NamedDependency[ActionsRuntime],
        principal: NamedDependency[Principal],
    ) -> ActionDetailOut:
        return ActionDetailOut.of(await views.resident_action(db_session, actions, principal.subject_id, action_id))

    @get("/balance", summary="Points available, held, earned and spent, and grams CO₂e avoided")
    async def balance(
        self, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> BalanceOut:
        return BalanceOut.of(await views.balance(db_session, principal.subject_id))

    @get("/ledger", summary="The resident's ledger entries, newest first (cursor-paginated)")
    async def ledger(
        self,
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> StatementPage:
        page = await views.statement(db_session, principal.subject_id, cursor, limit)
        return StatementPage([StatementLineOut.of(line) for line in page.items], page.next_cursor)

    @get("/impact", summary="Grams CO₂e avoided: in total, by kind, and by month")
    async def impact(
        self, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> ImpactOut:
        return ImpactOut.of(await views.impact(db_session, principal.subject_id))


def _signed_path(request: Request[Any, Any, Any]) -> str:
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string") or b""
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


class PartnerActionsController(Controller):
    path = "/v1/partner"
    tags = ["partner"]
    guards = [PARTNER_ONLY]
    security = [{"bearer": []}]

    @post(
        "/actions:batch",
        status_code=200,
        summary="Push up to 1,000 signed action records; one result per record",
        description="Requires the partner's access token and `X-Carbon-Signature: t=<unix>,v1=<hex>`, the "
        "HMAC-SHA256 of `<t>.POST.<path>.<body>` keyed with the partner's webhook secret (±300 s; a replay "
        "is refused). Safe to resend a batch, re-signed: decided records answer `duplicate`.",
        operation_class=PushOperation,
    )
    async def push(
        self,
        request: Request[Any, Any, Any],
        actions: NamedDependency[ActionsRuntime],
        principal: NamedDependency[Principal],
        signature: Annotated[str | None, HeaderParameter(name="X-Carbon-Signature", required=False)] = None,
    ) -> BatchResult:
        body = await request.body()
        results = await ingestion.push_batch(actions, principal, signature, _signed_path(request), body)
        return BatchResult.of(results)


class ReviewController(Controller):
    path = "/v1/operator/reviews"
    tags = ["operator"]
    security = [{"bearer": []}]
    cache_control = CacheControlHeader(no_store=True)

    @get("/", guards=[ANY_OPERATOR], summary="Actions held for review, oldest first")
    async def pending(self, db_session: NamedDependency[AsyncSession], limit: Limit = 100) -> list[ReviewItem]:
        return [
            ReviewItem(ActionOut.of(a), a.resident_id, a.account_ref, a.record)
            for a in await reviews.pending_reviews(db_session, limit)
        ]

    @post("/{action_id:uuid}", status_code=200, guards=[OPERATOR_ADMIN], summary="Approve or reject a held action")
    async def decide(
        self,
        action_id: Annotated[UUID, PathParameter()],
        data: JSONBody[ReviewDecision],
        db_session: NamedDependency[AsyncSession],
        actions: NamedDependency[ActionsRuntime],
        actor: NamedDependency[Actor],
        request_meta: NamedDependency[RequestMeta],
    ) -> ActionOut:
        action = await reviews.decide_review(
            db_session, actions, actor, action_id, data.decision == "approve", data.reason, request_meta
        )
        return ActionOut.of(action)


ROUTES = [ResidentActionsController, PartnerActionsController, ReviewController, OperatorActionsController]
