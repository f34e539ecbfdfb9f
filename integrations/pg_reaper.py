"""Stops an embedded PostgreSQL once the process that started it is gone, however it went.

``pgserver`` stops its server from an ``atexit`` hook, which never runs when the owner is killed
(SIGKILL, or a pytest-xdist worker torn down by its controller). The owner therefore starts this
watcher in a session of its own, holding the write end of a pipe to the watcher's stdin. The pipe
closes when the owner exits in any way; the watcher then asks the postmaster for a fast shutdown
(SIGINT), escalates to an immediate one (SIGQUIT) if that hangs, and for a throw-away cluster
deletes its directory.

    python -m integrations.pg_reaper DATA_DIR stop|delete

Only the standard library is imported, so the watcher costs little while it waits.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

_FAST_SHUTDOWN_S = 60.0


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid on the first line of ``postmaster.pid``, or None when the server is not running there."""
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first) if first.strip().isdigit() else None


def is_running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:  # a zombie still answers kill(pid, 0), yet it has stopped
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stop_server(data_dir: Path) -> None:
    """Shut the postmaster of ``data_dir`` down, fast if it can, immediately if it must."""
    pid = postmaster_pid(data_dir)
    if pid is None or not is_running(pid):
        return
    for sig, patience in ((signal.SIGINT, _FAST_SHUTDOWN_S), (signal.SIGQUIT, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, patience):
            return


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("stop", "delete"):
        print(__doc__, file=sys.stderr)
        return 2
    data_dir, mode = Path(argv[0]), argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()  # returns at end of file: the owner closed the pipe or died
    stop_server(data_dir)
    if mode == "delete":
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
