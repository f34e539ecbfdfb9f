"""The carbon exchange's HTTP API: submitting a batch of verified reductions.

``POST {CARBON_EXCHANGE_URL}/batches`` with ``Authorization: Bearer {CARBON_EXCHANGE_TOKEN}`` and the
batch's summary as JSON; ``Idempotency-Key`` is the batch id, so a batch submitted again (after a
lost answer, or a crash between submitting and recording) is recognised and answered with the same
receipt. A 2xx answer carries ``receipt_id``. 408, 429, 5xx, a timeout or a connection failure is
worth trying again later; any other answer rejects the batch (an operator must look at it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Submitted:
    """How one submission ended: a receipt, or why not (``retry``: worth trying again later)."""

    receipt_id: str | None = None
    error: str | None = None
    retry: bool = False


class ExchangeClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, token: str) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._token = token

    async def submit(self, batch_id: str, summary: dict[str, Any]) -> Submitted:
        try:
            response = await self._http.post(
                f"{self.base_url}/batches",
                json=summary,
                headers={"Authorization": f"Bearer {self._token}", "Idempotency-Key": batch_id},
            )
        except httpx.TimeoutException:
            return Submitted(error="the exchange timed out", retry=True)
        except httpx.HTTPError as exc:
            return Submitted(error=f"the exchange could not be reached ({type(exc).__name__})", retry=True)
        if response.is_success:
            try:
                receipt = response.json().get("receipt_id")
            except ValueError:
                receipt = None
            if not isinstance(receipt, str) or not receipt:
                return Submitted(error="the exchange's answer has no receipt_id", retry=True)
            return Submitted(receipt_id=receipt)
        retry = response.status_code in (408, 429) or response.status_code >= 500
        return Submitted(error=f"the exchange answered {response.status_code}: {response.text[:200]}", retry=retry)
