"""Methodologies: hand-computed reductions from the reference table, conservative rounding, versions, the public API."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources

import pytest
from litestar.testing import AsyncTestClient

from domain.actions import ActionKind, assess, parse_record
from domain.errors import InvalidInput
from domain.methodologies import (
    Methodology,
    MethodologyNotFound,
    MethodologyRegistry,
    NotCreditable,
    methodology_from_data,
    points_for,
)

REGISTRY = MethodologyRegistry.load()
TRANSIT = REGISTRY.get("transit-trips", 1)
RECYCLING = REGISTRY.get("recyclables-sorting", 1)
SECOND_HAND = REGISTRY.get("second-hand-trading", 1)
TRANSIT_2 = REGISTRY.get("transit-trips", 2)
RECYCLING_2 = REGISTRY.get("recyclables-sorting", 2)
SECOND_HAND_2 = REGISTRY.get("second-hand-trading", 2)
SHANGHAI = timedelta(hours=8)
#: Version 2's start: midnight of 1 December 2026 in the programme's time zone.
V2_START = datetime(2026, 12, 1, tzinfo=timezone(SHANGHAI))


def test_glass_uses_the_smallest_saving_in_the_reference_table() -> None:
    """Reference: EPA 309, WRAP 392/233, Smith 253, Pratt 201 kg CO2e/t → 201 g per kg."""
    assert RECYCLING.factors["glass"].value == Decimal("201")
    assert RECYCLING.reduction("glass", 1000).grams_co2e == 201
    assert RECYCLING.reduction("glass", 2500).grams_co2e == 502  # 502.5 → 502
    assert RECYCLING.reduction("glass", 1234).grams_co2e == 248  # 248.034
    assert RECYCLING.reduction("glass", 4).grams_co2e == 0  # 0.804 g: nothing, never rounded up


def test_metro_trips_stay_under_the_guangzhou_per_trip_figure() -> None:
    """10 km by metro must avoid at most 515.5 g (mean method, Huang et al. 2017)."""
    ten_km = TRANSIT.reduction("metro", 10_000)
    assert ten_km.grams_co2e == 510 and ten_km.grams_co2e <= 515.5
    assert TRANSIT.reduction("metro", 3_456).grams_co2e == 176  # 51 × 3.456 = 176.256
    assert TRANSIT.reduction("walking", 1_999).grams_co2e == 101  # 101.949
    assert TRANSIT.reduction("shared_bike", 19).grams_co2e == 0  # 0.969


def test_a_record_keeps_the_version_and_factor_it_used() -> None:
    reduction = TRANSIT.reduction("shared_bike", 5_000)
    assert (reduction.methodology_id, reduction.methodology_version) == ("transit-trips", 1)
    assert (reduction.category, reduction.factor, reduction.quantity) == ("shared_bike", Decimal("51"), 5_000)


@pytest.mark.parametrize(
    ("methodology", "category"),
    [(TRANSIT, "bus"), (RECYCLING, "paper"), (RECYCLING, "e_waste"), (SECOND_HAND, "clothing"), (SECOND_HAND, "toys")],
)
def test_unsourced_categories_are_not_creditable_with_a_reason(methodology: Methodology, category: str) -> None:
    with pytest.raises(NotCreditable) as caught:
        methodology.reduction(category, 1000)
    assert caught.value.code == "not_creditable" and caught.value.extra["reason"] == "factor_not_sourced"


def test_bad_categories_and_quantities_are_invalid_input() -> None:
    for category, quantity in (("rocket", 10), ("glass", 0), ("glass", -5), ("glass", True)):
        with pytest.raises(InvalidInput) as caught:
            RECYCLING.reduction(category, quantity)  # type: ignore[arg-type]
        assert not isinstance(caught.value, NotCreditable)


def test_points_are_rounded_down() -> None:
    assert points_for(510, Decimal("10")) == 5  # 5.1
    assert points_for(99, Decimal("10")) == 0
    assert points_for(1000, Decimal("2.5")) == 2
    assert points_for(0, Decimal("10")) == points_for(-3, Decimal("10")) == 0


def test_every_factor_has_a_source_and_a_derivation() -> None:
    for methodology in REGISTRY.all():
        assert methodology.formula_source.document and methodology.formula_source.confidence
        for factor in methodology.factors.values():
            assert factor.sources, f"{methodology.id} v{methodology.version}: {factor.category} has no source"
            assert all(s.document and (s.url is None or s.url.startswith("https://")) for s in factor.sources)
            assert factor.derivation and factor.value > 0
            # Each source says how directly its figure was read, and where in the document it stands.
            assert all(s.confidence in ("primary", "secondary") and s.table for s in factor.sources)


def test_a_factor_without_a_source_is_refused_when_the_data_is_read() -> None:
    raw = json.loads((resources.files("domain.methodologies") / "v2.json").read_text(encoding="utf-8"))
    transit = next(m for m in raw["methodologies"] if m["id"] == "transit-trips")
    unsourced = {**transit, "factors": {**transit["factors"], "metro": {**transit["factors"]["metro"], "sources": []}}}
    with pytest.raises(ValueError, match="metro needs a positive value and a source"):
        methodology_from_data(unsourced)
    source = transit["factors"]["metro"]["sources"][0]
    unlabelled = {k: v for k, v in source.items() if k != "confidence"}
    for doubtful in (source | {"confidence": "probably"}, unlabelled):
        with pytest.raises(ValueError, match="confidence"):
            methodology_from_data(
                {**transit, "factors": {"metro": {**transit["factors"]["metro"], "sources": [doubtful]}}}
            )


def test_version_2_takes_the_smaller_sourced_figure_everywhere() -> None:
    assert TRANSIT_2.reduction("metro", 10_000).grams_co2e == 460  # 46 g/km (46.7 down), under Guangzhou's 515.5
    assert TRANSIT_2.reduction("e_bus", 10_000).grams_co2e == 260
    assert TRANSIT_2.reduction("shared_bike", 3_000).grams_co2e == 99  # 33 g/km (33.88 down), not Chongqing's 43
    assert TRANSIT_2.reduction("walking", 3_000).grams_co2e == 99  # capped at the shared bike's: a design choice
    assert RECYCLING_2.reduction("glass", 1_000).grams_co2e == 201
    assert RECYCLING_2.reduction("aluminium", 1_000).grams_co2e == 8_143  # Turner, not WARM's 10,060
    assert RECYCLING_2.reduction("metal", 1_000).grams_co2e == 1_300  # the low end for scrap steel
    assert RECYCLING_2.reduction("plastic", 1_000).grams_co2e == 837  # HDPE 0.76 × 1.1023 = 837.7, down
    assert RECYCLING_2.reduction("textiles", 250).grams_co2e == 844  # 3,376 × 0.25
    assert SECOND_HAND_2.reduction("phones", 1).grams_co2e == 25_000
    with pytest.raises(NotCreditable) as paper:
        RECYCLING_2.reduction("paper", 1_000)
    assert paper.value.extra["reason"] == "forest_credit_excluded"
    for methodology, category in ((TRANSIT_2, "bus"), (RECYCLING_2, "e_waste"), (SECOND_HAND_2, "clothing")):
        with pytest.raises(NotCreditable) as unsourced:
            methodology.reduction(category, 1)
        assert unsourced.value.extra["reason"] == "factor_not_sourced"
    assert SECOND_HAND_2.required_details == ("trade_ref",)


def test_versions_are_found_by_day_and_by_number() -> None:
    assert REGISTRY.current("transit", date(2026, 11, 26)) is TRANSIT
    assert REGISTRY.current("transit", date(2026, 11, 30)) is TRANSIT
    assert REGISTRY.current("transit", date(2026, 12, 1)) is TRANSIT_2
    assert REGISTRY.current("second_hand", date(2030, 1, 1)) is SECOND_HAND_2
    with pytest.raises(MethodologyNotFound):
        REGISTRY.current("transit", date(2025, 12, 31))
    with pytest.raises(MethodologyNotFound):
        REGISTRY.get("transit-trips", 3)


def _trip(started: datetime, minutes: int = 20, mode: str = "metro") -> dict[str, object]:
    ended = started + timedelta(minutes=minutes)
    return {
        "external_id": f"t-{started.isoformat()}",
        "account_ref": "card",
        "mode": mode,
        "started_at": started.isoformat(),
        "ended_at": ended.isoformat(),
        "distance_m": 10_000,
    }


@pytest.mark.parametrize(
    ("started", "version", "grams"),
    [
        (V2_START - timedelta(seconds=1), 1, 510),  # started 23:59:59 on 30 November, ended in December: v1
        (V2_START - timedelta(minutes=10), 1, 510),
        (V2_START, 2, 460),  # started at midnight: v2
        (V2_START + timedelta(minutes=1), 2, 460),
    ],
)
def test_a_trip_is_judged_by_the_version_in_force_when_it_started(started: datetime, version: int, grams: int) -> None:
    record = parse_record(ActionKind.TRANSIT, _trip(started))
    assessment = assess(record, REGISTRY, started + timedelta(hours=1), [], SHANGHAI)
    assert assessment.reduction is not None
    assert (assessment.reduction.methodology_version, assessment.reduction.grams_co2e) == (version, grams)


@pytest.mark.parametrize(("offset", "version"), [(timedelta(seconds=-1), 1), (timedelta(0), 2)])
def test_a_drop_off_is_judged_by_the_version_in_force_when_it_happened(offset: timedelta, version: int) -> None:
    at = V2_START + offset
    raw = {"external_id": "d", "account_ref": "a", "station_id": "s", "occurred_at": at.isoformat()}
    record = parse_record(ActionKind.RECYCLING, raw | {"material": "plastic", "weight_g": 1_000})
    assessment = assess(record, REGISTRY, at + timedelta(hours=1), [], SHANGHAI)
    if version == 1:  # plastic had no sourced factor in version 1
        assert (assessment.reduction, assessment.reason) == (None, "factor_not_sourced")
    else:
        assert assessment.reduction is not None and assessment.reduction.grams_co2e == 837


def test_from_version_2_a_second_hand_record_must_name_its_trade() -> None:
    at = V2_START + timedelta(days=1)
    raw = {"external_id": "s", "account_ref": "a", "occurred_at": at.isoformat(), "category": "phones", "quantity": 1}
    without = parse_record(ActionKind.SECOND_HAND, raw | {"trade": "sold"})
    assert assess(without, REGISTRY, at, [], SHANGHAI).reason == "invalid_record"
    named = parse_record(ActionKind.SECOND_HAND, raw | {"trade": "sold", "trade_ref": "T-1"})
    credited = assess(named, REGISTRY, at, [], SHANGHAI).reduction
    assert credited is not None and credited.grams_co2e == 25_000 and named.trade_ref == "T-1"


def test_the_versions_of_a_methodology_follow_one_another() -> None:
    raw = json.loads((resources.files("domain.methodologies") / "v2.json").read_text(encoding="utf-8"))
    transit_2 = methodology_from_data(next(m for m in raw["methodologies"] if m["id"] == "transit-trips"))
    late = methodology_from_data(
        next(m for m in raw["methodologies"] if m["id"] == "transit-trips") | {"valid_from": "2026-12-05"}
    )
    MethodologyRegistry([TRANSIT, transit_2])
    with pytest.raises(ValueError, match="must start the day v1 ends"):
        MethodologyRegistry([TRANSIT, late])


def test_a_later_version_does_not_change_an_earlier_one() -> None:
    """Publishing v2 with another factor leaves v1's numbers as they were, and v2 applies from its date on."""
    raw = json.loads((resources.files("domain.methodologies") / "v1.json").read_text(encoding="utf-8"))
    v1 = next(m for m in raw["methodologies"] if m["id"] == "recyclables-sorting")
    v1_closed = {**v1, "valid_until": "2027-01-01"}
    v2 = {
        **v1,
        "version": 2,
        "valid_from": "2027-01-01",
        "valid_until": None,
        "factors": {"glass": {**v1["factors"]["glass"], "value": "150"}},
    }
    registry = MethodologyRegistry([methodology_from_data(v1_closed), methodology_from_data(v2)])
    assert registry.get("recyclables-sorting", 1).reduction("glass", 1000).grams_co2e == 201
    assert registry.get("recyclables-sorting", 2).reduction("glass", 1000).grams_co2e == 150
    assert registry.current("recycling", date(2026, 12, 31)).version == 1
    assert registry.current("recycling", date(2027, 1, 1)).version == 2


