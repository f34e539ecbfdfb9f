"""Column helpers shared by the table models of every module."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, text
from sqlmodel import Field


def timestamp(nullable: bool = False, default_now: bool = True) -> Any:
    """A ``timestamptz`` field, set by the database to ``now()`` on insert unless ``default_now`` is off."""
    return Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True), nullable=nullable, server_default=text("now()") if default_now else None
        ),
    )
