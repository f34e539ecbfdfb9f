"""The crediting decision without a database: caps at day and month boundaries, duplicates, overlapping
and cross-partner trips, the volume allowance, and properties that hold for any submission.

``decide`` is pure, so these tests build what ingestion would have read (``Known``) by hand. The
property tests hold a whole submission decided at once against the same records decided one by one,
each seeing the ones before it as written: the contract that lets ingestion decide many records
(and, later, many requests) together.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.actions import ActionKind, ActionStatus, Outcome, local_day, month_start
from domain.decision import (
    Decision,
    Known,
    PriorDecision,
    Rules,
    approve_held,
    decide,
    parse_submission,
)
from domain.fraud import TRANSFER_TOLERANCE, AnomalyRule, TransitMode, Trip
from domain.methodologies import MethodologyRegistry, points_for

PARTNER = uuid.UUID("00000000-0000-4000-8000-00000000000a")
ALICE = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
BOB = uuid.UUID("00000000-0000-4000-8000-0000000000b2")
LINKS = {"card-alice": ALICE, "card-bob": BOB}
SHANGHAI = timedelta(hours=8)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
METHODOLOGIES = MethodologyRegistry.load()


def rules(daily: int = 100, monthly: int = 2000) -> Rules:
    return Rules(
        methodologies=METHODOLOGIES,
        points_per_kg=Decimal(10),
        daily_caps={"transit": daily, "recycling": daily},
        monthly_caps={"transit": monthly, "recycling": monthly},
        local_offset=SHANGHAI,
        anomaly=AnomalyRule(factor=10, floor=100),
    )


def trip(
    external_id: str,
    start: datetime,
    *,
    minutes: int = 20,
    metres: int = 10_000,
    mode: str = "metro",
    account: str = "card-alice",
) -> dict[str, Any]:
    """A partner's transit record, as pushed (10 km of metro: 510 g CO₂e, 5 points)."""
    return {
        "external_id": external_id,
        "account_ref": account,
        "mode": mode,
        "started_at": start.isoformat(),
        "ended_at": (start + timedelta(minutes=minutes)).isoformat(),
        "distance_m": metres,
    }


def run(raws: Sequence[Any], known: Known | None = None, **rule_options: int) -> list[Decision]:
    return decide(
        parse_submission(PARTNER, ActionKind.TRANSIT, raws), known or Known(LINKS), rules(**rule_options), NOW
    )


def hours_ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


# ----------------------------------------------------------------------------------------- one by one


def test_an_ordinary_trip_is_credited_by_the_methodology() -> None:
    [decision] = run([trip("t1", hours_ago(3))])
    assert decision.outcome is Outcome.CREDITED
    assert decision.grams_co2e == 510 and decision.points == 5
    assert decision.methodology_id == "transit-trips" and decision.methodology_version == 1
    assert decision.action is not None and decision.action.resident_id == ALICE


def test_a_malformed_record_fails_on_its_own() -> None:
    broken = {**trip("t1", hours_ago(3)), "distance_m": "far"}
    decisions = run([broken, trip("t2", hours_ago(2))])
    assert decisions[0].outcome is Outcome.REJECTED and decisions[0].reason == "invalid_record"
    assert decisions[0].external_id == "t1" and decisions[0].action is None
    assert "distance_m" in (decisions[0].detail or "")
    assert decisions[1].outcome is Outcome.CREDITED


def test_a_record_for_an_unlinked_account_is_refused_and_not_stored() -> None:
    [decision] = run([trip("t1", hours_ago(3), account="card-nobody")])
    assert decision.outcome is Outcome.REJECTED and decision.reason == "account_not_linked"
    assert decision.action is None and decision.action_id is None


def test_the_same_record_twice_in_one_batch_is_decided_once() -> None:
    first, second = run([trip("t1", hours_ago(3)), trip("t1", hours_ago(3))])
    assert first.outcome is Outcome.CREDITED
    assert second.outcome is Outcome.DUPLICATE and second.action is None
    assert second.action_id == first.action_id and second.detail == "already decided: credited"


def test_a_duplicate_of_a_refused_record_carries_its_reason_in_a_batch_as_later() -> None:
    too_fast = trip("t1", hours_ago(3), minutes=1, metres=20_000)
    first, again = run([too_fast, too_fast])
    assert first.outcome is Outcome.REJECTED and first.reason == "too_fast"
    later = run([too_fast], Known(LINKS, decided={first.action_id: PriorDecision("rejected", "too_fast")}))  # type: ignore[dict-item]
    assert again.reason == later[0].reason == "too_fast"
    assert again.detail == later[0].detail == "already decided: rejected"


