"""Reference profiles: what a dataset's fields or a model's outputs looked like when all was well.

``sluice batch profile`` builds a profile from history (a file or a topic) and
publishes it to the compacted topic ``drift.profiles`` (Avro
``sluice.v1.DriftProfile``, keyed ``dataset:<name>`` or ``model:<name>``); the
drift processor loads the latest profile per key and tests live data against it.

A numeric field is kept as quantiles and as a histogram whose bin edges are the
distinct quantile values, with exact counts, so the reference CDF at every edge
is exact even for discrete data (a 1-5 score). Categories keep their counts
(the most frequent ``MAX_CATEGORIES``, the rest summed as ``other_count``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.contracts.records import utcnow

if TYPE_CHECKING:
    from streams.contracts.datasets import Contract

#: Probabilities at which numeric quantiles are kept: 0, 0.01, ..., 1.
QUANTILE_PROBS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(101))
#: A string field with more distinct values than this is not profiled as a category.
MAX_CATEGORIES = 64
#: String fields whose contract allows longer values are free text, never categories.
MAX_CATEGORY_LENGTH = 64
NUMERIC_TYPES = frozenset({"int", "long", "float", "double"})


@dataclass(frozen=True)
class DatasetFields:
    """Which fields of a dataset are profiled and watched, derived from its contract."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    nullable: tuple[str, ...]


def dataset_fields(contract: Contract) -> DatasetFields:
    """Numeric fields, category candidates and nullable fields of a dataset.

    Numbers: int, long, float, double (timestamps are not watched). Categories:
    strings other than the key whose contract does not allow free text (a
    ``max_length`` above ``MAX_CATEGORY_LENGTH``). The batch profile keeps a
    candidate only if it has at most ``MAX_CATEGORIES`` distinct values.
    """
    numeric, categorical, nullable = [], [], []
    for avro_field in contract.schema.json["fields"]:
        name = avro_field["name"]
        if name in (contract.key_field, "meta"):
            continue
        declared = avro_field["type"]
        branches = declared if isinstance(declared, list) else [declared]
        base = next(b for b in branches if b != "null")
        rules = contract.spec.fields.get(name)
        if isinstance(base, str) and base in NUMERIC_TYPES:
            numeric.append(name)
        elif base == "string":
            if rules is not None and (rules.max_length or 0) > MAX_CATEGORY_LENGTH:
                continue
            categorical.append(name)
        else:
            continue
        if "null" in branches:
            nullable.append(name)
    return DatasetFields(tuple(numeric), tuple(categorical), tuple(nullable))


@dataclass(frozen=True)
class NumericProfile:
    """Distribution of one numeric field (or derived signal)."""

    field: str
    count: int
    null_count: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    quantile_probs: list[float]
    quantiles: list[float]
    histogram_edges: list[float]
    histogram_counts: list[int]

    def cdf(self) -> list[float]:
        """Reference CDF at each histogram edge (exact: fraction of values <= edge)."""
        running, result = 0, []
        for count in self.histogram_counts:
            running += count
            result.append(running / self.count if self.count else 0.0)
        return result


@dataclass(frozen=True)
class CategoricalProfile:
    """Frequencies of one categorical field."""

    field: str
    count: int
    null_count: int
    categories: list[str]
    counts: list[int]
    other_count: int


@dataclass(frozen=True)
class EmbeddingProfile:
    """Centroid of a model's embeddings: what cosine similarity is measured against."""

    dimension: int
    count: int
    centroid: list[float]


@dataclass(frozen=True)
class FieldViolation:
    """How many historical records broke one contract rule on one field."""

    field: str
    rule: str
    count: int
    message: str


