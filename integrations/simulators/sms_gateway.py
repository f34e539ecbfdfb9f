"""SMS gateway simulator: accepts ``POST /send`` ``{phone, text}`` and keeps every message.

``GET /messages?phone=+86…`` lists what was sent (newest last), so a demo user or a test can read
the one-time code; ``POST /control`` ``{"fail": true}`` makes it answer 503 until switched back.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from integrations.simulators.base import SimulatorServer, run_forever


class SmsGatewaySimulator(SimulatorServer):
    name = "sms-gateway-simulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.messages: list[dict[str, Any]] = []
        self.failing = False
        self._lock = threading.Lock()
        self.route("POST", "/send", self._send)
        self.route("GET", "/messages", self._list)
        self.route("POST", "/control", self._control)

    @property
    def send_url(self) -> str:
        return f"{self.url}/send"

    def _send(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if self.failing:
            return 503, {"error": "unavailable"}
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("phone", "text")):
            return 400, {"error": "phone and text are required"}
        with self._lock:
            self.messages.append({"phone": body["phone"], "text": body["text"], "at": time.time()})
        return 202, {"status": "queued"}

    def _list(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        phone = query.get("phone", [None])[0]
        with self._lock:
            return 200, [m for m in self.messages if phone is None or m["phone"] == phone]

    def _control(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self.failing = bool(isinstance(body, dict) and body.get("fail"))
        return 200, {"failing": self.failing}

    def messages_to(self, phone: str) -> list[str]:
        with self._lock:
            return [m["text"] for m in self.messages if m["phone"] == phone]


if __name__ == "__main__":
    run_forever(SmsGatewaySimulator, __doc__.split("\n\n")[0])
