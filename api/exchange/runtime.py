"""What the exchange feature needs besides a session, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from api.keys import ServerSecret


@dataclass(frozen=True)
class ExchangeRuntime:
    #: Seals the answers kept for Idempotency-Key retries.
    secret: ServerSecret


def open_exchange(secret: ServerSecret) -> ExchangeRuntime:
    return ExchangeRuntime(secret)
