"""The embedded PostgreSQL never outlives the process that started it, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from integrations.pg_reaper import is_running, postmaster_pid

_OWNER = """
import sys, time
from pathlib import Path
from integrations.embedded_postgres import EmbeddedPostgres
EmbeddedPostgres(Path(sys.argv[1]), ephemeral=True).start()
print("ready", flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    return not is_running(pid)


def test_a_killed_owner_leaves_no_server_and_no_cluster_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(data_dir)], stdout=subprocess.PIPE, text=True)
    server: int | None = None
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        server = postmaster_pid(data_dir)
        assert server is not None and not _gone(server)
        owner.send_signal(signal.SIGKILL)  # no atexit hook, no finally: only the watcher is left to act
        owner.wait()
        deadline = time.monotonic() + 120
        while not (_gone(server) and not data_dir.exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _gone(server), "the embedded server outlived its owner"
        assert not data_dir.exists(), "the throw-away cluster was not deleted"
    finally:
        owner.kill()
        owner.wait()
        if server is not None and not _gone(server):
            os.kill(server, signal.SIGQUIT)
