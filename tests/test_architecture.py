"""The rules of docs/architecture.md, checked rather than kept by hand.

* The import contracts in ``pyproject.toml`` (import-linter): the layer order, a domain free of web
  and database libraries, and packages used only through their faces.
* No module of the service grows past ``MAX_MODULE_LINES``.
* Only the places that own a transaction commit or roll back; services flush.
* Outside ``ledger/``, no code names a ledger table: the ledger's face is the only way in.

Each check is shown to fail: a contract on an import graph with one forbidden import added, the
others on a scratch tree holding one offending file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter import api as importlinter_api
from importlinter.application import use_cases
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract
from importlinter.contracts.protected import ProtectedContract

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "domain", "ledger", "integrations")
MAX_MODULE_LINES = 400
#: The modules that own transactions by name (``.commit(``, ``.rollback(``): the request scope. Jobs,
#: the CLI and the ledger's own writers use ``async with … begin()`` / ``transaction()`` blocks.
TRANSACTION_OWNERS = frozenset({"api/database.py"})
LEDGER_TABLES = (
    "ledger_accounts",
    "ledger_transfers",
    "ledger_balances",
    "ledger_log",
    "ledger_tree_nodes",
    "ledger_checkpoints",
    "ledger_signing_keys",
)
CONTRACT_TYPES = {"layers": LayersContract, "forbidden": ForbiddenContract, "protected": ProtectedContract}

#: For each contract, one import that breaks it.
VIOLATIONS = {
    "layers": ("ledger.store", "integrations.partners"),
    "pure-domain": ("domain.decision", "sqlalchemy"),
    "ledger-below-api": ("ledger.service", "api.settings"),
    "integrations-below-api": ("integrations.partners", "api.keys"),
    "identity-without-actions": ("api.identity.clients", "api.actions"),
    "audit-log-standalone": ("api.audit_log.service", "api.identity"),
    "ledger-face": ("api.actions.crediting", "ledger.store"),
    "identity-face": ("api.actions.runtime", "api.identity.models"),
    "actions-face": ("api.app", "api.actions.ingestion"),
    "audit-log-face": ("api.identity.clients", "api.audit_log.service"),
    "webhooks-standalone": ("api.webhooks.outbox", "api.redemptions"),
    "redemptions-face": ("api.app", "api.redemptions.redeeming"),
    "webhooks-face": ("api.redemptions.events", "api.webhooks.outbox"),
    "oversight-face": ("api.app", "api.oversight.jobs"),
    "exchange-face": ("api.app", "api.exchange.batches"),
}


def service_modules(root: Path) -> Iterator[tuple[str, str]]:
    """(path relative to ``root``, text) of every Python module of the service's packages."""
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            yield path.relative_to(root).as_posix(), path.read_text(encoding="utf-8")


def oversized_modules(root: Path) -> list[str]:
    return [
        f"{name} ({lines} lines)"
        for name, text in service_modules(root)
        if (lines := text.count("\n")) > MAX_MODULE_LINES
    ]


_TRANSACTION_CALL = re.compile(r"\.(commit|rollback)\(")


def transactions_ended_outside_their_owners(root: Path) -> list[str]:
    return [
        f"{name}:{number}: {line.strip()}"
        for name, text in service_modules(root)
        if name not in TRANSACTION_OWNERS
        for number, line in enumerate(text.splitlines(), 1)
        if _TRANSACTION_CALL.search(line)
    ]


_LEDGER_TABLE = re.compile(r"\b(" + "|".join(LEDGER_TABLES) + r")\b")


def ledger_tables_named_outside_ledger(root: Path) -> list[str]:
    return [
        f"{name}:{number}: {line.strip()}"
        for name, text in service_modules(root)
        if not name.startswith("ledger/")
        for number, line in enumerate(text.splitlines(), 1)
        if _LEDGER_TABLE.search(line)
    ]


# ------------------------------------------------------------------------------------- import contracts


def _configuration() -> dict[str, Any]:
    return importlinter_api.read_configuration(str(ROOT / "pyproject.toml"))


@pytest.fixture(scope="module")
def import_graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


def test_the_import_contracts_hold() -> None:
    """As ``lint-imports`` runs them; its report (printed on failure) names each offending import."""
    kept = use_cases.lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None, no_logo=True)
    assert kept, "an import contract is broken: see the report above, or run `lint-imports`"


def test_every_contract_has_a_violation_that_shows_it_can_fail() -> None:
    assert {c["id"] for c in _configuration()["contracts_options"]} == set(VIOLATIONS)


@pytest.mark.parametrize("contract_id", sorted(VIOLATIONS))
def test_each_contract_breaks_on_a_forbidden_import(import_graph: grimp.ImportGraph, contract_id: str) -> None:
    configuration = _configuration()
    [options] = [c for c in configuration["contracts_options"] if c["id"] == contract_id]
    contract = CONTRACT_TYPES[options["type"]](
        name=options["name"], session_options=configuration["session_options"], contract_options=options
    )
    assert contract.check(deepcopy(import_graph), verbose=False).kept
    graph = deepcopy(import_graph)
    importer, imported = VIOLATIONS[contract_id]
    graph.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    assert not contract.check(graph, verbose=False).kept


# ------------------------------------------------------------------------------- sizes, commits, tables


def test_no_module_outgrows_the_size_limit() -> None:
    assert oversized_modules(ROOT) == [], f"split these by job (docs/architecture.md): at most {MAX_MODULE_LINES} lines"


def test_only_the_request_scope_commits_or_rolls_back() -> None:
    assert transactions_ended_outside_their_owners(ROOT) == [], "services flush; the request or job scope commits"


def test_no_code_outside_the_ledger_names_a_ledger_table() -> None:
    assert ledger_tables_named_outside_ledger(ROOT) == [], "use the ledger's face (ledger/__init__.py)"


def _scratch_tree(tmp_path: Path, name: str, text: str) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_size_check_finds_a_module_one_line_too_long(tmp_path: Path) -> None:
    assert oversized_modules(_scratch_tree(tmp_path, "api/ok.py", "x = 1\n" * MAX_MODULE_LINES)) == []
    (tmp_path / "domain/big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert oversized_modules(tmp_path) == [f"domain/big.py ({MAX_MODULE_LINES + 1} lines)"]


def test_the_commit_check_finds_a_service_that_commits(tmp_path: Path) -> None:
    root = _scratch_tree(tmp_path, "api/database.py", "await session.commit()\n")
    assert transactions_ended_outside_their_owners(root) == []
    (tmp_path / "api/offers.py").write_text("async def f(session):\n    await session.commit()\n")
    assert transactions_ended_outside_their_owners(root) == ["api/offers.py:2: await session.commit()"]


def test_the_table_check_finds_a_query_of_a_ledger_table(tmp_path: Path) -> None:
    root = _scratch_tree(tmp_path, "ledger/store.py", 'SQL = "SELECT * FROM ledger_transfers"\n')
    (tmp_path / "api/views.py").write_text('origin = settings.ledger_log_origin\nSQL = "FROM ledger_balances"\n')
    assert ledger_tables_named_outside_ledger(root) == ['api/views.py:2: SQL = "FROM ledger_balances"']
