"""Ingestion at the request: a partner's signed push, or a resident's claim, made ready for a decision.

A push's signature is verified and its body parsed; a claim's record is fetched from the partner and
checked to be the resident's, with no database connection held during the call. Either then joins
the next ingestion group of its partner (``grouping``), which decides and writes it with whatever
else arrived meanwhile (``deciding``), in one transaction of the group's own.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.actions import repository
from api.actions.errors import NotLinkedAtPartner, RecordNotFound
from api.actions.grouping import Signed
from api.actions.runtime import ActionsRuntime, get_partner
from api.database import lookup_session
from domain.actions import MAX_BATCH, ActionKind, InvalidRecord, parse_record
from domain.decision import Decision
from domain.errors import InvalidInput, MalformedBody
from domain.identity import Principal
from integrations.partners import PartnerBadResponse


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_batch(body: bytes) -> list[Any]:
    """The ``records`` of a push body: a JSON object with 1 to 1,000 records."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise MalformedBody("the body is not JSON") from None
    records = document.get("records") if isinstance(document, dict) else None
    if not isinstance(records, list) or not 1 <= len(records) <= MAX_BATCH:
        raise InvalidInput(f'send {{"records": [...]}} with 1 to {MAX_BATCH} records', field="records")
    return records


async def push_batch(
    rt: ActionsRuntime, principal: Principal, signature: str | None, path: str, body: bytes
) -> list[Decision]:
    """A partner's signed batch, decided in the partner's next group, which checks its signature (and
    refuses a replay) with the group's single read of the partner."""
    received_at = int(datetime.now(UTC).timestamp())
    raws = parse_batch(body)
    signed = Signed(signature, "POST", path, body, received_at)
    return await rt.groups.submit(rt.rules, principal.subject_id, "push", raws, signed)


async def claim(
    session: AsyncSession, rt: ActionsRuntime, resident_id: uuid.UUID, partner_id: uuid.UUID, external_id: str
) -> Decision:
    """A resident's claim: fetch the record from the partner, check it is theirs, decide it like a push.

    The partner is called before anything is written, and with no database connection held (see
    ``lookup_session``); the decision re-reads the links in its group's transaction.
    """
    async with lookup_session(session) as lookup:
        partner = await get_partner(lookup, partner_id)
        refs = {link.partner_account_ref for link in await repository.resident_links(lookup, resident_id, partner_id)}
        endpoint, kind = rt.endpoint(partner), ActionKind(partner.kind)
    if not refs:
        raise NotLinkedAtPartner("link your account at this partner first (POST /v1/me/links)")
    raw = await rt.partners.fetch_record(endpoint, external_id)
    if raw is None:
        raise RecordNotFound(f"the partner has no record {external_id!r}")
    try:
        record = parse_record(kind, raw)
    except InvalidRecord as exc:
        raise PartnerBadResponse(f"the partner's record is malformed: {exc.detail}") from None
    if record.external_id != external_id:
        raise PartnerBadResponse("the partner answered with a different record than the one asked for")
    if record.account_ref not in refs:
        raise RecordNotFound(f"the partner has no record {external_id!r} for your linked accounts")
    [decision] = await rt.groups.submit(rt.rules, partner_id, "claim", [raw])
    return decision
