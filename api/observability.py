"""Logs an operations team can use: one format, a request id on every line of a request, one line per
request, and the same id in the response header and in every problem+json body.

Logs are JSON lines when standard error is not a terminal (a service under a supervisor, a
container), readable lines on a terminal (``CARBON_LOG_FORMAT`` forces either). A request's id is
the ``X-Request-ID`` its proxy sent, when the peer is one of ``CARBON_TRUSTED_PROXIES`` and the id is
short and plain, and a new one otherwise; it is returned in ``X-Request-ID``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
import contextvars
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from api.client_address import Network, is_trusted_proxy, parse_networks
from api.settings import Settings

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
#: A proxy's request id is kept only if it is this plain (it ends up in logs and headers).
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Attributes every LogRecord has; anything else on a record was passed as ``extra`` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
log = logging.getLogger("carbon_rewards.requests")


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


def shared_work_context() -> contextvars.Context:
    """The current context without the request's id: for a task one request starts on behalf of several
    (an ingestion group), whose log lines must not carry the id of whichever request came first."""
    context = contextvars.copy_context()
    context.run(_REQUEST_ID.set, None)
    return context


def _install_request_id_factory() -> None:
    """Every log record made during a request carries its id, whichever handler writes it."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_adds_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = _REQUEST_ID.get()
        return record

    factory._adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                line[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{text} [request {request_id}]" if request_id else text


def configure_logging(settings: Settings) -> None:
    """One handler on the root logger, in the chosen format; the migration tool's chatter stays below INFO."""
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    _install_request_id_factory()
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_carbon_rewards", False):
            root.removeHandler(old)
    handler._carbon_rewards = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for chatty in ("alembic", "alembic.runtime.migration"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


class RequestIds:
    """ASGI wrapper: the request id, the ``X-Request-ID`` header, and one log line per request."""

    def __init__(
        self,
        app: Any,
        trusted_proxies: list[str],
        on_finished: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self.proxies: tuple[Network, ...] = parse_networks(trusted_proxies)
        self.on_finished = on_finished

    def _trusted(self, scope: Any) -> bool:
        client = scope.get("client")
        return bool(client) and is_trusted_proxy(client[0], self.proxies)

    def _request_id(self, scope: Any) -> str:
        if self._trusted(scope):
            for name, value in scope.get("headers", []):
                if name == b"x-request-id":
                    sent = value.decode("latin-1")
                    if _PLAIN_ID.match(sent):
                        return sent
        return uuid.uuid4().hex

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        token = _REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method, route = scope.get("method", ""), scope.get("path_template") or None
            log.info(
                "%s %s %d",
                method,
                route or "(no route)",
                status,
                extra={"method": method, "route": route, "status": status, "duration_ms": round(seconds * 1000, 1)},
            )
            if self.on_finished is not None:
                self.on_finished(method, route or "(no route)", status, seconds)
            _REQUEST_ID.reset(token)