async def test_methodologies_are_public(api: AsyncTestClient) -> None:
    listed = (await api.get("/v1/methodologies")).json()
    assert {(m["id"], m["version"]) for m in listed} == {
        (m, v) for m in ("transit-trips", "recyclables-sorting", "second-hand-trading") for v in (1, 2)
    }
    transit = next(m for m in listed if m["id"] == "transit-trips" and m["version"] == 1)
    assert transit["creditable_categories"] == ["metro", "shared_bike", "walking"]
    assert transit["not_creditable_categories"] == ["bus"]
    assert (transit["valid_from"], transit["valid_until"]) == ("2026-01-01", "2026-12-01")
    transit_2 = next(m for m in listed if m["id"] == "transit-trips" and m["version"] == 2)
    assert (transit_2["valid_from"], transit_2["valid_until"]) == ("2026-12-01", None)
    metro = next(f for f in transit_2["factors"] if f["category"] == "metro")  # the list shows everything
    assert metro["value"] == "46" and {s["confidence"] for s in metro["sources"]} == {"primary", "secondary"}
    assert any("design choice" in note for note in transit_2["notes"])
    detail = (await api.get("/v1/methodologies/recyclables-sorting/1")).json()
    [glass] = detail["factors"]
    assert glass["value"] == "201" and glass["sources"][0]["table"].startswith("Table D1")
    assert {e["category"] for e in detail["not_creditable"]} >= {"paper", "plastic", "metal"}
    assert "rounded down" in detail["rounding"]
    missing = await api.get("/v1/methodologies/transit-trips/9")
    assert missing.status_code == 404 and missing.json()["code"] == "methodology_not_found"
