"""A circuit breaker per remote system: stop calling it after consecutive failures, then try once.

Closed, it admits every call. After ``threshold`` consecutive failed calls it opens for
``cooldown_s``: calls are refused at once, sparing the remote system and the caller's time. Then it
admits one trial call; success closes it, failure opens it for another cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Circuit:
    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.failures = 0
        self.open_until = 0.0
        self.trial_running = False

    def refusal(self) -> float | None:
        """None when a call may go now (a trial, if the circuit was open); else seconds until one may."""
        if self.open_until == 0.0:
            return None
        now = self._clock()
        if now < self.open_until or self.trial_running:
            return max(0.0, self.open_until - now)
        self.trial_running = True
        return None

    def paused(self) -> bool:
        """Whether calls are refused now, with no trial due either (asking starts no trial)."""
        return self.open_until != 0.0 and (self._clock() < self.open_until or self.trial_running)

    def succeeded(self) -> None:
        self.failures = 0
        self.open_until = 0.0
        self.trial_running = False

    def failed(self) -> None:
        self.failures += 1
        if self.trial_running or self.failures >= self.threshold:
            self.open_until = self._clock() + self.cooldown_s
        self.trial_running = False
