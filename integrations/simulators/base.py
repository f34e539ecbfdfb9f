"""A small JSON HTTP server in a background thread, the base of every simulator."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

#: A route: (method, path) -> handler(query, body) -> (status, JSON body)
Handler = Callable[[dict[str, list[str]], Any], tuple[int, Any]]


@dataclass(frozen=True)
class SimRequest:
    """Everything a pattern route sees: the raw target (for signatures), path parameters, headers, body."""

    method: str
    target: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Dripped:
    """An answer sent one byte every ``every_s`` seconds (a partner that keeps a call open for long)."""

    payload: Any
    every_s: float


#: A pattern route's handler: request -> (status, JSON body, or bytes sent as they are); a status of
#: None closes the connection with no answer at all (an answer lost on the way).
PatternHandler = Callable[[SimRequest], tuple[int | None, Any]]


class _Server(ThreadingHTTPServer):
    #: Room for many simultaneous connections (the default backlog of 5 drops SYNs under load).
    request_queue_size = 256

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """End every open connection, kept-alive ones included: a stopped server answers nothing more."""
        with self._connections_lock:
            open_now = list(self.connections)
        for connection in open_now:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class SimulatorServer:
    """Serves ``routes`` on 127.0.0.1 (port 0 = any free port) until ``stop()``."""

    name = "simulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}
        self._patterns: list[tuple[str, re.Pattern[str], PatternHandler]] = []
        simulator = self

        class RequestHandler(BaseHTTPRequestHandler):
            # Keep-alive: every answer carries a Content-Length, so clients may reuse connections.
            protocol_version = "HTTP/1.1"

            def _dispatch(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                handler = simulator._routes.get((method, url.path))
                if handler is None:
                    for route_method, pattern, pattern_handler in simulator._patterns:
                        match = pattern.fullmatch(url.path)
                        if route_method == method and match:
                            request = SimRequest(
                                method,
                                self.path,
                                {k: unquote(v) for k, v in match.groupdict().items()},
                                parse_qs(url.query),
                                {k.lower(): v for k, v in self.headers.items()},
                                raw,
                            )
                            status, payload = pattern_handler(request)
                            if status is None:
                                self.close_connection = True
                                return
                            self._reply(status, payload)
                            return
                    self._reply(404, {"error": "not_found"})
                    return
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    self._reply(400, {"error": "invalid_json"})
                    return
                status, payload = handler(parse_qs(url.query), body)
                self._reply(status, payload)

            def _reply(self, status: int, payload: Any) -> None:
                drip = payload.every_s if isinstance(payload, Dripped) else None
                payload = payload.payload if isinstance(payload, Dripped) else payload
                raw_bytes = isinstance(payload, bytes)
                data = payload if raw_bytes else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if raw_bytes else "application/json")
                self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    if drip is None:
                        self.wfile.write(data)
                        return
                    for index in range(len(data)):
                        self.wfile.write(data[index : index + 1])
                        self.wfile.flush()
                        if simulator.stopping.wait(drip):
                            return
                except (BrokenPipeError, ConnectionResetError):
                    return  # the caller gave up (a timeout): nothing to answer

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
                self._dispatch("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._dispatch("POST")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._handler = RequestHandler
        self._server = _Server((host, port), RequestHandler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        # Set by stop(): handlers that wait on it (a slow answer) finish instead of outliving the server.
        self.stopping = threading.Event()

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method, path)] = handler

    def route_pattern(self, method: str, pattern: str, handler: PatternHandler) -> None:
        """Route ``/accounts/{ref}/verify``-style paths; ``{name}`` matches one percent-decoded segment."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._patterns.append((method, re.compile(regex), handler))

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SimulatorServer:
        self.stopping.clear()
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self._server.drop_connections()

    def restart(self) -> SimulatorServer:
        """Listen again on the same port after ``stop()``: an outside system that went down comes back."""
        self._server = _Server(self._server.server_address[:2], self._handler)
        self._server.daemon_threads = True
        return self.start()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_forever(factory: Callable[[str, int], SimulatorServer], description: str) -> None:
    """Command-line entry: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve_until_interrupted(factory(args.host, args.port))


def serve_until_interrupted(server: SimulatorServer) -> None:
    """Serve until Ctrl-C (or SIGTERM, turned into one by the caller), then stop the server."""
    server.start()
    print(f"{server.name} listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
