"""Offers: a merchant creates, lists and changes its own; residents browse those they can redeem now."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from api.pagination import Page, decode_cursor, page_of
from api.redemptions import repository
from api.redemptions.errors import OfferNotFound
from api.redemptions.models import Offer
from api.redemptions.schemas import NewOffer, OfferChange
from domain.errors import InvalidInput


def _created(offer: Offer) -> tuple[datetime, uuid.UUID]:
    return offer.created_at, offer.id


def _check_validity(valid_from: datetime, valid_until: datetime | None) -> None:
    if valid_until is not None and valid_until <= valid_from:
        raise InvalidInput("valid_until must be later than valid_from", field="valid_until")


async def create_offer(session: AsyncSession, merchant_id: uuid.UUID, new: NewOffer) -> Offer:
    now = datetime.now(UTC)
    valid_from = new.valid_from or now
    _check_validity(valid_from, new.valid_until)
    offer = Offer(
        id=uuid.uuid4(),
        merchant_id=merchant_id,
        title=new.title,
        description=new.description,
        points_price=new.points_price,
        stock=new.stock,
        per_resident_limit=new.per_resident_limit,
        valid_from=valid_from,
        valid_until=new.valid_until,
        status=new.status,
        created_at=now,
        updated_at=now,
    )
    session.add(offer)
    await session.flush()
    return offer


async def merchant_offer(
    session: AsyncSession, merchant_id: uuid.UUID, offer_id: uuid.UUID, *, for_update: bool = False
) -> Offer:
    """One of the merchant's offers; another merchant's is ``404``, like one that does not exist."""
    offer = await repository.offer(session, offer_id, for_update=for_update)
    if offer is None or offer.merchant_id != merchant_id:
        raise OfferNotFound(f"no offer {offer_id}")
    return offer


async def change_offer(
    session: AsyncSession, merchant_id: uuid.UUID, offer_id: uuid.UUID, change: OfferChange
) -> Offer:
    """Change the fields given (``null`` stock: unlimited; ``null`` limit or end: none). Setting the stock
    sets the units free to hold from now on; redemptions already held keep theirs."""
    offer = await merchant_offer(session, merchant_id, offer_id, for_update=True)
    for name in (
        "title",
        "description",
        "points_price",
        "stock",
        "per_resident_limit",
        "valid_from",
        "valid_until",
        "status",
    ):
        value = getattr(change, name)
        if value is not UNSET:
            setattr(offer, name, value)
    _check_validity(offer.valid_from, offer.valid_until)
    offer.updated_at = datetime.now(UTC)
    await session.flush()
    return offer


async def merchant_offers(session: AsyncSession, merchant_id: uuid.UUID, cursor: str | None, limit: int) -> Page[Offer]:
    rows = await repository.merchant_offers(session, merchant_id, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, _created)


async def open_offers(session: AsyncSession, cursor: str | None, limit: int) -> Page[Offer]:
    """What a resident can redeem now, newest first."""
    rows = await repository.open_offers(session, datetime.now(UTC), decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, _created)


async def offer(session: AsyncSession, offer_id: uuid.UUID) -> Offer:
    found = await repository.offer(session, offer_id)
    if found is None:
        raise OfferNotFound(f"no offer {offer_id}")
    return found
