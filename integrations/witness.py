"""An external checkpoint witness over HTTP: a service the operator runs or trusts, outside the database
and outside this service's data directory, that keeps the latest checkpoint the ledger signed.

Contract (witness side), JSON in the format of ``GET /v1/ledger/checkpoints/latest``:
- ``POST {url}/checkpoints`` with a checkpoint: keep it if it is larger than the one held (200 either way);
- ``GET {url}/checkpoints/latest`` → the largest checkpoint held, or 404 before the first.
Both carry ``Authorization: Bearer <token>`` when a token is configured.
"""

from __future__ import annotations

from typing import Any

import httpx

from ledger import Checkpoint, checkpoint_from_json, checkpoint_to_json


class HttpWitness:
    def __init__(self, url: str, origin: str, http: httpx.AsyncClient, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.origin = origin
        self.name = self.url
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def latest(self) -> Checkpoint | None:
        response = await self._http.get(f"{self.url}/checkpoints/latest", headers=self._headers)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: Any = response.json()
        return checkpoint_from_json(body)

    async def keep(self, checkpoint: Checkpoint) -> None:
        document = {"origin": self.origin, **checkpoint_to_json(checkpoint)}
        response = await self._http.post(f"{self.url}/checkpoints", json=document, headers=self._headers)
        response.raise_for_status()
