"""Versioned, dated, public methodologies: how a verified action becomes grams of CO₂e avoided.

The factors are data (``v1.json``, ``v2.json`` beside this module), each with its sources, their
confidence, and how it was derived, never constants in code. A methodology version's factors never
change once published: a new version gets new factors and a validity period that starts where the
previous one's ends (``valid_from`` and ``valid_until`` are days in the programme's time zone, the end
excluded), and every credit records the version and factor it used, so a later version cannot change a
past credit. An action is judged by the version in force at the moment its activity happened (a trip's
start). Reductions and points are integers, always rounded down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_FLOOR, Decimal
from importlib import resources
from typing import Any

from domain.errors import InvalidInput, NotFound


class NotCreditable(InvalidInput):
    """The methodology has no sourced factor for this category: nothing is credited, and the reason says why."""

    code = "not_creditable"
    title = "This kind of action is not creditable yet"


class MethodologyNotFound(NotFound):
    code = "methodology_not_found"
    title = "No such methodology version"


#: How directly a source's figure was read: in the primary document, or in a report or transcription of it.
CONFIDENCES = ("primary", "secondary")


@dataclass(frozen=True)
class Source:
    document: str
    url: str | None
    #: ``primary``: read in the document itself; ``secondary``: read in a report or transcription of it.
    confidence: str
    #: Where in the document the figure stands (a table, an exhibit, a page).
    table: str | None = None
    year: int | None = None


@dataclass(frozen=True)
class Factor:
    """Grams of CO₂e avoided per unit of activity (per km for trips, per kg for materials)."""

    category: str
    value: Decimal
    unit: str
    derivation: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Exclusion:
    category: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Reduction:
    """The outcome of applying a methodology to one action, with everything needed to re-derive it."""

    grams_co2e: int
    methodology_id: str
    methodology_version: int
    category: str
    factor: Decimal
    quantity: int


#: Activity units the formulas take (integers, as partners measure them) and their divisor to the
#: factor's unit: metres → km, grams → kg.
_PER_FACTOR_UNIT = {"metre": 1000, "gram": 1000, "item": 1}


@dataclass(frozen=True)
class Methodology:
    id: str
    version: int
    kind: str
    title: str
    valid_from: date
    valid_until: date | None
    activity_unit: str
    formula: str
    formula_source: Source
    factors: dict[str, Factor]
    not_creditable: dict[str, Exclusion]
    notes: tuple[str, ...] = field(default=())
    #: Details a record must carry to be judged by this version (a second-hand record's ``trade_ref``).
    required_details: tuple[str, ...] = field(default=())

    @property
    def per_factor_unit(self) -> int:
        """The activity units per unit of the factor (1000 metres per km, 1000 grams per kg, 1 item)."""
        return _PER_FACTOR_UNIT[self.activity_unit]

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_until is None or day < self.valid_until)

    def reduction(self, category: str, quantity: int) -> Reduction:
        """Grams of CO₂e avoided by ``quantity`` (in ``activity_unit``) of ``category``, rounded down.

        Raises ``NotCreditable`` for a category without a sourced factor, and ``InvalidInput`` for an
        unknown category or a quantity that is not a positive integer.
        """
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise InvalidInput(f"the quantity must be a positive number of {self.activity_unit}s", field="quantity")
        if category in self.not_creditable:
            excluded = self.not_creditable[category]
            raise NotCreditable(excluded.detail, reason=excluded.reason, category=category)
        factor = self.factors.get(category)
        if factor is None:
            known = sorted([*self.factors, *self.not_creditable])
            raise InvalidInput(f"unknown category {category!r}; one of {', '.join(known)}", field="category")
        exact = factor.value * quantity / self.per_factor_unit
        grams = int(exact.to_integral_value(rounding=ROUND_FLOOR))
        return Reduction(grams, self.id, self.version, category, factor.value, quantity)

    def working(self, factor: Decimal, quantity: int) -> str:
        """The formula with a credit's numbers in it, so that a resident can redo the sum by hand."""
        per = self.per_factor_unit
        exact = factor * quantity / per
        grams = int(exact.to_integral_value(rounding=ROUND_FLOOR))
        product = f"{factor} × {quantity}" + (f" ÷ {per}" if per != 1 else "")
        return f"floor({product}) = floor({exact.normalize():f}) = {grams} g CO2e"


