"""Linking a resident's account at a partner, confirmed by the code the partner's app showed them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.actions import repository
from api.actions.errors import AccountAlreadyLinked, LinkNotFound, LinkNotVerified
from api.actions.models import PartnerLink
from api.actions.runtime import ActionsRuntime, get_partner
from api.database import lookup_session
from api.rate_limits import count_hit, refuse_after_failures


async def link_account(
    session: AsyncSession,
    rt: ActionsRuntime,
    resident_id: uuid.UUID,
    partner_id: uuid.UUID,
    account_ref: str,
    link_code: str,
) -> tuple[PartnerLink, bool]:
    """Link a partner account once the partner confirms the code it showed to the account's holder.

    Returns the link and whether it is new; linking an account the resident already holds is a no-op.
    Wrong codes are counted per resident and per partner account; past the limit the attempt is refused
    (429) before the partner is asked, so codes cannot be guessed. The code is checked before the
    account's state is told: a wrong code answers alike whether or not someone linked the account.
    The partner is asked with no database connection held (see ``lookup_session``); the unique index
    on active links settles a race with another resident meanwhile.
    """
    now, limits = datetime.now(UTC), rt.link_limits
    buckets = [
        (f"link:resident:{resident_id}", limits.per_resident),
        (f"link:account:{partner_id}:{account_ref}", limits.per_account),
    ]
    async with lookup_session(session) as lookup:
        endpoint = rt.endpoint(await get_partner(lookup, partner_id))
        existing = await repository.active_link(lookup, partner_id, account_ref)
        if existing is None or existing.resident_id != resident_id:
            await refuse_after_failures(lookup, buckets, limits.window_s, now)
    if existing is not None and existing.resident_id == resident_id:
        return existing, False
    link_id = uuid.uuid4()  # also the verification's request id, the same in each of its retries
    if not await rt.partners.verify_account(endpoint, account_ref, link_code, link_id):
        for bucket, _ in buckets:
            await count_hit(session, bucket, limits.window_s, now)
        raise LinkNotVerified("ask the partner's app for a new link code and try again")
    if existing is not None:
        raise AccountAlreadyLinked("this account is linked to another resident; they must unlink it first")
    link = PartnerLink(id=link_id, resident_id=resident_id, partner_id=partner_id, partner_account_ref=account_ref)
    session.add(link)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raced = await repository.active_link(session, partner_id, account_ref)
        if raced is not None and raced.resident_id == resident_id:
            return raced, False
        raise AccountAlreadyLinked("this account was just linked to another resident") from None
    await session.refresh(link)
    return link, True


async def list_links(session: AsyncSession, resident_id: uuid.UUID) -> Sequence[PartnerLink]:
    """The resident's active links, oldest first."""
    return await repository.resident_links(session, resident_id)


async def unlink(session: AsyncSession, resident_id: uuid.UUID, link_id: uuid.UUID) -> None:
    """End a link; records of the account are refused again until someone links it."""
    link = await session.get(PartnerLink, link_id)
    if link is None or link.resident_id != resident_id or link.unlinked_at is not None:
        raise LinkNotFound(f"no linked account {link_id}")
    link.unlinked_at = datetime.now(UTC)
    await session.flush()
