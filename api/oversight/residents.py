"""One resident on one page, for operators: who, balances (debt included), links, recent actions and
redemptions. Gathered from the identity, actions and redemptions features and the ledger, each through
its face."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.actions import list_links, resident_actions
from api.database import raw_connection
from api.identity import get_resident
from api.redemptions import resident_redemptions
from ledger import Balance, get_balances, resident_carbon_account, resident_points_account, resident_receivable_account

RECENT = 20


@dataclass(frozen=True)
class ResidentPage:
    resident: Any
    points: Balance
    carbon: Balance
    receivable: Balance
    links: list[Any]
    actions: list[Any]
    redemptions: list[Any]


async def resident_page(session: AsyncSession, resident_id: uuid.UUID) -> ResidentPage:
    resident = await get_resident(session, resident_id)
    accounts = [
        f(resident_id).id for f in (resident_points_account, resident_carbon_account, resident_receivable_account)
    ]
    balances = await get_balances(await raw_connection(session), accounts)
    points, carbon, receivable = (balances.get(a) or Balance() for a in accounts)
    return ResidentPage(
        resident,
        points,
        carbon,
        receivable,
        list(await list_links(session, resident_id)),
        (await resident_actions(session, resident_id, None, RECENT)).items,
        (await resident_redemptions(session, resident_id, None, RECENT)).items,
    )
