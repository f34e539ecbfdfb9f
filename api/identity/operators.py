"""Operators: created from the command line, and named in the audit log by the ``actor`` dependency."""

from __future__ import annotations

import asyncio
import uuid

from argon2 import PasswordHasher
from litestar.di import NamedDependency
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_log import Actor, record
from api.identity.models import Operator
from api.request_meta import RequestMeta
from domain.errors import Conflict, InvalidInput
from domain.identity import OPERATOR_ROLES, InvalidCredentials, Principal, Role

MIN_OPERATOR_PASSWORD = 12
#: How the audit log names writes made from the command line.
CLI_ACTOR = Actor(None, "cli")


async def provide_actor(db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]) -> Actor:
    """The ``actor`` dependency of operator routes that write: the calling operator, as the audit log names it.

    A valid token of an operator that no longer exists is refused here, before the write.
    """
    operator = await db_session.get(Operator, principal.subject_id)
    if operator is None:
        raise InvalidCredentials("this operator no longer exists")
    return Actor(operator.id, operator.username)


async def create_operator(
    session: AsyncSession, hasher: PasswordHasher, username: str, password: str, role: Role, meta: RequestMeta
) -> Operator:
    """Create an operator (from the CLI; recorded in the audit log as done by ``cli``)."""
    if role not in OPERATOR_ROLES:
        raise InvalidInput("an operator's role is operator_admin or operator_auditor", field="role")
    if not (3 <= len(username) <= 64) or not username.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise InvalidInput("a username is 3-64 letters, digits, '.', '_' or '-'", field="username")
    if len(password) < MIN_OPERATOR_PASSWORD:
        raise InvalidInput(f"an operator password has at least {MIN_OPERATOR_PASSWORD} characters", field="password")
    existing = (await session.execute(select(Operator.id).where(Operator.username == username))).scalar_one_or_none()  # type: ignore[arg-type]
    if existing is not None:
        raise Conflict(f"an operator named {username!r} exists already")
    operator = Operator(
        id=uuid.uuid4(),
        username=username,
        password_hash=await asyncio.to_thread(hasher.hash, password),
        role=role.value,
    )
    session.add(operator)
    await session.flush()
    await record(
        session,
        CLI_ACTOR,
        "operator.create",
        "operator",
        str(operator.id),
        {"username": username, "role": role.value},
        meta,
    )
    return operator
