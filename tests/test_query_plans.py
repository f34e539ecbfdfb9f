"""Keyed reads and writes probe indexes, whatever the tables' statistics say.

A new deployment's tables are empty and have never been analysed; a plan made then is cached by every
connection (asyncpg prepares statements) until autovacuum's first ANALYZE. A ``col = ANY($1)`` read
planned then is a sequential scan, and it stays one while the table grows: the cost of a write (or of
a resident's statement) would grow with the ledger. Each keyed statement of the ledger's write path
and of action ingestion is planned here on such an empty database, as the service's role, in the
generic form a cached plan takes, and must not scan its table.
"""

from __future__ import annotations

import re

import asyncpg
import pytest

from api.actions import repository as actions
from api.exchange import repository as exchange
from api.redemptions import repository as redemptions
from api.webhooks import repository as webhooks
from ledger import account_log, account_store, inspection, log_store, statements, store
from tests.helpers import APP_ROLE

KEYED = {
    "accounts by id": account_store.SELECT_ACCOUNTS,
    "accounts ready to seal": account_log.READY_ACCOUNTS,
    "transfers by id": store._SELECT_TRANSFERS,  # noqa: SLF001 - the statements themselves are under test
    "resolutions by pending id": store._SELECT_RESOLUTIONS,  # noqa: SLF001
    "limited balances locked": store._LOCK_LIMITED_BALANCES,  # noqa: SLF001
    "balance increments": store._ADD_TO_BALANCES,  # noqa: SLF001
    "subtree hashes of a proof": log_store.SUBTREE_NODES,
    "leaf hashes of a proof": log_store.LEAF_HASHES,
    "a sealed transfer's leaf": log_store.SEALED_TRANSFER,
    "actions by id": actions.EXISTING_ACTIONS,
    "a partner's trades already credited": actions.TAKEN_TRADES,
    "a resident's earlier trips": actions.EARLIER_TRIPS,
    "a resident's points per day": actions.CAP_USAGE,
    "an account statement": statements.ACCOUNT_ENTRIES,
    "an account's posted movements over a period": statements.POSTED_MOVEMENTS,
    "a merchant's statement lines": redemptions.STATEMENT_LINES,
    "due webhook deliveries": webhooks._CLAIM,  # noqa: SLF001
    "an account's running statement": inspection._STATEMENT_PAGE,  # noqa: SLF001
    "an account's balance at a moment": inspection._EFFECTS_UP_TO,  # noqa: SLF001
    "transfers in the log by position": inspection.sealed_page_sql(account_ids=True, newest_first=True),
    "reductions not yet exported": exchange._ADD_ITEMS,  # noqa: SLF001
    "a batch's reductions": exchange.EVIDENCE_REDUCTIONS,
    "a batch's adjustments": exchange.EVIDENCE_ADJUSTMENTS,
    "a batch's totals": exchange._ITEM_TOTALS,  # noqa: SLF001
    "a batch's methodologies": exchange.EVIDENCE_METHODOLOGIES,
}
#: A value of each parameter type, for EXPLAIN EXECUTE.
SAMPLE = {
    "uuid": "'00000000-0000-0000-0000-000000000000'",
    "timestamptz": "now()",
    "date": "current_date",
    "int": "10",
    "bigint": "0",
    "smallint": "0",
    "text": "NULL",
    "float8": "1.0",
}


def placeholders(sql: str) -> list[str]:
    """The types of ``$n::type`` parameters, in order, for PREPARE."""
    found = dict(re.findall(r"\$(\d+)::([a-z0-9\[\]]+)", sql))
    count = max(int(n) for n in re.findall(r"\$(\d+)", sql))
    return [found.get(str(n), "smallint") for n in range(1, count + 1)]


def sample_value(sql_type: str) -> str:
    return "'{}'" if sql_type.endswith("[]") else SAMPLE[sql_type]


@pytest.mark.parametrize("name", sorted(KEYED))
async def test_a_keyed_statement_never_scans_its_table(fresh_database_url: str, name: str) -> None:
    sql = KEYED[name]
    types = placeholders(sql)
    conn = await asyncpg.connect(fresh_database_url, server_settings={"role": APP_ROLE})
    try:
        never_analysed = (
            "SELECT bool_and(reltuples < 0) FROM pg_class "
            "WHERE relname IN ('ledger_transfers', 'actions', 'ledger_log', 'ledger_tree_nodes', 'redemptions', "
            "'webhook_deliveries', 'exchange_batch_items', 'action_reversals')"
        )
        assert await conn.fetchval(never_analysed)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE keyed({', '.join(types)}) AS {sql}")
        arguments = ", ".join(sample_value(t) for t in types)
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE keyed({arguments})"))
    finally:
        await conn.close()
    assert "Seq Scan" not in plan, plan
    assert re.search(
        r"Index (Only )?Scan (Backward )?using \w+ on |Bitmap Index Scan on |Conflict Arbiter Indexes", plan
    ), plan
