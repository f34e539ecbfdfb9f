"""The redemptions feature's tables: merchants' offers, and residents' redemptions of them.

A redemption's points live in the ledger: a pending transfer (the hold) from the resident to the
merchant, posted on capture, voided on cancel, void or expiry, and a refund transfer back. The row
records which of those happened and when (the times are the ledger transfers' own timestamps), and
every change of it commits in the same transaction as its ledger transfer.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, Integer, LargeBinary, String, text
from sqlmodel import Field, SQLModel

from api.columns import timestamp


class Offer(SQLModel, table=True):
    """What a merchant gives for points. ``stock`` counts the units still free to hold; null = unlimited."""

    __tablename__ = "offers"
    __table_args__ = (
        CheckConstraint("points_price > 0", name="ck_offers_points_price_positive"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="ck_offers_stock_not_negative"),
        CheckConstraint("per_resident_limit IS NULL OR per_resident_limit > 0", name="ck_offers_limit_positive"),
        Index("ix_offers_merchant_created", "merchant_id", "created_at", "id"),
        Index("ix_offers_active_created", "created_at", "id", postgresql_where=text("status = 'active'")),
    )

    id: UUID = Field(primary_key=True)
    merchant_id: UUID = Field(foreign_key="merchants.id", nullable=False)
    title: str = Field(sa_column=Column(String(200), nullable=False))
    description: str = Field(sa_column=Column(String(2000), nullable=False, server_default=text("''")))
    points_price: int = Field(sa_column=Column(BigInteger, nullable=False))
    stock: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    per_resident_limit: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    valid_from: datetime = timestamp()
    valid_until: datetime | None = timestamp(nullable=True, default_now=False)
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = timestamp()
    updated_at: datetime = timestamp()


class Redemption(SQLModel, table=True):
    """One resident's redemption of one offer: held, then captured, voided or expired; a capture may be refunded."""

    __tablename__ = "redemptions"
    __table_args__ = (
        CheckConstraint("points > 0", name="ck_redemptions_points_positive"),
        Index("ix_redemptions_code_hash", "code_hash"),
        Index("uq_redemptions_held_code_hash", "code_hash", unique=True, postgresql_where=text("status = 'held'")),
        Index("ix_redemptions_resident_offer", "resident_id", "offer_id"),
        Index("ix_redemptions_resident_created", "resident_id", "created_at", "id"),
        Index("ix_redemptions_merchant_created", "merchant_id", "created_at", "id"),
        Index("ix_redemptions_merchant_captured", "merchant_id", "captured_at"),
        Index("ix_redemptions_merchant_voided", "merchant_id", "voided_at"),
        Index("ix_redemptions_merchant_expired", "merchant_id", "expired_at"),
        Index("ix_redemptions_merchant_refunded", "merchant_id", "refunded_at"),
        Index("ix_redemptions_held_expiry", "expires_at", postgresql_where=text("status = 'held'")),
    )

    id: UUID = Field(primary_key=True)
    offer_id: UUID = Field(foreign_key="offers.id", nullable=False)
    merchant_id: UUID = Field(nullable=False)
    resident_id: UUID = Field(nullable=False)
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    code_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    code_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    hold_transfer_id: UUID = Field(nullable=False)
    created_at: datetime = timestamp(default_now=False)
    expires_at: datetime = timestamp(default_now=False)
    captured_at: datetime | None = timestamp(nullable=True, default_now=False)
    voided_at: datetime | None = timestamp(nullable=True, default_now=False)
    voided_by: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    expired_at: datetime | None = timestamp(nullable=True, default_now=False)
    refunded_at: datetime | None = timestamp(nullable=True, default_now=False)
    refund_reason: str | None = Field(default=None, sa_column=Column(String(500), nullable=True))
