"""Property: any sequence of transfers keeps double entry balanced and the stored balances derivable.

Hypothesis draws batches of plain, pending, post and void transfers (many of them invalid on
purpose: overdrafts, resolved or unknown pending ids, linked chains that break) over a small set of
accounts. After each run, per ledger the total debits equal the total credits, every stored balance
equals ``recompute_balances()``, and each account's balance equals a model computed in Python from
the results the ledger reported.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.engine import balance_effects
from ledger.service import Ledger
from ledger.types import AccountCode, NewTransfer
from tests.helpers import make_account, make_issuance, post, transfer, void

# (kind, debit index, credit index, amount, linked, pending-reference index)
step = st.tuples(
    st.sampled_from(["plain", "plain", "pending", "post", "void", "partial"]),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(1, 60),
    st.booleans(),
    st.integers(0, 7),
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(step, min_size=1, max_size=12), min_size=1, max_size=4))
async def test_random_transfer_sequences_keep_the_ledger_consistent(ledger: Ledger, batches) -> None:  # type: ignore[no-untyped-def]
    accounts = [await make_issuance(ledger)] + [await make_account(ledger) for _ in range(3)]
    accounts.append(await make_account(ledger, AccountCode.REDEMPTION, limited=False))
    pendings: list[uuid.UUID] = []
    applied: list[NewTransfer] = []
    for batch in batches:
        transfers = []
        for kind, d, c, amount, linked, ref in batch:
            if kind in ("post", "void", "partial"):
                if not pendings:
                    continue
                pending_id = pendings[ref % len(pendings)]
                t = void(pending_id) if kind == "void" else post(pending_id, amount if kind == "partial" else None)
            else:
                t = transfer(accounts[d], accounts[c], amount, pending=kind == "pending")
                if kind == "pending":
                    pendings.append(t.id)
            transfers.append(NewTransfer(**{**_fields(t), "linked": linked}))
        outcomes = await ledger.create_transfers(transfers)
        applied += [t for t, o in zip(transfers, outcomes, strict=True) if o.applied]

    totals = await ledger.ledger_totals()
    for row in totals.values():
        assert row["debits_posted"] == row["credits_posted"]
        assert row["debits_pending"] == row["credits_pending"]
    report = await ledger.recompute_balances()
    assert report.ok, report.drifted

    stored = await ledger.lookup_transfers([t.id for t in applied])
    model = {a: [0, 0, 0, 0] for a in accounts}
    for t in applied:
        record = stored[t.id]
        pending_amount = stored[record.pending_id].amount if record.pending_id else 0
        for account, index, delta in balance_effects(record, pending_amount):
            model[account][index] += delta
    balances = await ledger.get_balances(accounts)
    for a in accounts:
        assert list(balances[a].as_tuple()) == model[a]
        if a != accounts[0] and a != accounts[-1]:
            assert balances[a].available_credit >= 0


def _fields(t: NewTransfer) -> dict:  # type: ignore[type-arg]
    return {name: getattr(t, name) for name in NewTransfer.__dataclass_fields__}