@dataclass(frozen=True)
class Profile:
    """The reference of one dataset or one model."""

    subject_kind: str  # "dataset" or "model"
    subject: str
    source: str
    engine: str
    rows: int
    numeric: list[NumericProfile]
    categorical: list[CategoricalProfile]
    embedding: EmbeddingProfile | None = None
    violations: list[FieldViolation] = field(default_factory=list)
    contract_version: int | None = None
    profile_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    created_at: datetime = field(default_factory=utcnow)  # millisecond precision, as Avro keeps

    @property
    def key(self) -> str:
        """Record key on ``drift.profiles``: ``dataset:<name>`` or ``model:<name>``."""
        return profile_key(self.subject_kind, self.subject)

    def numeric_field(self, name: str) -> NumericProfile | None:
        """The numeric profile of ``name``, if profiled."""
        return next((p for p in self.numeric if p.field == name), None)

    def categorical_field(self, name: str) -> CategoricalProfile | None:
        """The categorical profile of ``name``, if profiled."""
        return next((p for p in self.categorical if p.field == name), None)

    def to_avro(self) -> dict[str, Any]:
        """The dict the Avro encoder of ``drift.profiles`` takes."""
        value = dataclasses.asdict(self)
        value["created_at"] = self.created_at
        return value

    @classmethod
    def from_avro(cls, value: Mapping[str, Any]) -> Profile:
        """Rebuild from a decoded ``DriftProfile`` (or its JSON form)."""
        embedding = value.get("embedding")
        created = value["created_at"]
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        elif isinstance(created, int | float):
            created = datetime.fromtimestamp(created / 1000, UTC)
        return cls(
            subject_kind=value["subject_kind"],
            subject=value["subject"],
            source=value["source"],
            engine=value["engine"],
            rows=int(value["rows"]),
            numeric=[NumericProfile(**p) for p in value["numeric"]],
            categorical=[CategoricalProfile(**p) for p in value["categorical"]],
            embedding=EmbeddingProfile(**embedding) if embedding else None,
            violations=[FieldViolation(**v) for v in value.get("violations") or []],
            contract_version=value.get("contract_version"),
            profile_id=value["profile_id"],
            created_at=created,
        )

    def to_json(self) -> str:
        """JSON for files and for the ClickHouse hook (timestamps in ISO-8601)."""
        value = dataclasses.asdict(self)
        value["created_at"] = self.created_at.isoformat()
        return json.dumps(value, indent=1, allow_nan=False, default=_finite)

    @classmethod
    def from_json(cls, text: str) -> Profile:
        """Read a profile written by ``to_json``."""
        result: Profile = cls.from_avro(json.loads(text))
        return result

    def write(self, path: Path) -> None:
        """Write the JSON form to ``path`` (folders created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")


def profile_key(subject_kind: str, subject: str) -> str:
    """Key of a profile (and prefix of a signal): ``dataset:<name>`` or ``model:<name>``."""
    return f"{subject_kind}:{subject}"


def _finite(value: Any) -> Any:
    raise TypeError(f"cannot write {type(value).__name__} to a profile")


# -- shared by every engine: the parts that must not differ between Spark and pandas ----
def quantile_ranks(n: int, probs: Iterable[float] = QUANTILE_PROBS) -> list[int]:
    """0-based ranks of the inverse-CDF quantiles: the smallest value with F(v) >= p.

    This is numpy's ``inverted_cdf`` method and what Spark's ``percentile_approx``
    approximates, so both engines agree exactly whenever Spark's is exact. The rank
    is ``ceil(p * n)`` in floating point, as both of them compute it (so 0.07 x 200,000
    rounds up past 14,000): matching them matters more than the last ulp.
    """
    return [max(math.ceil(p * n) - 1, 0) for p in probs]


def histogram_edges(quantiles: Iterable[float]) -> list[float]:
    """Distinct quantile values, ascending: the reference's bin edges."""
    return sorted(set(quantiles))


def rank_categories(
    counts: Mapping[str, int], limit: int = MAX_CATEGORIES
) -> tuple[list[str], list[int], int]:
    """The ``limit`` most frequent categories (ties by name), their counts and the rest's sum."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = ordered[:limit]
    other = sum(count for _, count in ordered[limit:])
    return [name for name, _ in kept], [count for _, count in kept], other
