"""Checkpoint witness simulator: keeps the largest checkpoint it is given (``integrations.witness``).

python -m integrations.simulators.witness --port 9300
"""

from __future__ import annotations

import threading
from typing import Any

from integrations.simulators.base import SimulatorServer, run_forever


class WitnessSimulator(SimulatorServer):
    name = "witness-simulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.checkpoint: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.route("POST", "/checkpoints", self._keep)
        self.route("GET", "/checkpoints/latest", self._latest)

    def _keep(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("tree_size"), int):
            return 400, {"error": "send a checkpoint"}
        with self._lock:
            if self.checkpoint is None or body["tree_size"] > self.checkpoint["tree_size"]:
                self.checkpoint = body
            return 200, self.checkpoint

    def _latest(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            return (404, {"error": "no checkpoint yet"}) if self.checkpoint is None else (200, self.checkpoint)


if __name__ == "__main__":
    run_forever(WitnessSimulator, "a checkpoint witness: POST /checkpoints, GET /checkpoints/latest")
