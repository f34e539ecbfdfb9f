"""The ledger's audit commands: ``ledger verify`` (the database or an export, against a trusted
checkpoint) and ``ledger export``, and how their reports are printed."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from api.settings import Settings

if TYPE_CHECKING:
    import asyncpg

    from ledger import Checkpoint, VerifyReport

T = TypeVar("T")


def print_report(report: VerifyReport, checked: str) -> int:
    print(f"log: {report.tree_size} leaves, {report.checkpoints_checked} checkpoints checked")
    if report.ok:
        print(f"OK: every {checked} verifies")
        return 0
    if report.first_bad_position is not None:
        print(f"FAILED: first bad position {report.first_bad_position}")
    else:
        print("FAILED")
    for problem in report.problems:
        where = f"[position {problem.position}] " if problem.position is not None else ""
        print(f"  {problem.kind}: {where}{problem.detail}")
    return 1


async def on_database(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` on one connection to the database in use (starting the embedded server if needed)."""
    import asyncpg

    from api.database import resolve_database

    async with resolve_database(settings) as url:
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()


UNREADABLE: Any = object()


def trusted_checkpoint(settings: Settings, path: Path | None) -> Checkpoint | None:
    """The trusted checkpoint to verify against: the file given, else the service's own if it kept one;
    ``UNREADABLE`` (after saying why) when the file cannot be read."""
    from ledger import WITNESS_FILE, read_trusted_checkpoint

    chosen = path or settings.data_dir / WITNESS_FILE
    if path is None and not chosen.exists():
        print("no trusted checkpoint kept outside the database: the log's end is checked against nothing")
        return None
    try:
        trusted = read_trusted_checkpoint(chosen)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot read the trusted checkpoint {chosen}: {exc}", file=sys.stderr)
        return UNREADABLE  # type: ignore[no-any-return]
    print(f"trusted checkpoint: size {trusted.tree_size}, from {chosen}")
    return trusted


async def verify_database(settings: Settings, trusted: Checkpoint | None = None) -> int:
    from api.actions import check_credits_match_actions
    from ledger import verify_database

    async def verify(conn: asyncpg.Connection) -> VerifyReport:
        report = await verify_database(conn, settings.ledger_log_origin, trusted=trusted)
        await check_credits_match_actions(conn, report)
        return report

    report = await on_database(settings, verify)
    return print_report(report, "leaf, checkpoint root, signature, balance and action credit")


def verify_export(path: Path, trusted: Checkpoint | None = None) -> int:
    from ledger import ExportFormatError, read_export, verify_log

    try:
        export = read_export(path)
        report = verify_log(export.records(), export.checkpoints, export.keys, export.origin, trusted)
    except (OSError, ExportFormatError, KeyError, ValueError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    print(f"export of log {export.origin!r}")
    return print_report(report, "leaf, checkpoint root and signature")


async def export(settings: Settings, output: Path) -> int:
    from ledger import export_lines

    partial = output.with_name(output.name + ".partial")

    async def write(conn: asyncpg.Connection) -> int:
        leaves = 0
        with partial.open("w", encoding="utf-8") as out:
            async for line in export_lines(conn, settings.ledger_log_origin):
                out.write(line)
                leaves += line.startswith('{"type":"leaf"')
        return leaves

    try:
        count = await on_database(settings, write)
        partial.replace(output)  # only a whole export gets the name asked for
    finally:
        partial.unlink(missing_ok=True)
    print(f"exported {count} sealed transfers to {output}")
    return 0
