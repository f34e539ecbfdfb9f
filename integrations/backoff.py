"""Exponential backoff with jitter, the one rule every retry of the service follows.

The n-th retry waits ``base_s × 2^(n−1)``, at most ``cap_s``, times a random factor in [0.5, 1.5):
retries of many callers that failed together spread out instead of arriving together again.
"""

from __future__ import annotations

import math
import random


def backoff_s(retry: int, base_s: float, cap_s: float = math.inf) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
    return min(cap_s, base_s * 2 ** max(0, retry - 1)) * random.uniform(0.5, 1.5)
