"""Oversight routes for operators (auditors and admins): the ledger's transfers, accounts, statements,
its export and verification, and one resident's page."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_log import Actor
from api.guards import ANY_OPERATOR
from api.oversight import jobs, ledger_views
from api.oversight.jobs import JobRunner
from api.oversight.residents import resident_page
from api.oversight.schemas import AccountOut, JobOut, ResidentPageOut, StatementEntryOut, StatementPage, TransferPage
from domain.errors import InvalidInput
from ledger import LedgerUnit, LogReader, LongReadsBusy

Cursor = Annotated[str | None, QueryParameter(required=False, max_length=200)]
Limit = Annotated[int, QueryParameter(ge=1, le=500)]
From = Annotated[datetime | None, QueryParameter(name="from", required=False)]
To = Annotated[datetime | None, QueryParameter(name="to", required=False)]


class OversightController(Controller):
    path = "/v1/operator"
    tags = ["operator"]
    guards = [ANY_OPERATOR]
    security = [{"bearer": []}]
    cache_control = CacheControlHeader(no_store=True)

    @get(
        "/ledger/transfers",
        summary="Sealed transfers in Merkle log order, filtered (cursor-paginated, stable while transfers are appended)",
        description="`owner` is a resident's, merchant's or partner's id; `from`/`to` bound the transfers' timestamps. "
        "A transfer is listed once sealed, a fraction of a second after it commits.",
    )
    async def transfers(
        self,
        db_session: NamedDependency[AsyncSession],
        account_id: Annotated[UUID | None, QueryParameter(required=False)] = None,
        owner: Annotated[UUID | None, QueryParameter(required=False)] = None,
        unit: Annotated[LedgerUnit | None, QueryParameter(name="ledger", required=False)] = None,
        code: Annotated[str | None, QueryParameter(required=False, max_length=64)] = None,
        reference: Annotated[str | None, QueryParameter(required=False, max_length=200)] = None,
        start: From = None,
        end: To = None,
        order: Annotated[Literal["desc", "asc"], QueryParameter(required=False)] = "desc",
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> TransferPage:
        where = ledger_views.TransferFilter(
            account_id, owner, unit.value if unit else None, code, reference, start, end
        )
        page = await ledger_views.transfers(db_session, where, cursor, limit, newest_first=order == "desc")
        return TransferPage.of(page.items, page.next_cursor)

    @get("/ledger/accounts/{account_id:uuid}", summary="An account and its balance (now, or as of `at`)")
    async def account(
        self,
        account_id: Annotated[UUID, PathParameter()],
        db_session: NamedDependency[AsyncSession],
        at: Annotated[datetime | None, QueryParameter(required=False)] = None,
    ) -> AccountOut:
        view = await ledger_views.account(db_session, account_id, at)
        return AccountOut.of(view.account, view.balance, view.at)

    @get(
        "/ledger/accounts/{account_id:uuid}/statement",
        summary="An account's transfers in time order, each with the running balance after it (up to `at`)",
    )
    async def statement(
        self,
        account_id: Annotated[UUID, PathParameter()],
        db_session: NamedDependency[AsyncSession],
        at: Annotated[datetime | None, QueryParameter(required=False)] = None,
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> StatementPage:
        page = await ledger_views.statement(db_session, account_id, at, cursor, limit)
        return StatementPage([StatementEntryOut.of(e) for e in page.items], page.next_cursor)

    @get(
        "/ledger/export",
        summary="The ledger's log, streamed: JSON Lines (what `carbon-rewards ledger verify --export` checks) or CSV",
        description="Without `from`/`to`, the whole log, in constant memory whatever its size. A period is for "
        "reading: a log with gaps cannot be verified. 503 long_reads_busy (with Retry-After) while this worker "
        "already runs as many exports, verifications and evidence packages as `CARBON_LONG_READS`.",
    )
    async def export(
        self,
        log_reader: NamedDependency[LogReader],
        format: Annotated[Literal["jsonl", "csv"], QueryParameter(required=False)] = "jsonl",  # noqa: A002
        start: From = None,
        end: To = None,
    ) -> Stream:
        if start is not None and end is not None and not start < end:
            raise InvalidInput("`from` must be earlier than `to`", field="from")
        slot = log_reader.reserve()
        if format == "csv":
            body, media = log_reader.export_csv(slot, start, end), "text/csv; charset=utf-8"
        else:
            body, media = log_reader.export(slot, start, end), "application/x-ndjson"
        filename = f"ledger-{log_reader.origin}.{format}"
        headers = {"Content-Type": media, "Content-Disposition": f'attachment; filename="{filename}"'}
        return Stream(body, media_type=media, headers=headers)

    @post(
        "/ledger/verify",
        status_code=202,
        summary="Verify the whole ledger on live data, as a job: every leaf, root, signature and balance",
        opt={"problems": [LongReadsBusy]},  # raised by the log reader the job runner holds
    )
    async def verify(self, jobs_runner: NamedDependency[JobRunner], actor: NamedDependency[Actor]) -> Response[JobOut]:
        job = await jobs_runner.start_verification(actor)
        return Response(JobOut.of(job), status_code=202, headers={"Location": f"/v1/operator/jobs/{job.id}"})

    @get("/jobs/{job_id:uuid}", summary="A job's status, progress and result (a verification's first bad position)")
    async def job(self, job_id: Annotated[UUID, PathParameter()], db_session: NamedDependency[AsyncSession]) -> JobOut:
        return JobOut.of(await jobs.get_job(db_session, job_id))

    @get(
        "/residents/{resident_id:uuid}",
        summary="One resident: balances (and debt), links, recent actions and redemptions",
    )
    async def resident(
        self, resident_id: Annotated[UUID, PathParameter()], db_session: NamedDependency[AsyncSession]
    ) -> ResidentPageOut:
        return ResidentPageOut.of(await resident_page(db_session, resident_id))


ROUTES = [OversightController]
