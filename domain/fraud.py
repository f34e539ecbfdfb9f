"""Anti-fraud rules for low-carbon actions, each refusal with a stable reason code.

Plain functions over plain values, so that ingestion (push or claim) and the operator review both
apply exactly the same rules. The bounds are this project's design choices, documented in the
methodologies' notes: they reject what no honest record can look like, not what is merely unusual
(unusual volumes go to review: ``AnomalyRule``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class TransitMode(StrEnum):
    METRO = "metro"
    BUS = "bus"
    #: A battery-electric bus (the operator knows which of its buses are).
    E_BUS = "e_bus"
    SHARED_BIKE = "shared_bike"
    WALKING = "walking"


class Refusal(StrEnum):
    DURATION_NOT_POSITIVE = "duration_not_positive"
    DISTANCE_TOO_SHORT = "distance_too_short"
    DISTANCE_TOO_LONG = "distance_too_long"
    TOO_FAST = "too_fast"
    IN_THE_FUTURE = "in_the_future"
    TOO_OLD = "too_old"
    OVERLAPPING_TRIP = "overlapping_trip"
    SAME_TRIP_OTHER_PARTNER = "same_trip_other_partner"
    WEIGHT_NOT_POSITIVE = "weight_not_positive"
    WEIGHT_TOO_LARGE = "weight_too_large"


#: Highest plausible average speed per mode, in km/h.
MAX_SPEED_KMH = {
    TransitMode.WALKING: 7,
    TransitMode.SHARED_BIKE: 25,
    TransitMode.BUS: 60,
    TransitMode.E_BUS: 60,
    TransitMode.METRO: 100,
}
MIN_TRIP_M = 200
MAX_TRIP_M = 100_000
#: Records may arrive this late (partners batch; residents claim) before they are refused as too old.
CLAIM_WINDOW = timedelta(days=30)
#: Clock skew tolerated between a partner's clock and ours.
CLOCK_SKEW = timedelta(minutes=5)
#: Consecutive legs (metro to bike) may touch or overlap by this much without being "overlapping trips".
TRANSFER_TOLERANCE = timedelta(minutes=2)
#: The most one drop-off at a sorting station can plausibly weigh.
MAX_DROP_OFF_G = 50_000


@dataclass(frozen=True)
class Trip:
    mode: TransitMode
    started_at: datetime
    ended_at: datetime
    distance_m: int


def check_time(occurred_at: datetime, now: datetime, window: timedelta = CLAIM_WINDOW) -> Refusal | None:
    """A record must describe the past, and the recent past."""
    if occurred_at > now + CLOCK_SKEW:
        return Refusal.IN_THE_FUTURE
    if occurred_at < now - window:
        return Refusal.TOO_OLD
    return None


def check_trip(trip: Trip, now: datetime, window: timedelta = CLAIM_WINDOW) -> Refusal | None:
    """Plausibility of one trip on its own: time, duration, distance and average speed for its mode."""
    if (refusal := check_time(trip.ended_at, now, window)) is not None:
        return refusal
    duration_s = (trip.ended_at - trip.started_at).total_seconds()
    if duration_s <= 0:
        return Refusal.DURATION_NOT_POSITIVE
    if trip.distance_m < MIN_TRIP_M:
        return Refusal.DISTANCE_TOO_SHORT
    if trip.distance_m > MAX_TRIP_M:
        return Refusal.DISTANCE_TOO_LONG
    # Compare in integers: distance_m / duration_s > max_kmh / 3.6  ⇔  distance_m * 3600 > max_kmh * 1000 * duration_s
    if trip.distance_m * 3600 > MAX_SPEED_KMH[trip.mode] * 1000 * duration_s:
        return Refusal.TOO_FAST
    return None


def _overlap(a: Trip, b: Trip) -> timedelta:
    return min(a.ended_at, b.ended_at) - max(a.started_at, b.started_at)


class TripHistory:
    """A resident's credited and held trips, ordered by start, so that the trips a new one may overlap
    are found by bisection instead of by comparing it with every trip (a batch of a few hundred trips
    of one resident made that quadratic).

    Alongside the starts it keeps the running maximum of the ends: the first trip whose running
    maximum passes ``new.start + tolerance`` is the earliest that can end late enough to overlap.
    """

    def __init__(self, trips: Iterable[Trip] = ()) -> None:
        self._trips: list[Trip] = []
        self._starts: list[datetime] = []
        self._latest_end: list[datetime] = []
        for trip in trips:
            self.add(trip)

    def add(self, trip: Trip) -> None:
        at = bisect_right(self._starts, trip.started_at)
        self._trips.insert(at, trip)
        self._starts.insert(at, trip.started_at)
        self._latest_end.insert(at, trip.ended_at)
        for i in range(at, len(self._trips)):  # only the tail after an out-of-order insertion
            running = max(self._latest_end[i - 1], self._trips[i].ended_at) if i else self._trips[i].ended_at
            if i > at and running == self._latest_end[i]:
                break
            self._latest_end[i] = running

    def first_overlap(self, trip: Trip, tolerance: timedelta) -> Trip | None:
        """The earliest-starting trip that overlaps ``trip`` by more than ``tolerance``, if any."""
        first = bisect_right(self._latest_end, trip.started_at + tolerance)
        last = bisect_left(self._starts, trip.ended_at - tolerance)
        for other in self._trips[first:last]:
            if _overlap(trip, other) > tolerance:
                return other
        return None


def check_against_earlier(trip: Trip, earlier: TripHistory | Iterable[Trip]) -> Refusal | None:
    """The cross-partner dedupe rule and the one-body rule, against the resident's credited trips.

    * The same mode over overlapping times (beyond the transfer tolerance) is the same real-world
      trip reported twice, e.g. by the transit card and by a MaaS app: ``same_trip_other_partner``.
    * Any other mode over overlapping times is impossible for one person: ``overlapping_trip``.

    When several trips overlap it, the one that started first decides which.
    """
    history = earlier if isinstance(earlier, TripHistory) else TripHistory(earlier)
    other = history.first_overlap(trip, TRANSFER_TOLERANCE)
    if other is None:
        return None
    return Refusal.SAME_TRIP_OTHER_PARTNER if other.mode == trip.mode else Refusal.OVERLAPPING_TRIP


def check_drop_off(weight_g: int, occurred_at: datetime, now: datetime) -> Refusal | None:
    """Plausibility of a recyclables drop-off weighed at a station."""
    if (refusal := check_time(occurred_at, now)) is not None:
        return refusal
    if weight_g <= 0:
        return Refusal.WEIGHT_NOT_POSITIVE
    if weight_g > MAX_DROP_OFF_G:
        return Refusal.WEIGHT_TOO_LARGE
    return None


@dataclass(frozen=True)
class Capped:
    """Points after the daily and monthly caps; ``cut`` says how many were withheld and why."""

    credited: int
    cut: int
    reason: str | None


def apply_caps(points: int, *, today: int, daily_cap: int, this_month: int, monthly_cap: int) -> Capped:
    """Credit at most what is left under both caps; the rest is not credited, and the reason says which cap."""
    left_today = max(0, daily_cap - today)
    left_month = max(0, monthly_cap - this_month)
    credited = max(0, min(points, left_today, left_month))
    if credited == points:
        return Capped(points, 0, None)
    reason = "daily_cap_reached" if left_today <= left_month else "monthly_cap_reached"
    return Capped(credited, points - credited, reason)


#: How far back a partner's usual hourly volume is measured.
VOLUME_HISTORY = timedelta(days=7)


def hour_of(moment: datetime) -> datetime:
    """The start of the clock hour ``moment`` falls in (partners' volumes are counted per hour)."""
    return moment.replace(minute=0, second=0, microsecond=0)


def anomaly_threshold(past_records: int, past_hours: int, *, factor: int, floor: int) -> int:
    """Most records a partner may send in one hour before the rest go to review.

    ``factor`` times its mean hourly volume over the hours it has been sending (up to a week), and
    never less than ``floor``, so a new or quiet partner is not flagged for ordinary traffic.
    """
    if past_hours <= 0:
        return floor
    return max(floor, factor * past_records // past_hours)


@dataclass(frozen=True)
class AnomalyRule:
    """A partner pushing far beyond its usual hourly volume has the excess held for review."""

    factor: int
    floor: int

    def allowance(self, hourly_records: Mapping[datetime, int], now: datetime) -> int:
        """How many more records the partner may push in ``now``'s hour before the rest are held.

        ``hourly_records`` are the records it pushed per hour over ``VOLUME_HISTORY``, this hour included.
        """
        hour = hour_of(now)
        past = [h for h in hourly_records if h < hour]
        past_hours = int((hour - min(past)).total_seconds() // 3600) if past else 0
        threshold = anomaly_threshold(
            sum(hourly_records[h] for h in past), past_hours, factor=self.factor, floor=self.floor
        )
        return threshold - hourly_records.get(hour, 0)
