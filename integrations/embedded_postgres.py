"""An embedded PostgreSQL server (the ``pgserver`` package) for machines with nothing installed.

The server listens only on a Unix socket inside its data directory. Whoever starts it stops it:
``stop()`` (also called on context exit, and by ``pgserver`` at interpreter exit). A process that is
killed runs neither, so a watcher (``integrations.pg_reaper``) stops the server when its owner is gone.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import quote

import asyncpg

log = logging.getLogger(__name__)

#: The database the service uses inside the embedded server.
EMBEDDED_DATABASE = "carbon_rewards"


def _quiet_pgserver() -> None:
    # pgserver resolves a runtime dir at import; without XDG_RUNTIME_DIR platformdirs warns.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    # pgserver logs every pg_ctl call at INFO; only its warnings matter to us.
    logging.getLogger("pgserver").setLevel(logging.WARNING)


class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in ``data_dir`` and survives restarts (unless ``ephemeral``)."""

    def __init__(self, data_dir: Path, *, ephemeral: bool = False) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.ephemeral = ephemeral
        self._server = None
        self._reaper: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start (or attach to an already running) server; returns the superuser URL of database ``postgres``."""
        _quiet_pgserver()
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        starting = self.running_url() is None
        if starting:  # attaching to a running server is not worth a line
            log.info("starting embedded PostgreSQL in %s", self.data_dir)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="delete" if self.ephemeral else "stop")
        if starting:
            mode = "delete" if self.ephemeral else "stop"
            self._reaper = subprocess.Popen(
                [sys.executable, "-m", "integrations.pg_reaper", str(self.data_dir), mode],
                stdin=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C or a kill of our process group must not stop the watcher first
            )
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()
        if self._reaper is not None:
            reaper, self._reaper = self._reaper, None
            assert reaper.stdin is not None
            reaper.stdin.close()
            try:
                reaper.wait(timeout=30)
            except subprocess.TimeoutExpired:
                reaper.kill()
                reaper.wait()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running_url(self) -> str | None:
        """The URL of a server already running on this data dir (started by another process), or None."""
        _quiet_pgserver()
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir) if (self.data_dir / "postmaster.pid").exists() else None
        if info is None or not info.is_running() or info.status != "ready":
            return None
        return info.get_uri()


def with_database(url: str, database: str) -> str:
    """The same server URL, pointed at another database."""
    head, sep, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{quote(database)}{sep}{query}"


async def ensure_database(admin_url: str, database: str) -> None:
    """Create ``database`` if it does not exist (CREATE DATABASE cannot run in a transaction)."""
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def drop_database(admin_url: str, database: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()

