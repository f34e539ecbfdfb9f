"""Webhook receiver simulator: a merchant's or partner's endpoint for carbon-rewards' events.

``POST /webhook`` checks the ``X-Carbon-Signature`` with the endpoint's secret (``configure``) and
keeps each event once by its ``X-Carbon-Event-Id`` (delivery is at least once), answering 204; a
bad signature is 401. ``fail_next(n)`` answers the next ``n`` deliveries with 503, and ``stop()`` /
``restart()`` take the endpoint down and bring it back on the same port. ``GET /events`` lists the
events received, so a demo user can watch them:

    python -m integrations.simulators.webhook_receiver --port 9100
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from domain.errors import CarbonRewardsError
from domain.signatures import SIGNATURE_HEADER, verify
from integrations.simulators.base import SimRequest, SimulatorServer, run_forever


class WebhookReceiver(SimulatorServer):
    name = "webhook-receiver-simulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.secret: str | None = None
        self.events: dict[str, dict[str, Any]] = {}
        self.deliveries = 0
        self.bad_signatures = 0
        self._failures_left = 0
        self._lock = threading.Lock()
        self.route_pattern("POST", "/webhook", self._receive)
        self.route("GET", "/events", lambda query, body: (200, list(self.events.values())))

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhook"

    def configure(self, secret: str) -> None:
        """The signing secret the endpoint's registration answered."""
        self.secret = secret

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures_left = count

    def _receive(self, request: SimRequest) -> tuple[int, Any]:
        with self._lock:
            self.deliveries += 1
            if self._failures_left > 0:
                self._failures_left -= 1
                return 503, {"error": "unavailable"}
        if self.secret is not None:
            path = request.target
            try:
                verify(
                    request.headers.get(SIGNATURE_HEADER.lower()),
                    self.secret,
                    int(time.time()),
                    "POST",
                    path,
                    request.body,
                )
            except CarbonRewardsError:
                with self._lock:
                    self.bad_signatures += 1
                return 401, {"error": "bad signature"}
        event = json.loads(request.body)
        if event.get("id") != request.headers.get("x-carbon-event-id"):
            return 400, {"error": "the body's id differs from X-Carbon-Event-Id"}
        with self._lock:
            self.events.setdefault(event["id"], event)
        return 204, b""

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events.values() if e["type"] == event_type]


if __name__ == "__main__":
    run_forever(WebhookReceiver, __doc__.split("\n\n")[0])
