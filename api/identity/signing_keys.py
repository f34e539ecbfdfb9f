"""Token signing keys in the database: each process publishes its key; every instance verifies with all
published keys, so a key rotated on one instance is accepted by the others."""

from __future__ import annotations

from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.identity.models import TokenSigningKey as TokenSigningKeyRow
from api.identity.tokens import LEEWAY_S, TokenSigningKey


async def publish_signing_key(session: AsyncSession, key: TokenSigningKey) -> None:
    """Record this process's token key; any other current key becomes retired (published until its tokens expire)."""
    await session.execute(
        insert(TokenSigningKeyRow)
        .values(kid=key.kid, algorithm=key.algorithm, public_key=key.public_bytes)
        .on_conflict_do_update(index_elements=["kid"], set_={"retired_at": None})
    )
    await session.execute(
        update(TokenSigningKeyRow)
        .where(TokenSigningKeyRow.kid != key.kid, TokenSigningKeyRow.retired_at.is_(None))  # type: ignore[arg-type, union-attr]
        .values(retired_at=func.now())
    )


async def published_keys(session: AsyncSession, access_ttl: timedelta) -> dict[str, Ed25519PublicKey]:
    """Keys that may still have valid tokens out: the current ones, and those retired less than a token lifetime ago."""
    grace = access_ttl + timedelta(seconds=LEEWAY_S)
    rows = (
        await session.execute(
            select(TokenSigningKeyRow).where(
                TokenSigningKeyRow.retired_at.is_(None)  # type: ignore[union-attr]
                | (TokenSigningKeyRow.retired_at > func.now() - grace)  # type: ignore[operator]
            )
        )
    ).scalars()
    return {row.kid: Ed25519PublicKey.from_public_bytes(row.public_key) for row in rows}