def points_for(grams_co2e: int, points_per_kg: Decimal) -> int:
    """Points for a reduction at a conversion rate in points per kg CO₂e, rounded down."""
    if grams_co2e <= 0:
        return 0
    return int((Decimal(grams_co2e) * points_per_kg / 1000).to_integral_value(rounding=ROUND_FLOOR))


def _source(raw: dict[str, Any]) -> Source:
    confidence = raw.get("confidence")
    if confidence not in CONFIDENCES:
        raise ValueError(f"source {raw['document']!r}: confidence must be one of {', '.join(CONFIDENCES)}")
    return Source(raw["document"], raw.get("url"), confidence, raw.get("table"), raw.get("year"))


def methodology_from_data(raw: dict[str, Any]) -> Methodology:
    """A methodology from its published data (one entry of a ``v*.json`` file), checked."""
    if raw["activity_unit"] not in _PER_FACTOR_UNIT:
        raise ValueError(f"{raw['id']}: unknown activity unit {raw['activity_unit']!r}")
    factors = {}
    for category, f in raw["factors"].items():
        value = Decimal(f["value"])
        if value <= 0 or not f["sources"]:
            raise ValueError(f"{raw['id']} v{raw['version']}: factor {category} needs a positive value and a source")
        factors[category] = Factor(category, value, f["unit"], f["derivation"], tuple(map(_source, f["sources"])))
    return Methodology(
        id=raw["id"],
        version=int(raw["version"]),
        kind=raw["kind"],
        title=raw["title"],
        valid_from=date.fromisoformat(raw["valid_from"]),
        valid_until=date.fromisoformat(raw["valid_until"]) if raw["valid_until"] else None,
        activity_unit=raw["activity_unit"],
        formula=raw["formula"],
        formula_source=_source(raw["formula_source"]),
        factors=factors,
        not_creditable={c: Exclusion(c, e["reason"], e["detail"]) for c, e in raw["not_creditable"].items()},
        notes=tuple(raw.get("notes", ())),
        required_details=tuple(raw.get("required_details", ())),
    )


def _check_succession(methodologies: list[Methodology]) -> None:
    """Each methodology's versions follow one another: a version starts the day the one before it ends."""
    by_id: dict[str, list[Methodology]] = {}
    for m in methodologies:
        by_id.setdefault(m.id, []).append(m)
    for versions in by_id.values():
        versions.sort(key=lambda m: m.version)
        for before, after in zip(versions, versions[1:], strict=False):
            if before.valid_until != after.valid_from:
                raise ValueError(
                    f"{after.id} v{after.version} must start the day v{before.version} ends "
                    f"({before.valid_until}), not {after.valid_from}"
                )


class MethodologyRegistry:
    """Every published methodology version, loaded once from the packaged data files."""

    DATA_FILES = ("v1.json", "v2.json")

    def __init__(
        self, methodologies: list[Methodology], data: dict[tuple[str, int], dict[str, Any]] | None = None
    ) -> None:
        self._by_key = {(m.id, m.version): m for m in methodologies}
        if len(self._by_key) != len(methodologies):
            raise ValueError("a methodology version is published twice")
        _check_succession(methodologies)
        self._data = data or {}

    @classmethod
    def load(cls) -> MethodologyRegistry:
        methodologies: list[Methodology] = []
        data: dict[tuple[str, int], dict[str, Any]] = {}
        for name in cls.DATA_FILES:
            document = json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))
            for raw in document["methodologies"]:
                methodology = methodology_from_data(raw)
                methodologies.append(methodology)
                data[(methodology.id, methodology.version)] = raw
        return cls(methodologies, data)

    def data(self, methodology_id: str, version: int) -> dict[str, Any]:
        """A version as published (the data ``methodology_from_data`` reads): what evidence files carry."""
        self.get(methodology_id, version)
        return self._data[(methodology_id, version)]

    def all(self) -> list[Methodology]:
        return sorted(self._by_key.values(), key=lambda m: (m.id, m.version))

    def get(self, methodology_id: str, version: int) -> Methodology:
        try:
            return self._by_key[(methodology_id, version)]
        except KeyError:
            raise MethodologyNotFound(f"no methodology {methodology_id!r} version {version}") from None

    def current(self, kind: str, day: date) -> Methodology:
        """The version of a kind's methodology in force on ``day`` (a day in the programme's time zone;
        the latest, should two overlap)."""
        valid = [m for m in self._by_key.values() if m.kind == kind and m.valid_on(day)]
        if not valid:
            raise MethodologyNotFound(f"no {kind} methodology is valid on {day.isoformat()}")
        return max(valid, key=lambda m: m.version)
