"""The ``carbon-rewards`` command: serve the API, migrate the database, print the database URL.

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

from api.settings import Settings
from integrations.embedded_postgres import EMBEDDED_DATABASE, EmbeddedPostgres, with_database

log = logging.getLogger("carbon_rewards")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "data_dir"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


# The web stack and Alembic are imported inside the commands that need them, so that `db-url`
# (used in shell substitutions) starts quickly.


async def _serve(settings: Settings) -> None:
    import uvicorn

    from api.app import create_app
    from api.database import migrate, resolve_database

    async with resolve_database(settings) as url:
        await migrate(url, settings.db_app_role)
        app = create_app(settings, url)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())
        server = uvicorn.Server(config)
        log.info("carbon-rewards listening on http://%s:%d (docs at /schema)", settings.host, settings.port)
        await server.serve()


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carbon-rewards", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, help="embedded PostgreSQL data directory (default .data)")

    serve = commands.add_parser("serve", help="migrate the database and serve the API")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    data_dir(serve)
    data_dir(commands.add_parser("migrate", help="upgrade the database schema to the latest revision"))
    data_dir(commands.add_parser("db-url", help="print the database URL in use (last line)"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            asyncio.run(_serve(settings))
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "db-url":
            return _db_url(settings)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
