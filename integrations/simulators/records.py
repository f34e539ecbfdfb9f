"""Generated partner records: realistic, and creditable unless a share of refusals is asked for.

Each record is dated within the last 20 days and names a mode, material or category that the
methodology in force on its day credits; second-hand records are the giving side of a new trade,
dated since the first version that credits any category. ``refusals`` (0 to 1) mixes in that share
of records the service refuses: a category the methodology names as not creditable, an implausible
trip speed or drop-off weight, or the receiving side of a trade already reported.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.actions import SecondHandTrade, local_day
from domain.fraud import MAX_DROP_OFF_G, MAX_SPEED_KMH, TransitMode
from domain.identity import PartnerKind
from domain.methodologies import MethodologyNotFound, MethodologyRegistry

#: How far back generated records go (the service refuses records older than its limit).
HISTORY = timedelta(days=20)
#: Mode mix, distance range (m) and typical speed (km/h) of generated trips.
_TRIP_MODES: dict[str, tuple[float, tuple[int, int], float]] = {
    TransitMode.METRO: (0.45, (2_000, 25_000), 35.0),
    TransitMode.E_BUS: (0.2, (1_000, 12_000), 18.0),
    TransitMode.BUS: (0.05, (1_000, 12_000), 18.0),
    TransitMode.SHARED_BIKE: (0.25, (500, 5_000), 12.0),
    TransitMode.WALKING: (0.05, (300, 3_000), 4.5),
}
_MATERIALS = {"paper": 0.3, "plastic": 0.25, "glass": 0.2, "metal": 0.1, "aluminium": 0.05, "textiles": 0.05}
_MATERIALS |= {"e_waste": 0.05}
_CATEGORIES = {"phones": 0.4, "clothing": 0.2, "books": 0.2, "electronics": 0.1, "furniture": 0.05, "toys": 0.05}


class RecordGenerator:
    """The fields of generated records of one partner kind (the simulator adds ids and account)."""

    def __init__(
        self,
        kind: PartnerKind,
        rng: random.Random,
        refusals: float,
        methodologies: MethodologyRegistry,
        utc_offset: timedelta,
    ) -> None:
        if not 0.0 <= refusals <= 1.0:
            raise ValueError("refusals is a share of the records, from 0 to 1")
        self.kind, self.rng, self.refusals = kind, rng, refusals
        self.methodologies, self.utc_offset = methodologies, utc_offset
        #: Trades whose giving side was generated: (trade_ref, category, side), the latest 1,000.
        self._given: list[tuple[str, str, SecondHandTrade]] = []

    def _categories(self, at: datetime) -> tuple[set[str], set[str]]:
        """The categories that the methodology in force at ``at`` (on its local day) credits, and those it
        names as not creditable."""
        try:
            methodology = self.methodologies.current(self.kind.value, local_day(at, self.utc_offset))
        except MethodologyNotFound:
            return set(), set()
        return set(methodology.factors), set(methodology.not_creditable)

    def _creditable(self, at: datetime) -> set[str]:
        return self._categories(at)[0]

    def _pick(self, weights: dict[str, float], at: datetime, refusal: str | None) -> tuple[str, str | None]:
        """A category by weight: a creditable one, or for an ``unsourced`` refusal one the methodology in force
        names as not creditable. Returns the category and the refusal still to be made (None once made)."""
        creditable, excluded = self._categories(at)
        names = [name for name in weights if name in (excluded if refusal == "unsourced" else creditable)]
        if not names:
            names = [name for name in weights if name in creditable] or list(weights)
            return self.rng.choices(names, weights=[weights[name] for name in names])[0], refusal and "implausible"
        return self.rng.choices(names, weights=[weights[name] for name in names])[0], (
            None if refusal == "unsourced" else refusal
        )

    def _history_start(self, now: datetime) -> datetime:
        """The start of the history window: 20 days back, or later if this kind had nothing creditable then
        (second-hand trading is credited from methodology version 2 on)."""
        start = now - HISTORY
        while start < now - timedelta(minutes=2) and not self._creditable(start):
            day = local_day(start, self.utc_offset) + timedelta(days=1)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC) - self.utc_offset
        return min(start, now - timedelta(minutes=2))

    def _moment(self, now: datetime) -> datetime:
        """A moment of the history window, at least a minute ago."""
        start = self._history_start(now)
        return start + (now - timedelta(minutes=1) - start) * self.rng.random()

    def _refusal(self) -> str | None:
        """None for a creditable record; else how to make it refused: ``unsourced`` or ``implausible``."""
        if self.rng.random() >= self.refusals:
            return None
        return self.rng.choice(["unsourced", "implausible"])

    def trip(self, next_start: datetime, now: datetime) -> tuple[dict[str, Any], datetime]:
        """A trip starting at ``next_start`` (or, out of history, a few weeks back), and when the next may start."""
        refusal = self._refusal()
        started = next_start
        if started > now - timedelta(hours=2):
            # Out of history for this account: start again a few weeks back, at a free minute.
            started = now - HISTORY + timedelta(days=2, seconds=self.rng.randint(0, 86_400))
        mode, refusal = self._pick({m: w for m, (w, _, _) in _TRIP_MODES.items()}, started, refusal)
        _, (low, high), speed = _TRIP_MODES[mode]
        distance = self.rng.randint(low, high)
        if refusal == "implausible":
            speed = 3 * MAX_SPEED_KMH[TransitMode(mode)]  # no plausible trip is that fast
        duration = timedelta(seconds=max(60, int(distance / (speed / 3.6) * self.rng.uniform(1.0, 1.4))))
        ended = started + duration
        next_start = ended + timedelta(minutes=self.rng.randint(5, 30))
        return {
            "mode": mode,
            "started_at": started.isoformat(),
            "ended_at": ended.isoformat(),
            "distance_m": distance,
        }, next_start

    def drop_off(self, now: datetime) -> dict[str, Any]:
        at = self._moment(now)
        material, refusal = self._pick(_MATERIALS, at, self._refusal())
        weight = self.rng.randint(200, 8_000)
        if refusal == "implausible":
            weight = 2 * MAX_DROP_OFF_G  # more than anyone brings to a station at once
        return {
            "station_id": f"SH-ST-{self.rng.randint(1, 500):04d}",
            "occurred_at": at.isoformat(),
            "material": material,
            "weight_g": weight,
        }

    def trade(self, trade_ref: str, now: datetime) -> dict[str, Any]:
        """The giving side (sold, donated) of a new trade; for a refusal, either an unsourced category or the
        receiving side of a trade already reported (credited to its giver)."""
        refusal, at = self._refusal(), self._moment(now)
        if refusal == "implausible" and self._given:
            known_ref, category, given = self._given[self.rng.randrange(len(self._given))]
            received = "bought" if given == SecondHandTrade.SOLD else "received"
            return {
                "occurred_at": at.isoformat(),
                "category": category,
                "trade": received,
                "trade_ref": known_ref,
                "quantity": 1,
            }
        category, _ = self._pick(_CATEGORIES, at, refusal and "unsourced")
        given = self.rng.choice([SecondHandTrade.SOLD, SecondHandTrade.SOLD, SecondHandTrade.DONATED])
        self._given = [*self._given[-999:], (trade_ref, category, given)]
        return {
            "occurred_at": at.isoformat(),
            "category": category,
            "trade": given,
            "trade_ref": trade_ref,
            "quantity": 1,
        }
