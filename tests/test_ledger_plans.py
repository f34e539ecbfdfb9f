"""The write path's keyed reads and writes probe indexes, whatever the tables' statistics say.

A new ledger's tables are empty and have never been analysed; a plan made then is cached by every
connection (asyncpg prepares statements) until autovacuum's first ANALYZE. A ``col = ANY($1)`` read
planned then is a sequential scan, and it stays one while the table grows: the cost of a write would
grow with the ledger. Each keyed statement is planned here on such an empty database, as the
service's role, in the generic form a cached plan takes, and must not scan a ledger table.
"""

from __future__ import annotations

import re

import asyncpg
import pytest

from ledger import store
from tests.helpers import APP_ROLE

KEYED = {
    "accounts by id": store._SELECT_ACCOUNTS,  # noqa: SLF001 - the statements themselves are under test
    "transfers by id": store._SELECT_TRANSFERS,  # noqa: SLF001
    "resolutions by pending id": store._SELECT_RESOLUTIONS,  # noqa: SLF001
    "limited balances locked": store._LOCK_LIMITED_BALANCES,  # noqa: SLF001
    "balance increments": store._ADD_TO_BALANCES,  # noqa: SLF001
}


def placeholders(sql: str) -> list[str]:
    """The types of ``$n::type`` parameters, in order, for PREPARE."""
    found = dict(re.findall(r"\$(\d+)::([a-z\[\]]+)", sql))
    count = max(int(n) for n in re.findall(r"\$(\d+)", sql))
    return [found.get(str(n), "smallint") for n in range(1, count + 1)]


def empty_value(sql_type: str) -> str:
    return "'{}'" if sql_type.endswith("[]") else "0"


@pytest.mark.parametrize("name", sorted(KEYED))
async def test_a_keyed_statement_never_scans_a_ledger_table(fresh_database_url: str, name: str) -> None:
    sql = KEYED[name]
    types = placeholders(sql)
    conn = await asyncpg.connect(fresh_database_url, server_settings={"role": APP_ROLE})
    try:
        assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'ledger_transfers'") < 0
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE keyed({', '.join(types)}) AS {sql}")
        arguments = ", ".join(empty_value(t) for t in types)
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE keyed({arguments})"))
    finally:
        await conn.close()
    assert not re.search(r"Seq Scan on ledger_", plan), plan
    assert re.search(r"Index (Only )?Scan using \w+ on ledger_|Conflict Arbiter Indexes", plan), plan
