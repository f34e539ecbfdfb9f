"""Anti-fraud rules: each refusal, at and just past its boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.fraud import (
    CLAIM_WINDOW,
    CLOCK_SKEW,
    MAX_DROP_OFF_G,
    MAX_SPEED_KMH,
    MAX_TRIP_M,
    MIN_TRIP_M,
    TRANSFER_TOLERANCE,
    Refusal,
    TransitMode,
    Trip,
    TripHistory,
    apply_caps,
    check_against_earlier,
    check_drop_off,
    check_trip,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def trip(mode: TransitMode = TransitMode.METRO, minutes: float = 30, metres: int = 10_000, ago: float = 60) -> Trip:
    end = NOW - timedelta(minutes=ago)
    return Trip(mode, end - timedelta(minutes=minutes), end, metres)


def test_an_ordinary_trip_passes() -> None:
    assert check_trip(trip(), NOW) is None


@pytest.mark.parametrize("mode", list(TransitMode))
def test_speed_limit_per_mode_at_and_past_the_boundary(mode: TransitMode) -> None:
    """One hour at exactly the mode's limit passes; one metre more is too fast."""
    limit_m = MAX_SPEED_KMH[mode] * 1000
    assert check_trip(trip(mode, minutes=60, metres=min(limit_m, MAX_TRIP_M)), NOW) is None
    if limit_m < MAX_TRIP_M:
        assert check_trip(trip(mode, minutes=60, metres=limit_m + 1), NOW) is Refusal.TOO_FAST
    assert MAX_SPEED_KMH[TransitMode.WALKING] == 7 and MAX_SPEED_KMH[TransitMode.METRO] == 100


def test_duration_must_be_positive() -> None:
    assert check_trip(trip(minutes=0), NOW) is Refusal.DURATION_NOT_POSITIVE
    assert check_trip(trip(minutes=-5), NOW) is Refusal.DURATION_NOT_POSITIVE


def test_distance_bounds() -> None:
    assert check_trip(trip(metres=MIN_TRIP_M), NOW) is None
    assert check_trip(trip(metres=MIN_TRIP_M - 1), NOW) is Refusal.DISTANCE_TOO_SHORT
    assert check_trip(trip(minutes=90, metres=MAX_TRIP_M), NOW) is None
    assert check_trip(trip(minutes=90, metres=MAX_TRIP_M + 1), NOW) is Refusal.DISTANCE_TOO_LONG


def test_time_must_be_past_and_recent() -> None:
    skew_minutes = CLOCK_SKEW.total_seconds() / 60
    assert check_trip(trip(ago=-skew_minutes), NOW) is None
    assert check_trip(trip(ago=-skew_minutes - 1), NOW) is Refusal.IN_THE_FUTURE
    window_minutes = CLAIM_WINDOW.total_seconds() / 60
    assert check_trip(trip(ago=window_minutes), NOW) is None
    assert check_trip(trip(ago=window_minutes + 1), NOW) is Refusal.TOO_OLD


def test_the_same_trip_from_another_partner_is_a_duplicate() -> None:
    card = trip(TransitMode.METRO, minutes=30)
    app = Trip(TransitMode.METRO, card.started_at + timedelta(minutes=1), card.ended_at + timedelta(minutes=1), 9_800)
    assert check_against_earlier(app, [card]) is Refusal.SAME_TRIP_OTHER_PARTNER


def test_two_modes_at_once_overlap_but_a_transfer_does_not() -> None:
    metro = trip(TransitMode.METRO, minutes=30)
    bike_during = Trip(TransitMode.SHARED_BIKE, metro.started_at + timedelta(minutes=5), metro.ended_at, 3_000)
    assert check_against_earlier(bike_during, [metro]) is Refusal.OVERLAPPING_TRIP
    # Leaving the metro and taking a bike: touching, or overlapping by the tolerance, is fine.
    bike_after = Trip(
        TransitMode.SHARED_BIKE, metro.ended_at - TRANSFER_TOLERANCE, metro.ended_at + timedelta(minutes=10), 2_500
    )
    assert check_against_earlier(bike_after, [metro]) is None
    later = Trip(TransitMode.SHARED_BIKE, bike_after.started_at - timedelta(seconds=1), bike_after.ended_at, 2_500)
    assert check_against_earlier(later, [metro]) is Refusal.OVERLAPPING_TRIP
    assert check_against_earlier(metro, []) is None


_minutes = st.integers(min_value=0, max_value=300)
_trips = st.builds(
    lambda mode, start, length: Trip(
        mode, NOW + timedelta(minutes=start), NOW + timedelta(minutes=start + length), 5_000
    ),
    st.sampled_from(list(TransitMode)),
    _minutes,
    st.integers(min_value=0, max_value=90),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_trips, max_size=40), _trips)
def test_the_trip_history_finds_what_comparing_with_every_trip_finds(earlier: list[Trip], new: Trip) -> None:
    """Trips added in any order, overlapping each other or not: the bisected search returns the
    earliest-starting trip that overlaps beyond the tolerance, exactly as a scan of all of them would."""
    history = TripHistory()
    for t in earlier:
        history.add(t)
    overlapping = [
        t for t in earlier if min(t.ended_at, new.ended_at) - max(t.started_at, new.started_at) > TRANSFER_TOLERANCE
    ]
    expected = min(overlapping, key=lambda t: t.started_at) if overlapping else None
    found = history.first_overlap(new, TRANSFER_TOLERANCE)
    assert (found is None) == (expected is None)
    if found is not None:
        assert found in overlapping and found.started_at == expected.started_at  # type: ignore[union-attr]


def test_drop_off_weight_and_time() -> None:
    at = NOW - timedelta(hours=1)
    assert check_drop_off(1_200, at, NOW) is None
    assert check_drop_off(0, at, NOW) is Refusal.WEIGHT_NOT_POSITIVE
    assert check_drop_off(MAX_DROP_OFF_G, at, NOW) is None
    assert check_drop_off(MAX_DROP_OFF_G + 1, at, NOW) is Refusal.WEIGHT_TOO_LARGE
    assert check_drop_off(1_200, NOW + timedelta(hours=1), NOW) is Refusal.IN_THE_FUTURE


def test_caps_credit_what_is_left_and_say_which_cap_cut() -> None:
    assert apply_caps(30, today=0, daily_cap=100, this_month=0, monthly_cap=1000).credited == 30
    at_daily = apply_caps(30, today=80, daily_cap=100, this_month=80, monthly_cap=1000)
    assert (at_daily.credited, at_daily.cut, at_daily.reason) == (20, 10, "daily_cap_reached")
    exactly = apply_caps(20, today=80, daily_cap=100, this_month=80, monthly_cap=1000)
    assert (exactly.credited, exactly.cut, exactly.reason) == (20, 0, None)
    at_monthly = apply_caps(30, today=0, daily_cap=100, this_month=990, monthly_cap=1000)
    assert (at_monthly.credited, at_monthly.cut, at_monthly.reason) == (10, 20, "monthly_cap_reached")
    full = apply_caps(5, today=100, daily_cap=100, this_month=100, monthly_cap=1000)
    assert (full.credited, full.cut, full.reason) == (0, 5, "daily_cap_reached")
