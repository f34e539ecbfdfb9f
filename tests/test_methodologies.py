"""Methodologies: hand-computed reductions from the reference table, conservative rounding, versions, the public API."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from importlib import resources

import pytest
from litestar.testing import AsyncTestClient

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
        assert methodology.formula_source.url.startswith("https://")
        for factor in methodology.factors.values():
            assert factor.sources and all(s.url.startswith("https://") for s in factor.sources)
            assert factor.derivation and factor.value > 0


def test_versions_are_found_by_day_and_by_number() -> None:
    assert REGISTRY.current("transit", date(2026, 11, 26)) is TRANSIT
    with pytest.raises(MethodologyNotFound):
        REGISTRY.current("transit", date(2025, 12, 31))
    with pytest.raises(MethodologyNotFound):
        REGISTRY.get("transit-trips", 2)


def test_a_later_version_does_not_change_an_earlier_one() -> None:
    """Publishing v2 with another factor leaves v1's numbers as they were, and v2 applies from its date on."""
    raw = json.loads((resources.files("domain.methodologies") / "v1.json").read_text(encoding="utf-8"))
    v1 = next(m for m in raw["methodologies"] if m["id"] == "recyclables-sorting")
    v1_closed = {**v1, "valid_until": "2027-01-01"}
    v2 = {
        **v1,
        "version": 2,
        "valid_from": "2027-01-01",
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
        ("transit-trips", 1),
        ("recyclables-sorting", 1),
        ("second-hand-trading", 1),
    }
    transit = next(m for m in listed if m["id"] == "transit-trips")
    assert transit["creditable_categories"] == ["metro", "shared_bike", "walking"]
    assert transit["not_creditable_categories"] == ["bus"]
    detail = (await api.get("/v1/methodologies/recyclables-sorting/1")).json()
    [glass] = detail["factors"]
    assert glass["value"] == "201" and glass["sources"][0]["table"].startswith("Table D1")
    assert {e["category"] for e in detail["not_creditable"]} >= {"paper", "plastic", "metal"}
    assert "rounded down" in detail["rounding"]
    missing = await api.get("/v1/methodologies/transit-trips/9")
    assert missing.status_code == 404 and missing.json()["code"] == "methodology_not_found"
