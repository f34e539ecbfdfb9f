"""Building an exchange batch: the verified reductions not yet exported, and the adjustments owed.

One transaction, one batch at a time (an advisory lock): every credited action decided up to the
cut-off that no batch holds joins this one, and every reversal of an action a batch already exported
joins it as an adjustment. In the ``co2e_g`` ledger the batch moves its grams from the carbon pool to
the exchange account, and the adjusted grams back, so the ledger says what was handed over. The
batch is ``built`` when the transaction commits; handing it to the exchange is ``submission``'s job,
so a crash in between leaves a built batch that the next round submits, never a lost or second one.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_log import Actor, record
from api.database import raw_connection
from api.exchange import repository
from api.exchange.errors import NothingToExport
from api.exchange.models import ExchangeBatch
from api.request_meta import RequestMeta
from integrations.evidence import action_ids_root
from ledger import (
    CARBON_POOL,
    EXCHANGE,
    LedgerConflict,
    LedgerUnit,
    NewTransfer,
    TransferCode,
    apply_in_transaction,
)


def batch_transfers(batch_id: uuid.UUID, exported_g: int, adjusted_g: int) -> list[NewTransfer]:
    """The export of a batch's grams to the exchange account, and the return of its adjustments."""
    legs = [
        ("export", CARBON_POOL.id, EXCHANGE.id, exported_g, TransferCode.EXPORT),
        ("adjustment", EXCHANGE.id, CARBON_POOL.id, adjusted_g, TransferCode.ADJUSTMENT),
    ]
    legs = [leg for leg in legs if leg[3] > 0]
    return [
        NewTransfer(
            uuid.uuid5(batch_id, name),
            debit,
            credit,
            amount,
            LedgerUnit.CO2E_G,
            code,
            reference=f"exchange_batch:{batch_id}",
            linked=i < len(legs) - 1,
        )
        for i, (name, debit, credit, amount, code) in enumerate(legs)
    ]


async def build(session: AsyncSession, actor: Actor, cutoff: datetime | None, meta: RequestMeta) -> ExchangeBatch:
    """Build the next batch up to ``cutoff`` (never later than now), audited; ``NothingToExport`` when empty."""
    now = datetime.now(UTC)
    cutoff = min(cutoff, now) if cutoff is not None else now
    conn = await raw_connection(session)
    await repository.lock_batching(conn)
    batch_id = uuid.uuid4()
    # The batch row comes first: its items and adjustments refer to it.
    await repository.insert_batch(conn, batch_id, cutoff, actor.name)
    await repository.add_items(conn, batch_id, cutoff)
    await repository.add_adjustments(conn, batch_id, cutoff)
    by_kind: defaultdict[str, dict[str, int]] = defaultdict(lambda: {"actions": 0, "grams_co2e": 0})
    by_methodology: defaultdict[str, dict[str, int]] = defaultdict(lambda: {"actions": 0, "grams_co2e": 0})
    for row in await repository.item_totals(conn, batch_id):
        for groups, key in ((by_kind, row["kind"]), (by_methodology, row["methodology"])):
            groups[key]["actions"] += row["count"]
            groups[key]["grams_co2e"] += row["grams"]
    actions = sum(g["actions"] for g in by_kind.values())
    grams = sum(g["grams_co2e"] for g in by_kind.values())
    adjustments, adjusted_g = await repository.adjustment_totals(conn, batch_id)
    if actions == 0 and adjustments == 0:
        raise NothingToExport(f"nothing was credited or reversed up to {cutoff.isoformat()} that no batch holds")
    root = action_ids_root([i async for i in repository.item_ids(conn, batch_id)])
    outcomes = await apply_in_transaction(
        conn, batch_transfers(batch_id, grams, adjusted_g), accounts=[CARBON_POOL, EXCHANGE]
    )
    refused = [o for o in outcomes if not o.applied]
    if refused:  # fresh ids on accounts that exist: only a concurrent write can refuse them
        raise LedgerConflict(f"the ledger refused transfer {refused[0].id}: {refused[0].result.value}")
    totals: dict[str, Any] = {
        "actions": actions,
        "grams_co2e": grams,
        "adjustments": adjustments,
        "adjustment_g": adjusted_g,
        "net_g": grams - adjusted_g,
        "by_kind": dict(sorted(by_kind.items())),
        "by_methodology": dict(sorted(by_methodology.items())),
        "merkle_root": root,
    }
    await repository.complete_batch(conn, batch_id, totals)
    batch = await session.get(ExchangeBatch, batch_id, populate_existing=True)
    assert batch is not None
    await record(
        session,
        actor,
        "exchange_batch.create",
        "exchange_batch",
        str(batch_id),
        {"cutoff": cutoff.isoformat(), **{k: v for k, v in totals.items() if isinstance(v, int)}},
        meta,
    )
    return batch