def test_a_record_decided_before_is_a_duplicate() -> None:
    [fresh] = run([trip("t1", hours_ago(3))])
    assert fresh.action_id is not None
    [again] = run([trip("t1", hours_ago(3))], Known(LINKS, decided={fresh.action_id: PriorDecision("credited", None)}))
    assert again.outcome is Outcome.DUPLICATE and again.action is None


# ---------------------------------------------------------------------------------------------- caps


def test_the_daily_cap_cuts_points_and_resets_at_local_midnight() -> None:
    """Shanghai's midnight is 16:00 UTC: two trips 20 minutes apart across it count on different days."""
    midnight = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
    before, after = midnight - timedelta(minutes=25), midnight + timedelta(minutes=1)
    assert local_day(before, SHANGHAI) == date(2026, 11, 24) and local_day(after, SHANGHAI) == date(2026, 11, 25)
    decisions = run(
        [trip("a", before - timedelta(hours=2)), trip("b", before), trip("c", after)],
        daily=8,
    )
    assert [d.points for d in decisions] == [5, 3, 5]
    assert [d.points_withheld for d in decisions] == [0, 2, 0]
    assert decisions[1].cap_reason == "daily_cap_reached" and decisions[2].cap_reason is None


def test_the_cap_counts_points_credited_before_the_submission() -> None:
    day = local_day(hours_ago(3), SHANGHAI)
    known = Known(LINKS, points={(ALICE, "transit", day): 98})
    [decision] = run([trip("t1", hours_ago(3))], known)
    assert decision.outcome is Outcome.CREDITED and decision.points == 2 and decision.points_withheld == 3


def test_the_monthly_cap_resets_on_the_first_local_day_of_the_month() -> None:
    """Local midnight into December is 16:00 UTC on 30 November (and methodology version 2's start: 46 g/km)."""
    month_end = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)
    next_month = datetime(2026, 11, 30, 16, 5, tzinfo=UTC)
    late_now = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
    known = Known(LINKS, points={(ALICE, "transit", date(2026, 11, 3)): 28})
    submitted = parse_submission(PARTNER, ActionKind.TRANSIT, [trip("nov", month_end), trip("dec", next_month)])
    november, december = decide(submitted, known, rules(monthly=30), late_now)
    assert november.points == 2 and november.cap_reason == "monthly_cap_reached"
    assert december.grams_co2e == 460 and december.points == 4 and december.cap_reason is None


def test_a_resident_at_the_cap_gets_the_co2e_but_no_points() -> None:
    day = local_day(hours_ago(3), SHANGHAI)
    [decision] = run([trip("t1", hours_ago(3))], Known(LINKS, points={(ALICE, "transit", day): 100}))
    assert decision.outcome is Outcome.CREDITED and decision.grams_co2e == 510
    assert decision.points == 0 and decision.points_withheld == 5 and decision.cap_reason == "daily_cap_reached"


def test_each_resident_has_caps_of_their_own() -> None:
    decisions = run(
        [trip("a1", hours_ago(5)), trip("a2", hours_ago(4)), trip("b1", hours_ago(5), account="card-bob")], daily=8
    )
    assert [d.points for d in decisions] == [5, 3, 5]


# ------------------------------------------------------------------------------------ overlapping trips


def test_two_modes_at_once_overlap_but_a_transfer_between_legs_does_not() -> None:
    start = hours_ago(5)
    metro, bike_during, bike_after = run(
        [
            trip("metro", start, minutes=30),
            trip("bike-during", start + timedelta(minutes=10), minutes=15, metres=3_000, mode="shared_bike"),
            trip("bike-after", start + timedelta(minutes=29), minutes=15, metres=3_000, mode="shared_bike"),
        ]
    )
    assert metro.outcome is Outcome.CREDITED
    assert bike_during.outcome is Outcome.REJECTED and bike_during.reason == "overlapping_trip"
    assert bike_after.outcome is Outcome.CREDITED  # one minute of overlap is within the transfer tolerance


def test_the_same_trip_from_another_partner_is_refused() -> None:
    start = hours_ago(5)
    other_partner = Trip(TransitMode.METRO, start, start + timedelta(minutes=20), 10_000)
    [decision] = run([trip("t1", start + timedelta(minutes=1))], Known(LINKS, trips={ALICE: [other_partner]}))
    assert decision.outcome is Outcome.REJECTED and decision.reason == "same_trip_other_partner"


