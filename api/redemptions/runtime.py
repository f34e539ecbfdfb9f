"""What the redemptions feature needs besides a session, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from api.keys import ServerSecret
from api.settings import Settings


@dataclass(frozen=True)
class RedemptionsRuntime:
    secret: ServerSecret
    #: How long a code, and the ledger hold behind it, lives.
    code_ttl_s: int
    capture_failures_per_merchant: int
    capture_failure_window_s: int


def open_redemptions(settings: Settings, secret: ServerSecret) -> RedemptionsRuntime:
    return RedemptionsRuntime(
        secret=secret,
        code_ttl_s=settings.redemption_code_ttl_s,
        capture_failures_per_merchant=settings.capture_failures_per_merchant,
        capture_failure_window_s=settings.capture_failure_window_s,
    )
