"""Exchange routes: admins build batches; auditors and admins read them and their evidence."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api import idempotency
from api.audit_log import Actor
from api.exchange import batches, evidence, views
from api.exchange.runtime import ExchangeRuntime
from api.exchange.schemas import BatchOut, BatchPage, CreateBatch
from api.guards import ANY_OPERATOR, OPERATOR_ADMIN
from api.request_meta import RequestMeta
from domain.identity import Principal
from domain.methodologies import MethodologyRegistry
from ledger import LogReader


class ExchangeBatchController(Controller):
    path = "/v1/operator/exchange-batches"
    tags = ["operator"]
    security = [{"bearer": []}]
    cache_control = CacheControlHeader(no_store=True)

    @post(
        "/",
        status_code=201,
        guards=[OPERATOR_ADMIN],
        summary="Batch the verified reductions not yet exported, credited up to `cutoff`, for the carbon exchange",
        description="Moves the batch's grams from the carbon pool to the exchange account and takes back, as "
        "adjustments, reductions reversed after an earlier batch exported them. The batch is then submitted to "
        "the exchange in the background. 409 nothing_to_export when there is nothing to batch.",
    )
    async def create(
        self,
        data: JSONBody[CreateBatch],
        db_session: NamedDependency[AsyncSession],
        exchange: NamedDependency[ExchangeRuntime],
        actor: NamedDependency[Actor],
        principal: NamedDependency[Principal],
        request_meta: NamedDependency[RequestMeta],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", required=False, max_length=200)
        ] = None,
    ) -> Response[BatchOut]:
        async def write() -> BatchOut:
            return BatchOut.of(await batches.build(db_session, actor, data.cutoff, request_meta))

        call = idempotency.Idempotent.of(principal, "exchange_batch.create", idempotency_key, data)
        return await idempotency.once(db_session, exchange.secret, call, write, BatchOut, 201)

    @get("/", guards=[ANY_OPERATOR], summary="Exchange batches, newest first (cursor-paginated)")
    async def list_batches(
        self,
        db_session: NamedDependency[AsyncSession],
        cursor: Annotated[str | None, QueryParameter(required=False, max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> BatchPage:
        page = await views.list_batches(db_session, cursor, limit)
        return BatchPage([BatchOut.of(b) for b in page.items], page.next_cursor)

    @get("/{batch_id:uuid}", guards=[ANY_OPERATOR], summary="One exchange batch: totals, status and receipt")
    async def batch(
        self, batch_id: Annotated[UUID, PathParameter()], db_session: NamedDependency[AsyncSession]
    ) -> BatchOut:
        return BatchOut.of(await views.get_batch(db_session, batch_id))

    @get(
        "/{batch_id:uuid}/evidence",
        guards=[ANY_OPERATOR],
        summary="The batch's evidence package for the third-party verifier (JSON Lines), streamed",
        description="Every included action's activity data, methodology version, factors and sources, reduction, "
        "and the inclusion proof of its ledger entry against a signed checkpoint, with the public keys. Check it "
        "offline with `carbon-rewards exchange verify FILE`. 503 evidence_not_ready (with Retry-After) until a "
        "signed checkpoint covers every entry, seconds after the batch is built.",
    )
    async def evidence(
        self,
        batch_id: Annotated[UUID, PathParameter()],
        db_session: NamedDependency[AsyncSession],
        sessionmaker: NamedDependency[async_sessionmaker[AsyncSession]],
        log_reader: NamedDependency[LogReader],
        methodologies: NamedDependency[MethodologyRegistry],
    ) -> Stream:
        plan = await evidence.plan(db_session, log_reader, batch_id)
        media = "application/x-ndjson"
        headers = {
            "Content-Type": media,
            "Content-Disposition": f'attachment; filename="exchange-batch-{batch_id}-evidence.jsonl"',
        }
        return Stream(
            evidence.package(sessionmaker, log_reader, methodologies, plan), media_type=media, headers=headers
        )


ROUTES = [ExchangeBatchController]
