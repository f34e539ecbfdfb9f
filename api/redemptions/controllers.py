"""Offers and redemptions routes: residents browse and redeem; merchants manage offers, capture, void,
refund and read their statement.

Handlers parse, authorise (guards), call one service function (through ``idempotency.once`` where a
retry must not repeat the write) and return a schema.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, Request, Response, get, patch, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api import idempotency
from api.guards import MERCHANT_ONLY, RESIDENT_ONLY
from api.redemptions import offers, redeeming, views
from api.redemptions.repository import STATEMENT_EVENTS
from api.redemptions.runtime import RedemptionsRuntime
from api.redemptions.schemas import (
    Capture,
    EventTotal,
    MerchantRedemptionOut,
    MerchantRedemptionPage,
    NewOffer,
    NewRedemption,
    OfferChange,
    OfferOut,
    OfferPage,
    RedemptionOut,
    RedemptionPage,
    Refund,
    StatementLineOut,
    StatementOut,
)
from domain.identity import Principal
from domain.redemptions import RedemptionStatus, VoidedBy, display_code

Cursor = Annotated[str | None, QueryParameter(required=False, max_length=200)]
Limit = Annotated[int, QueryParameter(ge=1, le=200)]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        max_length=200,
        description="A retry with the same key answers what the first request did (status and body) and changes "
        "nothing; the same key with a different request is 409 idempotency_key_reused.",
    ),
]
OfferId = Annotated[UUID, PathParameter()]
RedemptionId = Annotated[UUID, PathParameter()]
Moment = Annotated[datetime | None, QueryParameter(required=False)]


class ResidentOffersController(Controller):
    path = "/v1/offers"
    tags = ["resident"]
    guards = [RESIDENT_ONLY]
    security = [{"bearer": []}]

    @get("", summary="Offers open now: active, within their validity, in stock (newest first, cursor-paginated)")
    async def open_offers(
        self, db_session: NamedDependency[AsyncSession], cursor: Cursor = None, limit: Limit = 50
    ) -> OfferPage:
        page = await offers.open_offers(db_session, cursor, limit)
        return OfferPage([OfferOut.of(o) for o in page.items], page.next_cursor)

    @get("/{offer_id:uuid}", summary="One offer (open or not: its status and validity say)")
    async def get_offer(self, offer_id: OfferId, db_session: NamedDependency[AsyncSession]) -> OfferOut:
        return OfferOut.of(await offers.offer(db_session, offer_id))


class ResidentRedemptionsController(Controller):
    path = "/v1/me/redemptions"
    tags = ["resident"]
    guards = [RESIDENT_ONLY]
    security = [{"bearer": []}]
    cache_control = CacheControlHeader(no_store=True)

    @post(
        "",
        summary="Redeem an offer: hold its price on your points and get a code for the cashier",
        description="409 insufficient_points, out_of_stock, redemption_limit or offer_unavailable. The code "
        "lives CARBON_REDEMPTION_CODE_TTL_S seconds (10 minutes by default), then the points are released.",
    )
    async def redeem(
        self,
        data: JSONBody[NewRedemption],
        db_session: NamedDependency[AsyncSession],
        redemptions: NamedDependency[RedemptionsRuntime],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[RedemptionOut]:
        async def write() -> RedemptionOut:
            redemption, code = await redeeming.redeem(db_session, redemptions, principal.subject_id, data.offer_id)
            return RedemptionOut.of(redemption, display_code(code))

        call = idempotency.Idempotent.of(principal, "redemption.create", idempotency_key, data)
        return await idempotency.once(db_session, redemptions.secret, call, write, RedemptionOut, 201)

    @get("", summary="Your redemptions, newest first (cursor-paginated)")
    async def list_redemptions(
        self,
        db_session: NamedDependency[AsyncSession],
        redemptions: NamedDependency[RedemptionsRuntime],
        principal: NamedDependency[Principal],
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> RedemptionPage:
        page = await views.resident_redemptions(db_session, principal.subject_id, cursor, limit)
        return RedemptionPage(
            [RedemptionOut.of(r, views.code_of(redemptions, r)) for r in page.items], page.next_cursor
        )

    @get("/{redemption_id:uuid}", summary="One of your redemptions (with its code while it is held)")
    async def get_redemption(
        self,
        redemption_id: RedemptionId,
        db_session: NamedDependency[AsyncSession],
        redemptions: NamedDependency[RedemptionsRuntime],
        principal: NamedDependency[Principal],
    ) -> RedemptionOut:
        redemption = await views.resident_redemption(db_session, principal.subject_id, redemption_id)
        return RedemptionOut.of(redemption, views.code_of(redemptions, redemption))

    @post("/{redemption_id:uuid}/cancel", status_code=200, summary="Cancel a held redemption: the points are released")
    async def cancel(
        self,
        redemption_id: RedemptionId,
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RedemptionOut:
        return RedemptionOut.of(
            await redeeming.void(db_session, redemption_id, VoidedBy.RESIDENT, principal.subject_id)
        )


class MerchantOffersController(Controller):
    path = "/v1/merchant/offers"
    tags = ["merchant"]
    guards = [MERCHANT_ONLY]
    security = [{"bearer": []}]

    @post("", summary="Create an offer")
    async def create_offer(
        self,
        data: JSONBody[NewOffer],
        db_session: NamedDependency[AsyncSession],
        redemptions: NamedDependency[RedemptionsRuntime],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[OfferOut]:
        async def write() -> OfferOut:
            return OfferOut.of(await offers.create_offer(db_session, principal.subject_id, data))

        call = idempotency.Idempotent.of(principal, "offer.create", idempotency_key, data)
        return await idempotency.once(db_session, redemptions.secret, call, write, OfferOut, 201)

    @get("", summary="Your offers, newest first (cursor-paginated)")
    async def list_offers(
        self,
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> OfferPage:
        page = await offers.merchant_offers(db_session, principal.subject_id, cursor, limit)
        return OfferPage([OfferOut.of(o) for o in page.items], page.next_cursor)

    @get("/{offer_id:uuid}", summary="One of your offers")
    async def get_offer(
        self, offer_id: OfferId, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> OfferOut:
        return OfferOut.of(await offers.merchant_offer(db_session, principal.subject_id, offer_id))

    @patch("/{offer_id:uuid}", summary="Change an offer: its text, price, stock, limit, validity, or pause it")
    async def change_offer(
        self,
        offer_id: OfferId,
        data: JSONBody[OfferChange],
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> OfferOut:
        return OfferOut.of(await offers.change_offer(db_session, principal.subject_id, offer_id, data))


class MerchantRedemptionsController(Controller):
    path = "/v1/merchant"
    tags = ["merchant"]
    guards = [MERCHANT_ONLY]
    security = [{"bearer": []}]
    cache_control = CacheControlHeader(no_store=True)

    @post(
        "/redemptions:capture",
        status_code=200,
        summary="Capture a code: the held points become yours",
        description="404 code_not_found for an unknown code or one of another merchant's offers (too many in a "
        "window: 429); 409 code_expired, code_voided or already_captured.",
    )
    async def capture(
        self,
        data: JSONBody[Capture],
        db_session: NamedDependency[AsyncSession],
        redemptions: NamedDependency[RedemptionsRuntime],
        principal: NamedDependency[Principal],
    ) -> MerchantRedemptionOut:
        return MerchantRedemptionOut.of(
            await redeeming.capture(db_session, redemptions, principal.subject_id, data.code)
        )

    @post("/redemptions/{redemption_id:uuid}/void", status_code=200, summary="Void a held redemption")
    async def void(
        self,
        redemption_id: RedemptionId,
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> MerchantRedemptionOut:
        voided = await redeeming.void(db_session, redemption_id, VoidedBy.MERCHANT, principal.subject_id)
        return MerchantRedemptionOut.of(voided)

    @post(
        "/redemptions/{redemption_id:uuid}/refund",
        status_code=200,
        summary="Refund a captured redemption: its points go back to the resident (once)",
    )
    async def refund(
        self,
        redemption_id: RedemptionId,
        data: JSONBody[Refund],
        db_session: NamedDependency[AsyncSession],
        redemptions: NamedDependency[RedemptionsRuntime],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[MerchantRedemptionOut]:
        async def write() -> MerchantRedemptionOut:
            refunded = await redeeming.refund(db_session, principal.subject_id, redemption_id, data.reason)
            return MerchantRedemptionOut.of(refunded)

        call = idempotency.Idempotent.of(principal, "redemption.refund", idempotency_key, redemption_id, data)
        return await idempotency.once(db_session, redemptions.secret, call, write, MerchantRedemptionOut, 200)

    @get("/redemptions", summary="Redemptions of your offers, newest first (cursor-paginated)")
    async def list_redemptions(
        self,
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        status: Annotated[RedemptionStatus | None, QueryParameter(required=False)] = None,
        offer_id: Annotated[UUID | None, QueryParameter(required=False)] = None,
        created_from: Annotated[datetime | None, QueryParameter(name="from", required=False)] = None,
        created_to: Annotated[datetime | None, QueryParameter(name="to", required=False)] = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> MerchantRedemptionPage:
        page = await views.merchant_redemptions(
            db_session,
            principal.subject_id,
            status=status.value if status else None,
            offer_id=offer_id,
            created_from=created_from,
            created_to=created_to,
            cursor=cursor,
            limit=limit,
        )
        return MerchantRedemptionPage([MerchantRedemptionOut.of(r) for r in page.items], page.next_cursor)

    @get(
        "/statement",
        summary="Captured, voided, expired and refunded redemptions of a period, with totals (JSON or CSV)",
        description="`from` defaults to 30 days before `to`, `to` to now. `Accept: text/csv` or `?format=csv` "
        "streams every line of the period as CSV, then a total row per event and the net.",
    )
    async def statement(
        self,
        request: Request,  # type: ignore[type-arg]
        db_session: NamedDependency[AsyncSession],
        sessionmaker: NamedDependency[async_sessionmaker[AsyncSession]],
        principal: NamedDependency[Principal],
        start: Annotated[datetime | None, QueryParameter(name="from", required=False)] = None,
        end: Annotated[datetime | None, QueryParameter(name="to", required=False)] = None,
        format: Annotated[Literal["json", "csv"] | None, QueryParameter(required=False)] = None,  # noqa: A002
        cursor: Cursor = None,
        limit: Limit = 200,
    ) -> StatementOut | Stream:
        end = end or datetime.now(UTC)
        start = start or end - timedelta(days=30)
        if format == "csv" or (format is None and "text/csv" in request.headers.get("accept", "")):
            rows = await views.statement_csv(sessionmaker, principal.subject_id, start, end)
            filename = f"statement-{start:%Y%m%d}-{end:%Y%m%d}.csv"
            headers = {  # the media type as a header too: a handler of two answers applies JSON's otherwise
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{filename}"',
            }
            return Stream(rows, media_type="text/csv", headers=headers)
        s = await views.statement(db_session, principal.subject_id, start, end, cursor, limit)
        return StatementOut(
            start=s.start,
            end=s.end,
            lines=[StatementLineOut(l.redemption_id, l.offer_id, l.event, l.points, l.at) for l in s.lines.items],
            next_cursor=s.lines.next_cursor,
            totals={event: EventTotal(*s.totals.get(event, (0, 0))) for event in STATEMENT_EVENTS},
            net_points=s.net_points,
            ledger_net_points=s.ledger_net_points,
        )


ROUTES = [
    ResidentOffersController,
    ResidentRedemptionsController,
    MerchantOffersController,
    MerchantRedemptionsController,
]
