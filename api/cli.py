"""The ``carbon-rewards`` command: serve the API, migrate, print the database URL, verify the ledger,
create operators, verify an exchange batch's evidence package, run partner and exchange simulators.

With no ``DATABASE_URL`` every command runs on the embedded PostgreSQL in ``--data-dir``; ``serve``
keeps it running while it serves and stops it on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from api import ledger_commands
from api.observability import configure_logging
from api.settings import Settings
from integrations.simulators.command import add_simulate_command, simulate
from integrations.embedded_postgres import (
    EMBEDDED_DATABASE,
    EmbeddedPostgres,
    with_database,
)

log = logging.getLogger("carbon_rewards")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "data_dir", "demo", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


# The web stack and Alembic are imported inside the commands that need them, so that `db-url`
# (used in shell substitutions) starts quickly.


async def _serve(settings: Settings) -> None:
    import uvicorn

    from api.app import create_app
    from api.database import migrate_if_behind, resolve_database, service_login_url

    async with resolve_database(settings) as url:
        await migrate_if_behind(url, settings.db_app_role)
        if not settings.database_url:  # embedded: log in as the service's own role, not the superuser
            url = await service_login_url(url, settings)
        app = create_app(settings, url)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            log_config=None,  # our handler and format (api.observability)
            access_log=False,  # one line per request comes from api.observability
        )
        server = uvicorn.Server(config)
        log.info("carbon-rewards listening on http://%s:%d (docs at /schema)", settings.host, settings.port)
        await server.serve()


def _serve_workers(settings: Settings) -> None:
    """Serve from ``settings.workers`` processes on one port.

    This process prepares what the workers share (the embedded server, the migrations, the key
    files), hands them the database URL and its own settings through the environment, and leaves
    the workers to uvicorn's supervisor (``api.workers``), which restarts a worker that dies and stops
    them all on Ctrl-C; the embedded server is stopped after them.
    """
    import os

    from api.database import migrate_if_behind, service_login_url, start_embedded_database
    from api.keys import prepare_keys
    from api.metrics import reset_multiprocess_dir
    from api.workers import run_workers

    embedded = None if settings.database_url else EmbeddedPostgres(settings.data_dir / "pg")

    async def prepare_database() -> str:
        url = str(settings.database_url) if embedded is None else await start_embedded_database(embedded)
        await migrate_if_behind(url, settings.db_app_role)
        # Embedded: the workers log in as the service's own role, not the superuser.
        return url if embedded is None else await service_login_url(url, settings)

    try:
        url = asyncio.run(prepare_database())
        prepare_keys(settings)
        # The workers share their metrics through files here, so that any worker's /metrics covers all.
        shared_metrics = settings.metrics_multiprocess_dir or settings.data_dir.resolve() / "metrics"
        reset_multiprocess_dir(shared_metrics)
        os.environ.update(
            DATABASE_URL=url,
            CARBON_DATA_DIR=str(settings.data_dir.resolve()),
            CARBON_DEMO=str(settings.demo).lower(),
            PROMETHEUS_MULTIPROC_DIR=str(shared_metrics),
        )
        log.info(
            "carbon-rewards listening on http://%s:%d with %d workers (docs at /schema)",
            settings.host,
            settings.port,
            settings.workers,
        )
        run_workers(
            "api.app:app_from_environment",
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level.lower(),
        )
    finally:
        if embedded is not None:
            embedded.stop()


async def _migrate(settings: Settings) -> None:
    from api.database import migrate, resolve_database

    async with resolve_database(settings) as url:
        await migrate(url, settings.db_app_role)
        print("database migrated to head")


def _db_url(settings: Settings) -> int:
    if settings.database_url:
        print(settings.database_url)
        return 0
    embedded = EmbeddedPostgres(settings.data_dir / "pg")
    running = embedded.running_url()
    if running is None:
        print(
            f"the embedded PostgreSQL in {embedded.data_dir} is not running; start it with `carbon-rewards serve`",
            file=sys.stderr,
        )
        return 1
    print(with_database(running, EMBEDDED_DATABASE))
    return 0


def _db_shell(settings: Settings, psql_args: list[str]) -> int:
    """psql on the database in use: the embedded one must be running (``serve``); with ``DATABASE_URL``, that."""
    import subprocess

    import pgserver

    if settings.database_url:
        url = str(settings.database_url)
    else:
        running = EmbeddedPostgres(settings.data_dir / "pg").running_url()
        if running is None:
            print(
                f"the embedded PostgreSQL in {settings.data_dir / 'pg'} is not running; start it with "
                "`carbon-rewards serve`",
                file=sys.stderr,
            )
            return 1
        url = with_database(running, EMBEDDED_DATABASE)
    psql = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    return subprocess.call([str(psql), url, *psql_args])


def _operator_password() -> str:
    """From ``CARBON_OPERATOR_PASSWORD``, else asked twice on the terminal."""
    import getpass
    import os

    password = os.environ.get("CARBON_OPERATOR_PASSWORD")
    if password:
        return password
    if not sys.stdin.isatty():
        raise SystemExit("carbon-rewards: no terminal to ask for the password on: set CARBON_OPERATOR_PASSWORD")
    password = getpass.getpass("password: ")
    if getpass.getpass("repeat password: ") != password:
        raise SystemExit("the passwords differ")
    return password


async def _create_operator(settings: Settings, username: str, role: str) -> int:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from api.database import migrate_if_behind, open_engine, resolve_database
    from api.identity import create_operator, password_hasher
    from api.request_meta import RequestMeta
    from domain.errors import CarbonRewardsError
    from domain.identity import Role

    password = _operator_password()
    async with resolve_database(settings) as url:
        await migrate_if_behind(url, settings.db_app_role)
        engine = open_engine(settings, url)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
                operator = await create_operator(
                    session, password_hasher(), username, password, Role(f"operator_{role}"), RequestMeta("cli", None)
                )
        except CarbonRewardsError as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 1
        finally:
            await engine.dispose()
    print(f"operator {operator.username} ({role}) created: {operator.id}")
    return 0


def _verify_evidence(path: Path) -> int:
    from integrations.evidence import verify_evidence

    try:
        report = verify_evidence(path)
    except OSError as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    print(
        f"evidence package {path}: {report.reductions} reductions ({report.total_g} g CO2e), "
        f"{report.adjustments} adjustments ({report.adjustment_g} g); proofs against the checkpoint of "
        f"{report.tree_size} leaves signed by key {report.signed_by} (compare it with the programme's published key)"
    )
    if report.ok:
        print("OK: every reduction recomputed from its methodology, every proof and signature checked")
        return 0
    print(f"FAILED: {report.problems[0]}")
    for problem in report.problems[1:20]:
        print(f"  also: {problem}")
    if len(report.problems) > 20:
        print(f"  … {len(report.problems) - 20} more")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carbon-rewards", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, help="embedded PostgreSQL data directory (default .data)")

    serve = commands.add_parser("serve", help="migrate the database and serve the API")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument(
        "--demo", action="store_true", default=None, help="demo mode: one-time codes go to the log if no SMS gateway"
    )
    serve.add_argument("--workers", type=int, help="service processes sharing the port (default 1; one per core)")
    data_dir(serve)
    data_dir(commands.add_parser("migrate", help="upgrade the database schema to the latest revision"))
    data_dir(commands.add_parser("db-url", help="print the database URL in use (last line)"))
    shell = commands.add_parser(
        "db-shell",
        help="open psql on the database in use (the psql the embedded server ships); "
        "arguments after -- go to psql, e.g. -- -c 'SELECT 1'",
    )
    data_dir(shell)
    shell.add_argument("psql_args", nargs=argparse.REMAINDER)
    ledger = commands.add_parser("ledger", help="audit the ledger's tamper-evident log")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_commands.add_parser(
        "verify", help="recompute every leaf, root, signature and balance; exit 1 naming the first bad position"
    )
    verify.add_argument("--export", type=Path, help="verify this export file offline instead of the database")
    verify.add_argument(
        "--trusted-checkpoint",
        type=Path,
        help="a checkpoint kept outside the database (the JSON of GET /v1/ledger/checkpoints/latest); the log "
        "must extend it. Default: the one the service keeps in the data directory, if any",
    )
    data_dir(verify)
    export = ledger_commands.add_parser("export", help="write keys, checkpoints and sealed transfers (JSON Lines)")
    export.add_argument("--output", type=Path, required=True)
    data_dir(export)
    operator = commands.add_parser("operator", help="manage operator accounts")
    operator_commands = operator.add_subparsers(dest="operator_command", required=True)
    create = operator_commands.add_parser(
        "create", help="create an operator (password from CARBON_OPERATOR_PASSWORD or a prompt)"
    )
    create.add_argument("--username", required=True)
    create.add_argument("--role", choices=("admin", "auditor"), required=True)
    data_dir(create)
    exchange = commands.add_parser("exchange", help="the carbon exchange's evidence packages")
    exchange_commands = exchange.add_subparsers(dest="exchange_command", required=True)
    exchange_verify = exchange_commands.add_parser(
        "verify",
        help="check an evidence package offline: recompute every reduction and total, check every proof and "
        "signature; exit 1 naming the first thing that does not match",
    )
    exchange_verify.add_argument("file", type=Path)
    add_simulate_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        print(f"carbon-rewards: bad configuration (CARBON_* environment): {problems}", file=sys.stderr)
        return 2
    configure_logging(settings)
    refusal = _refusal(args, settings)
    if refusal is not None:
        print(f"carbon-rewards: {refusal}", file=sys.stderr)
        return 1
    try:
        if args.command == "serve" and settings.workers > 1:
            _serve_workers(settings)
        elif args.command == "serve":
            asyncio.run(_serve(settings))
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "db-shell":
            return _db_shell(settings, [a for a in args.psql_args if a != "--"])
        elif args.command == "db-url":
            return _db_url(settings)
        elif args.command == "ledger" and args.ledger_command == "verify":
            trusted = ledger_commands.trusted_checkpoint(settings, args.trusted_checkpoint)
            if trusted is ledger_commands.UNREADABLE:
                return 2
            if args.export:
                return ledger_commands.verify_export(args.export, trusted)
            return asyncio.run(ledger_commands.verify_database(settings, trusted))
        elif args.command == "ledger" and args.ledger_command == "export":
            return asyncio.run(ledger_commands.export(settings, args.output))
        elif args.command == "exchange" and args.exchange_command == "verify":
            return _verify_evidence(args.file)
        elif args.command == "simulate":
            return simulate(args)
        elif args.command == "operator" and args.operator_command == "create":
            return asyncio.run(_create_operator(settings, args.username, args.role))
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - a command ends in one clear line, never a traceback
        log.debug("command failed", exc_info=exc)
        print(f"carbon-rewards: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


#: Commands that work on an existing database: they never create one (``serve`` does).
_NEEDS_A_DATABASE = frozenset({"migrate", "db-url", "db-shell", "ledger", "operator"})


def _refusal(args: argparse.Namespace, settings: Settings) -> str | None:
    """Why the command cannot run, said before it creates or starts anything; None when it can."""
    import socket

    if args.command == "serve":
        with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, settings.port))
            except OSError as exc:
                return f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        return None
    if args.command == "ledger" and getattr(args, "export", None):
        return None  # an export file is verified offline
    if args.command == "ledger" and args.ledger_command == "export" and not args.output.parent.is_dir():
        return f"cannot write {args.output}: no directory {args.output.parent}"
    if args.command in _NEEDS_A_DATABASE and not settings.database_url:
        cluster = settings.data_dir / "pg"
        if not (cluster / "PG_VERSION").exists():
            return (
                f"no database in {settings.data_dir.resolve()}: `carbon-rewards serve --data-dir DIR` creates one, "
                "or set DATABASE_URL"
            )
    return None


if __name__ == "__main__":
    sys.exit(main())
