"""What a resident sees: balance, actions, ledger statement and impact (CO₂e avoided).

Balances and the statement are read from the ledger, in the request's transaction, through the
ledger's face; actions and impact from the actions table.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from api.actions import repository
from api.actions.errors import ActionNotFound
from api.actions.models import Action
from api.actions.runtime import ActionsRuntime
from api.database import raw_connection
from api.pagination import Page, decode_cursor, page_of
from domain.methodologies import Factor, Methodology, MethodologyNotFound, MethodologyRegistry, points_for
from ledger import Entry, account_entries, get_balances, resident_carbon_account, resident_points_account


@dataclass(frozen=True)
class ResidentBalance:
    points_available: int
    points_held: int
    points_earned: int
    points_spent: int
    co2e_avoided_g: int


async def balance(session: AsyncSession, resident_id: uuid.UUID) -> ResidentBalance:
    points_account, carbon_account = resident_points_account(resident_id), resident_carbon_account(resident_id)
    balances = await get_balances(await raw_connection(session), [points_account.id, carbon_account.id])
    points = balances.get(points_account.id)
    carbon = balances.get(carbon_account.id)
    return ResidentBalance(
        points_available=points.available_credit if points else 0,
        points_held=points.debits_pending if points else 0,
        points_earned=points.credits_posted if points else 0,
        points_spent=points.debits_posted if points else 0,
        co2e_avoided_g=(carbon.debits_posted - carbon.credits_posted) if carbon else 0,
    )


async def resident_actions(
    session: AsyncSession, resident_id: uuid.UUID, cursor: str | None, limit: int
) -> Page[Action]:
    """The resident's actions, newest first."""
    rows = await repository.resident_actions(session, resident_id, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda action: (action.received_at, action.id))


@dataclass(frozen=True)
class Provenance:
    """How an action's credit was reckoned: the methodology version, the factor it used, and the sums."""

    methodology: Methodology
    #: The published factor (unit, derivation, sources); its value is the one stored with the action.
    factor: Factor
    #: The factor the credit was computed with, as stored with the action.
    factor_used: Decimal
    working: str
    points_per_kg: Decimal
    points_working: str


@dataclass(frozen=True)
class ActionDetail:
    action: Action
    #: None for an action that was not credited (nothing was reckoned).
    provenance: Provenance | None


async def resident_action(
    session: AsyncSession, rt: ActionsRuntime, resident_id: uuid.UUID, action_id: uuid.UUID
) -> ActionDetail:
    """One of the resident's own actions with what a resident needs to recompute its reduction by hand;
    another resident's action is answered as missing (its existence is not disclosed)."""
    action = await repository.resident_action(session, resident_id, action_id)
    if action is None:
        raise ActionNotFound(f"no action {action_id}")
    return ActionDetail(action, _provenance(action, rt.rules.methodologies, rt.rules.points_per_kg))


def _provenance(action: Action, methodologies: MethodologyRegistry, points_per_kg: Decimal) -> Provenance | None:
    if action.methodology_id is None or action.methodology_version is None or action.factor is None:
        return None
    try:
        methodology = methodologies.get(action.methodology_id, action.methodology_version)
    except MethodologyNotFound:
        return None
    factor = methodology.factors.get(action.category)
    if factor is None:
        return None
    used = Decimal(action.factor)
    earned = points_for(action.grams_co2e, points_per_kg)
    unit = "point" if earned == 1 else "points"
    points_working = f"floor({action.grams_co2e} g × {points_per_kg} points per kg ÷ 1000) = {earned} {unit}"
    if action.points_withheld:
        points_working += f", of which {action.points_withheld} withheld ({action.cap_reason})"
    return Provenance(
        methodology,
        factor,
        used,
        methodology.working(used, action.quantity),
        points_per_kg,
        points_working,
    )


async def statement(session: AsyncSession, resident_id: uuid.UUID, cursor: str | None, limit: int) -> Page[Entry]:
    """The resident's ledger entries (points and grams CO₂e), newest first."""
    accounts = [resident_points_account(resident_id).id, resident_carbon_account(resident_id).id]
    conn = await raw_connection(session)
    entries = await account_entries(conn, accounts, before=decode_cursor(cursor), limit=limit + 1)
    return page_of(entries, limit, lambda entry: (entry.timestamp, entry.transfer_id))


@dataclass(frozen=True)
class Impact:
    total_g: int
    by_kind: dict[str, int]
    by_month: list[tuple[str, str, int]] = field(default_factory=list)


async def impact(session: AsyncSession, resident_id: uuid.UUID) -> Impact:
    """Grams CO₂e avoided by the resident's credited actions: in total, by kind, by month and kind."""
    by_month = await repository.impact_by_month(await raw_connection(session), resident_id)
    by_kind: dict[str, int] = defaultdict(int)
    for _, kind, grams in by_month:
        by_kind[kind] += grams
    return Impact(sum(by_kind.values()), dict(by_kind), by_month)
