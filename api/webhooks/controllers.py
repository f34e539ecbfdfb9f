"""Webhooks routes: merchants and partners register their endpoint; operators watch deliveries."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_log import Actor
from api.guards import ANY_OPERATOR, MERCHANT_ONLY, OPERATOR_ADMIN, PARTNER_ONLY
from api.request_meta import RequestMeta
from api.webhooks import deliveries, endpoints
from api.webhooks.runtime import WebhooksRuntime
from api.webhooks.schemas import DeliveryOut, DeliveryPage, DeliveryStatus, RedeliveryOut, WebhookIn, WebhookOut
from domain.identity import Principal


class _EndpointRoutes(Controller):
    """The same three routes for merchants and partners, each under its own path and guard."""

    security = [{"bearer": []}]
    cache_control = CacheControlHeader(no_store=True)

    @put(
        "/webhook",
        summary="Register (201, with its signing secret, shown once) or change (200) the webhook endpoint",
        description="Events are POSTed as JSON with `X-Carbon-Signature: t=<unix>,v1=<hex>`, the HMAC-SHA256 of "
        "`<t>.POST.<path>.<body>` keyed with the secret, and `X-Carbon-Event-Id` (stable: drop repeats, "
        "delivery is at least once). A 2xx answer delivers the event; anything else is retried with backoff.",
    )
    async def put_webhook(
        self,
        data: JSONBody[WebhookIn],
        db_session: NamedDependency[AsyncSession],
        webhooks: NamedDependency[WebhooksRuntime],
        principal: NamedDependency[Principal],
    ) -> Response[WebhookOut]:
        endpoint, secret = await endpoints.put_endpoint(
            db_session, webhooks.secret, principal, data.url, data.events, allow_private=webhooks.allow_private
        )
        return Response(WebhookOut.of(endpoint, secret), status_code=201 if secret else 200)

    @get("/webhook", summary="The registered webhook endpoint (without its secret)")
    async def get_webhook(
        self, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> WebhookOut:
        return WebhookOut.of(await endpoints.get_endpoint(db_session, principal))

    @delete("/webhook", status_code=204, summary="Remove the webhook endpoint (its pending deliveries end)")
    async def delete_webhook(
        self, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> None:
        await endpoints.remove_endpoint(db_session, principal)


class MerchantWebhookController(_EndpointRoutes):
    path = "/v1/merchant"
    tags = ["merchant"]
    guards = [MERCHANT_ONLY]


class PartnerWebhookController(_EndpointRoutes):
    path = "/v1/partner"
    tags = ["partner"]
    guards = [PARTNER_ONLY]


class DeliveryController(Controller):
    path = "/v1/operator/webhook-deliveries"
    tags = ["operator"]
    security = [{"bearer": []}]
    cache_control = CacheControlHeader(no_store=True)

    @get("", guards=[ANY_OPERATOR], summary="Webhook deliveries, newest first (cursor-paginated)")
    async def list_deliveries(
        self,
        db_session: NamedDependency[AsyncSession],
        status: Annotated[DeliveryStatus | None, QueryParameter(required=False)] = None,
        cursor: Annotated[str | None, QueryParameter(required=False, max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> DeliveryPage:
        page = await deliveries.list_deliveries(db_session, status, cursor, limit)
        return DeliveryPage([DeliveryOut.of(*row) for row in page.items], page.next_cursor)

    @post(
        "/{delivery_id:uuid}/redeliver",
        status_code=200,
        guards=[OPERATOR_ADMIN],
        summary="Deliver again now, attempts counted afresh (recorded in the audit log)",
    )
    async def redeliver(
        self,
        delivery_id: Annotated[UUID, PathParameter()],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
        request_meta: NamedDependency[RequestMeta],
    ) -> RedeliveryOut:
        delivery = await deliveries.redeliver(db_session, actor, delivery_id, request_meta)
        return RedeliveryOut(delivery.id, delivery.status, delivery.attempts, delivery.next_attempt_at)


ROUTES = [MerchantWebhookController, PartnerWebhookController, DeliveryController]
