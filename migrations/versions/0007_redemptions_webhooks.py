"""Merchants' offers and residents' redemptions; idempotency keys; webhook endpoints, the outbox of
events (append-only) and their deliveries.

Revision ID: 0007_redemptions_webhooks
Revises: 0006_cheaper_reference_check
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.common import app_role, make_append_only

revision: str = "0007_redemptions_webhooks"
down_revision: str | None = "0006_cheaper_reference_check"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MUTABLE = "idempotency_keys, webhook_endpoints, offers, webhook_deliveries, redemptions"


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("owner", "operation", "key"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"], unique=False)
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_role", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_outbox_events_owner_created", "outbox_events", ["owner_role", "owner_id", "created_at"], unique=False
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_role", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.String(length=64)), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_webhook_endpoints_active_owner",
        "webhook_endpoints",
        ["owner_role", "owner_id"],
        unique=True,
        postgresql_where=sa.text("removed_at IS NULL"),
    )
    op.create_table(
        "offers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), server_default=sa.text("''"), nullable=False),
        sa.Column("points_price", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.BigInteger(), nullable=True),
        sa.Column("per_resident_limit", sa.Integer(), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("per_resident_limit IS NULL OR per_resident_limit > 0", name="ck_offers_limit_positive"),
        sa.CheckConstraint("points_price > 0", name="ck_offers_points_price_positive"),
        sa.CheckConstraint("stock IS NULL OR stock >= 0", name="ck_offers_stock_not_negative"),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_offers_active_created",
        "offers",
        ["created_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index("ix_offers_merchant_created", "offers", ["merchant_id", "created_at", "id"], unique=False)
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["outbox_events.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_status_created", "webhook_deliveries", ["status", "created_at", "id"], unique=False
    )
    op.create_table(
        "redemptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("offer_id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("resident_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(), nullable=False),
        sa.Column("code_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("hold_transfer_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_by", sa.String(length=16), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refund_reason", sa.String(length=500), nullable=True),
        sa.CheckConstraint("points > 0", name="ck_redemptions_points_positive"),
        sa.ForeignKeyConstraint(
            ["offer_id"],
            ["offers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_redemptions_code_hash", "redemptions", ["code_hash"], unique=False)
    op.create_index(
        "ix_redemptions_held_expiry",
        "redemptions",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'held'"),
    )
    op.create_index("ix_redemptions_merchant_captured", "redemptions", ["merchant_id", "captured_at"], unique=False)
    op.create_index("ix_redemptions_merchant_created", "redemptions", ["merchant_id", "created_at", "id"], unique=False)
    op.create_index("ix_redemptions_merchant_expired", "redemptions", ["merchant_id", "expired_at"], unique=False)
    op.create_index("ix_redemptions_merchant_refunded", "redemptions", ["merchant_id", "refunded_at"], unique=False)
    op.create_index("ix_redemptions_merchant_voided", "redemptions", ["merchant_id", "voided_at"], unique=False)
    op.create_index("ix_redemptions_resident_created", "redemptions", ["resident_id", "created_at", "id"], unique=False)
    op.create_index("ix_redemptions_resident_offer", "redemptions", ["resident_id", "offer_id"], unique=False)
    op.create_index(
        "uq_redemptions_held_code_hash",
        "redemptions",
        ["code_hash"],
        unique=True,
        postgresql_where=sa.text("status = 'held'"),
    )
    make_append_only("outbox_events")
    role = app_role()
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {MUTABLE} TO {role}")
    op.execute(f"GRANT SELECT, INSERT ON outbox_events TO {role}")


def downgrade() -> None:
    role = app_role()
    op.execute(f"REVOKE ALL ON {MUTABLE}, outbox_events FROM {role}")
    op.drop_index(
        "uq_redemptions_held_code_hash", table_name="redemptions", postgresql_where=sa.text("status = 'held'")
    )
    op.drop_index("ix_redemptions_resident_offer", table_name="redemptions")
    op.drop_index("ix_redemptions_resident_created", table_name="redemptions")
    op.drop_index("ix_redemptions_merchant_voided", table_name="redemptions")
    op.drop_index("ix_redemptions_merchant_refunded", table_name="redemptions")
    op.drop_index("ix_redemptions_merchant_expired", table_name="redemptions")
    op.drop_index("ix_redemptions_merchant_created", table_name="redemptions")
    op.drop_index("ix_redemptions_merchant_captured", table_name="redemptions")
    op.drop_index("ix_redemptions_held_expiry", table_name="redemptions", postgresql_where=sa.text("status = 'held'"))
    op.drop_index("ix_redemptions_code_hash", table_name="redemptions")
    op.drop_table("redemptions")
    op.drop_index("ix_webhook_deliveries_status_created", table_name="webhook_deliveries")
    op.drop_index(
        "ix_webhook_deliveries_due", table_name="webhook_deliveries", postgresql_where=sa.text("status = 'pending'")
    )
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_offers_merchant_created", table_name="offers")
    op.drop_index("ix_offers_active_created", table_name="offers", postgresql_where=sa.text("status = 'active'"))
    op.drop_table("offers")
    op.drop_index(
        "uq_webhook_endpoints_active_owner",
        table_name="webhook_endpoints",
        postgresql_where=sa.text("removed_at IS NULL"),
    )
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_outbox_events_owner_created", table_name="outbox_events")
    op.drop_table("outbox_events")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
