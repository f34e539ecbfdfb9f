"""Request and response bodies of the offers and redemptions routes (never the table models themselves)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType, field

from api.redemptions.models import Offer, Redemption
from domain.redemptions import qr_payload
from domain.text import check_names

Instant = Annotated[datetime, Meta(tz=True)]
Title = Annotated[str, Meta(min_length=1, max_length=200)]
Description = Annotated[str, Meta(max_length=2000)]
Price = Annotated[int, Meta(gt=0, le=1_000_000_000, description="Points a resident pays (integer > 0)")]
Stock = Annotated[int, Meta(ge=0, le=1_000_000_000, description="Units left to redeem; null = unlimited")]
Limit = Annotated[int, Meta(ge=1, le=1_000_000, description="Redemptions per resident (held or captured); null = none")]
OfferState = Literal["active", "paused"]


class NewOffer(Struct, forbid_unknown_fields=True):
    title: Title
    points_price: Price
    description: Description = ""
    stock: Stock | None = None
    per_resident_limit: Limit | None = None
    valid_from: Instant | None = None
    valid_until: Instant | None = None
    status: OfferState = "active"

    def __post_init__(self) -> None:
        check_names(title=self.title)


class OfferChange(Struct, forbid_unknown_fields=True):
    """Only the fields given change; ``null`` makes the stock unlimited, or removes the limit or the end."""

    title: Title | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    points_price: Price | UnsetType = UNSET
    stock: Stock | None | UnsetType = UNSET
    per_resident_limit: Limit | None | UnsetType = UNSET
    valid_from: Instant | UnsetType = UNSET
    valid_until: Instant | None | UnsetType = UNSET
    status: OfferState | UnsetType = UNSET

    def __post_init__(self) -> None:
        check_names(title=self.title if isinstance(self.title, str) else None)


class OfferOut(Struct):
    id: UUID
    merchant_id: UUID
    title: str
    description: str
    points_price: int
    stock: int | None
    per_resident_limit: int | None
    valid_from: datetime
    valid_until: datetime | None
    status: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, o: Offer) -> OfferOut:
        return cls(
            o.id,
            o.merchant_id,
            o.title,
            o.description,
            o.points_price,
            o.stock,
            o.per_resident_limit,
            o.valid_from,
            o.valid_until,
            o.status,
            o.created_at,
            o.updated_at,
        )


class OfferPage(Struct):
    items: list[OfferOut]
    next_cursor: str | None


class NewRedemption(Struct, forbid_unknown_fields=True):
    offer_id: UUID


class RedemptionOut(Struct):
    """A redemption as its resident sees it: with its code (and the code's QR payload) while it is held."""

    id: UUID
    offer_id: UUID
    status: str
    points: int
    code: str | None
    qr_payload: str | None
    created_at: datetime
    expires_at: datetime
    captured_at: datetime | None
    voided_at: datetime | None
    voided_by: str | None
    expired_at: datetime | None
    refunded_at: datetime | None

    @classmethod
    def of(cls, r: Redemption, code: str | None = None) -> RedemptionOut:
        return cls(
            r.id,
            r.offer_id,
            r.status,
            r.points,
            code,
            qr_payload(code.replace("-", "")) if code else None,
            r.created_at,
            r.expires_at,
            r.captured_at,
            r.voided_at,
            r.voided_by,
            r.expired_at,
            r.refunded_at,
        )


class RedemptionPage(Struct):
    items: list[RedemptionOut]
    next_cursor: str | None


class Capture(Struct, forbid_unknown_fields=True):
    code: Annotated[str, Meta(min_length=1, max_length=64, description="As typed or scanned; the hyphen is optional")]


class Refund(Struct, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=500)]


class MerchantRedemptionOut(Struct):
    """A redemption as its merchant sees it (no code, no resident)."""

    id: UUID
    offer_id: UUID
    status: str
    points: int
    created_at: datetime
    expires_at: datetime
    captured_at: datetime | None
    voided_at: datetime | None
    voided_by: str | None
    expired_at: datetime | None
    refunded_at: datetime | None
    refund_reason: str | None

    @classmethod
    def of(cls, r: Redemption) -> MerchantRedemptionOut:
        return cls(
            r.id,
            r.offer_id,
            r.status,
            r.points,
            r.created_at,
            r.expires_at,
            r.captured_at,
            r.voided_at,
            r.voided_by,
            r.expired_at,
            r.refunded_at,
            r.refund_reason,
        )


class MerchantRedemptionPage(Struct):
    items: list[MerchantRedemptionOut]
    next_cursor: str | None


class StatementLineOut(Struct):
    redemption_id: UUID
    offer_id: UUID
    event: str
    points: int
    at: datetime


class EventTotal(Struct):
    count: int
    points: int


class StatementOut(Struct):
    """A period's lines (one page), and totals over the whole period: ``net_points`` = captured − refunded,
    which is the merchant's points account's posted movement over the period (``ledger_net_points``)."""

    start: datetime = field(name="from")
    end: datetime = field(name="to")
    lines: list[StatementLineOut] = field(default_factory=list)
    next_cursor: str | None = None
    totals: dict[str, EventTotal] = field(default_factory=dict)
    net_points: int = 0
    ledger_net_points: int = 0
