"""Carbon exchange simulator: the exchange's batch API, for tests and demos.

``POST /batches`` takes a batch (JSON) with ``Authorization: Bearer <token>`` and ``Idempotency-Key:
<batch id>``, and answers a receipt: ``201`` the first time, ``200`` with the same receipt for a batch
it already holds (it holds each batch once). ``GET /batches`` lists what it holds. ``fail_next(n)``
answers the next ``n`` submissions with 503; ``lose_next_answer()`` keeps the next batch but closes the
connection without answering, as a network would lose the answer.

    CARBON_EXCHANGE_TOKEN=… python -m integrations.simulators.exchange --port 9200
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from typing import Any

from integrations.simulators.base import SimRequest, SimulatorServer, run_forever


class ExchangeSimulator(SimulatorServer):
    name = "exchange-simulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        super().__init__(host, port)
        self.token = token if token is not None else os.environ.get("CARBON_EXCHANGE_TOKEN")
        self.batches: dict[str, dict[str, Any]] = {}
        self.submissions = 0
        self._failures_left = 0
        self._lose_next = False
        self._lock = threading.Lock()
        self.route_pattern("POST", "/batches", self._submit)
        self.route("GET", "/batches", lambda query, body: (200, list(self.batches.values())))

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures_left = count

    def lose_next_answer(self) -> None:
        with self._lock:
            self._lose_next = True

    def _submit(self, request: SimRequest) -> tuple[int | None, Any]:
        with self._lock:
            self.submissions += 1
            if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
                return 401, {"error": "unauthorized"}
            if self._failures_left > 0:
                self._failures_left -= 1
                return 503, {"error": "unavailable"}
            batch_id = request.headers.get("idempotency-key")
            if not batch_id:
                return 400, {"error": "Idempotency-Key (the batch id) is required"}
            try:
                summary = json.loads(request.body)
            except ValueError:
                return 400, {"error": "the body is not JSON"}
            held = self.batches.get(batch_id)
            status = 200
            if held is None:
                held = {"batch_id": batch_id, "receipt_id": f"rcpt-{uuid.uuid4().hex[:12]}", "summary": summary}
                self.batches[batch_id] = held
                status = 201
            if self._lose_next:
                self._lose_next = False
                return None, None
            return status, {"batch_id": batch_id, "receipt_id": held["receipt_id"], "status": "accepted"}


if __name__ == "__main__":
    run_forever(ExchangeSimulator, __doc__.split("\n\n")[0])
