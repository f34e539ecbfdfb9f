"""Serving one port from several processes, with Nagle's algorithm off on every connection.

uvicorn's supervisor binds the shared listening socket itself, with ``proto`` left at 0; accepted
connections inherit it, and asyncio only sets ``TCP_NODELAY`` on a socket that says
``IPPROTO_TCP``. A keep-alive response written in two pieces (headers, then body) then waits for
the client's delayed ACK: ~40 ms per request on Linux (measured here: a hello world fell from
~4,300 to ~720 requests/s with two workers; uvicorn issue #3149). So the listener is bound here,
as TCP, and handed to the same supervisor.
"""

from __future__ import annotations

import contextlib
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP listener that worker processes can inherit; its connections get ``TCP_NODELAY``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def run_workers(app: str, *, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve the app factory ``app`` ("module:function", importable in a new process) from ``workers``
    processes until Ctrl-C; uvicorn's supervisor restarts a worker that dies."""
    config = uvicorn.Config(
        app, factory=True, host=host, port=port, workers=workers, log_level=log_level, log_config=None, access_log=False
    )
    listener = listening_socket(host, port)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[listener]).run()
    finally:
        listener.close()