def test_a_refused_trip_does_not_block_a_later_one() -> None:
    start = hours_ago(5)
    refused, later = run([trip("fast", start, minutes=1, metres=20_000), trip("ok", start, minutes=20)])
    assert refused.reason == "too_fast" and later.outcome is Outcome.CREDITED


def test_another_residents_trips_never_overlap_yours() -> None:
    start = hours_ago(5)
    decisions = run([trip("a", start), trip("b", start, account="card-bob")])
    assert [d.outcome for d in decisions] == [Outcome.CREDITED, Outcome.CREDITED]


# ------------------------------------------------------------------------------------ volume allowance


def test_records_past_the_partners_allowance_are_held_for_review() -> None:
    raws = [
        trip("a", hours_ago(9)),
        trip("b", hours_ago(8), account="card-nobody"),  # not judged: does not use the allowance
        trip("c", hours_ago(7), minutes=1, metres=20_000),  # judged and refused: uses it
        trip("d", hours_ago(6)),
        trip("a", hours_ago(9)),  # a duplicate: does not use it
    ]
    decisions = run(raws, Known(LINKS, allowance=2))
    assert [d.outcome for d in decisions] == [
        Outcome.CREDITED,
        Outcome.REJECTED,
        Outcome.REJECTED,
        Outcome.PENDING_REVIEW,
        Outcome.DUPLICATE,
    ]
    held = decisions[3]
    assert held.reason == "partner_volume_anomaly" and held.points == 0 and held.grams_co2e == 0
    assert held.action is not None and held.action.reduction is not None  # kept, for the reviewer's approval


def test_a_held_trip_still_counts_for_overlap() -> None:
    start = hours_ago(5)
    held, overlapping = run(
        [trip("held", start), trip("bike", start + timedelta(minutes=5), metres=3_000, mode="shared_bike")],
        Known(LINKS, allowance=0),
    )
    assert held.outcome is Outcome.PENDING_REVIEW
    assert overlapping.reason == "overlapping_trip"


def test_the_allowance_follows_the_partners_norm() -> None:
    rule = AnomalyRule(factor=10, floor=100)
    hour = NOW.replace(minute=0, second=0, microsecond=0)
    assert rule.allowance({}, NOW) == 100
    usual = {hour - timedelta(hours=h): 50 for h in range(1, 25)}
    assert rule.allowance(usual, NOW) == 500
    assert rule.allowance({**usual, hour: 120}, NOW) == 380


# ---------------------------------------------------------------------------------------------- reviews


def test_approving_a_held_action_applies_the_caps_as_they_stand() -> None:
    day = local_day(hours_ago(3), SHANGHAI)
    approval = approve_held(
        rules(),
        methodology=("transit-trips", 1),
        category="metro",
        quantity=10_000,
        kind="transit",
        resident_id=ALICE,
        day=day,
        points={(ALICE, "transit", day): 97},
    )
    assert approval.reduction.grams_co2e == 510
    assert (approval.capped.credited, approval.capped.cut, approval.capped.reason) == (3, 2, "daily_cap_reached")


# ------------------------------------------------------------------------------------------ properties

MODES = ("metro", "shared_bike", "walking", "bus")
ACCOUNTS = ("card-alice", "card-bob", "card-nobody")


