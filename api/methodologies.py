"""Public, read-only methodologies: every version with its formula, factors and their sources."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import PathParameter
from msgspec import Struct

from domain.methodologies import Methodology, MethodologyRegistry, Source


class SourceOut(Struct):
    document: str
    #: Null where no public address of the document is known (it is named so that it can be found).
    url: str | None
    #: Where in the document the figure stands.
    table: str | None
    year: int | None
    #: ``primary``: read in the document itself; ``secondary``: read in a report or transcription of it.
    confidence: str

    @classmethod
    def of(cls, source: Source) -> SourceOut:
        return cls(source.document, source.url, source.table, source.year, source.confidence)


class FactorOut(Struct):
    category: str
    value: str
    unit: str
    derivation: str
    sources: list[SourceOut]


class NotCreditableOut(Struct):
    category: str
    reason: str
    detail: str


class MethodologyOut(Struct):
    id: str
    version: int
    kind: str
    title: str
    valid_from: date
    valid_until: date | None
    activity_unit: str
    formula: str
    formula_source: SourceOut
    rounding: str
    factors: list[FactorOut]
    not_creditable: list[NotCreditableOut]
    notes: list[str]
    creditable_categories: list[str]
    not_creditable_categories: list[str]
    #: Details a record must carry to be judged by this version (a second-hand record's ``trade_ref``).
    required_details: list[str]

    @classmethod
    def of(cls, m: Methodology) -> MethodologyOut:
        return cls(
            id=m.id,
            version=m.version,
            kind=m.kind,
            title=m.title,
            valid_from=m.valid_from,
            valid_until=m.valid_until,
            activity_unit=m.activity_unit,
            formula=m.formula,
            formula_source=SourceOut.of(m.formula_source),
            rounding="reductions and points are whole grams and whole points, rounded down",
            factors=[
                FactorOut(f.category, str(f.value), f.unit, f.derivation, [SourceOut.of(s) for s in f.sources])
                for f in sorted(m.factors.values(), key=lambda f: f.category)
            ],
            not_creditable=[
                NotCreditableOut(e.category, e.reason, e.detail)
                for e in sorted(m.not_creditable.values(), key=lambda e: e.category)
            ],
            notes=list(m.notes),
            creditable_categories=sorted(m.factors),
            not_creditable_categories=sorted(m.not_creditable),
            required_details=list(m.required_details),
        )


class MethodologyController(Controller):
    path = "/v1/methodologies"
    tags = ["methodologies"]

    @get(
        "",
        summary="Every published methodology version, whole: validity, formula, factors, sources and their confidence",
        description="An action is judged by the version in force when its activity happened (a trip's start), "
        "read in the programme's time zone: `valid_from` ≤ that day < `valid_until`.",
    )
    async def list_methodologies(self, methodologies: NamedDependency[MethodologyRegistry]) -> list[MethodologyOut]:
        return [MethodologyOut.of(m) for m in methodologies.all()]

    @get("/{methodology_id:str}/{version:int}", summary="One methodology version: formula, factors and sources")
    async def get_methodology(
        self,
        methodologies: NamedDependency[MethodologyRegistry],
        methodology_id: Annotated[str, PathParameter(max_length=64)],
        version: Annotated[int, PathParameter(ge=1)],
    ) -> MethodologyOut:
        return MethodologyOut.of(methodologies.get(methodology_id, version))
