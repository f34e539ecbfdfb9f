"""The audit log's table (append-only: triggers refuse UPDATE, DELETE and TRUNCATE, like the ledger)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from api.columns import timestamp


class OperatorAuditEntry(SQLModel, table=True):
    """Who changed what, when, from where (append-only)."""

    __tablename__ = "operator_audit_log"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    at: datetime = timestamp()
    operator_id: UUID | None = Field(default=None, nullable=True)
    operator_username: str = Field(sa_column=Column(String(64), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    target_type: str = Field(sa_column=Column(String(32), nullable=False))
    target_id: str = Field(sa_column=Column(String(64), nullable=False))
    details: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    )
    client_ip: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