@st.composite
def submissions(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to 25 transit records over two days, some repeated, some overlapping, some implausible."""
    raws: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 25))):
        if raws and draw(st.integers(0, 5)) == 0:
            raws.append(draw(st.sampled_from(raws)))  # the same record again
            continue
        start = NOW - timedelta(minutes=draw(st.integers(30, 2 * 24 * 60)))
        raws.append(
            trip(
                f"r{index}",
                start,
                minutes=draw(st.integers(1, 90)),
                metres=draw(st.integers(100, 40_000)),
                mode=draw(st.sampled_from(MODES)),
                account=draw(st.sampled_from(ACCOUNTS)),
            )
        )
    return raws


@st.composite
def knowns(draw: st.DrawFn) -> Known:
    """Earlier trips, points already credited today and yesterday, and maybe a volume allowance."""
    trips = {
        resident: [
            Trip(TransitMode.METRO, start, start + timedelta(minutes=20), 8_000)
            for start in (NOW - timedelta(minutes=m) for m in draw(st.lists(st.integers(30, 2880), max_size=3)))
        ]
        for resident in (ALICE, BOB)
    }
    points = {
        (resident, "transit", local_day(NOW - timedelta(days=back), SHANGHAI)): draw(st.integers(0, 9))
        for resident in (ALICE, BOB)
        for back in (0, 1)
    }
    return Known(LINKS, trips=trips, points=points, allowance=draw(st.none() | st.integers(0, 12)))


def written(known: Known, decision: Decision) -> Known:
    """``known`` as the next request would read it once ``decision`` is written."""
    action = decision.action
    if action is None:
        return known
    trips = {r: list(ts) for r, ts in known.trips.items()}
    if action.status is not ActionStatus.REJECTED:
        trips.setdefault(action.resident_id, []).append(action.record.trip())
    points = dict(known.points)
    if action.status is ActionStatus.CREDITED:
        key = (action.resident_id, "transit", action.day)
        points[key] = points.get(key, 0) + action.points
    return Known(
        known.links,
        {**known.decided, action.id: PriorDecision(action.status.value, action.reason)},
        trips,
        points,
        None if known.allowance is None else known.allowance - 1,
    )


@settings(max_examples=300)
@given(raws=submissions(), known=knowns())
def test_a_batch_decides_as_its_records_would_one_after_another(raws: list[dict[str, Any]], known: Known) -> None:
    the_rules = rules(daily=15, monthly=20)
    together = decide(parse_submission(PARTNER, ActionKind.TRANSIT, raws), known, the_rules, NOW)
    alone = []
    state = known
    for index, raw in enumerate(raws):
        [decision] = decide(parse_submission(PARTNER, ActionKind.TRANSIT, [raw]), state, the_rules, NOW)
        alone.append(decision)
        state = written(state, decision)
        assert together[index].index == index
    strip = [(d.outcome, d.action_id, d.reason, d.detail, d.points, d.points_withheld, d.grams_co2e) for d in together]
    assert strip == [
        (d.outcome, d.action_id, d.reason, d.detail, d.points, d.points_withheld, d.grams_co2e) for d in alone
    ]


@settings(max_examples=300)
@given(raws=submissions(), known=knowns())
def test_caps_hold_and_withheld_points_are_accounted_for(raws: list[dict[str, Any]], known: Known) -> None:
    daily, monthly = 15, 20
    decisions = run(raws, known, daily=daily, monthly=monthly)
    per_day: defaultdict[tuple[uuid.UUID, date], int] = defaultdict(int)
    per_month: defaultdict[tuple[uuid.UUID, date], int] = defaultdict(int)
    for (resident, _, day), points in known.points.items():
        per_day[(resident, day)] += points
        per_month[(resident, month_start(day))] += points
    for d in decisions:
        assert d.points + d.points_withheld == points_for(d.grams_co2e, Decimal(10))
        assert (d.points_withheld > 0) == (d.cap_reason is not None)
        if d.outcome is not Outcome.CREDITED:
            assert d.points == d.points_withheld == 0
            continue
        assert d.action is not None
        day, month = (d.action.resident_id, d.action.day), (d.action.resident_id, month_start(d.action.day))
        assert d.points <= max(0, daily - per_day[day]) and d.points <= max(0, monthly - per_month[month])
        per_day[day] += d.points
        per_month[month] += d.points
    assert all(total <= daily for total in per_day.values())  # the generated starting points are below both caps
    assert all(total <= monthly for total in per_month.values())


@settings(max_examples=300)
@given(raws=submissions(), known=knowns())
def test_accepted_trips_of_one_resident_never_overlap_and_each_record_is_stored_once(
    raws: list[dict[str, Any]], known: Known
) -> None:
    decisions = run(raws, known)
    assert [d.index for d in decisions] == list(range(len(raws)))
    stored = [d.action for d in decisions if d.action is not None]
    assert len({a.id for a in stored}) == len(stored)
    accepted: defaultdict[uuid.UUID, list[Trip]] = defaultdict(list)
    for resident, trips in known.trips.items():
        accepted[resident].extend(trips)
    for action in stored:
        if action.status is ActionStatus.REJECTED:
            continue
        new = action.record.trip()
        for other in accepted[action.resident_id]:
            overlap = min(new.ended_at, other.ended_at) - max(new.started_at, other.started_at)
            assert overlap <= TRANSFER_TOLERANCE, (new, other)
        accepted[action.resident_id].append(new)


@pytest.mark.parametrize("allowance", [0, 1, 3])
def test_no_more_records_are_credited_or_refused_than_the_allowance_lets_through(allowance: int) -> None:
    raws = [trip(f"t{i}", hours_ago(30 - i)) for i in range(6)]
    decisions = run(raws, Known(LINKS, allowance=allowance))
    assert [d.outcome for d in decisions] == [Outcome.CREDITED] * allowance + [Outcome.PENDING_REVIEW] * (6 - allowance)
