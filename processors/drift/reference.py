"""What live values are compared with: a numeric CDF, category shares or a rate.

A reference comes from a batch profile (``sluice batch profile``) or, when no
profile exists for a signal, from the signal's own first values (the warm-up).
Either way it is reduced to the same small form, which the drift state stores
verbatim so that a restart compares against exactly the same reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from processors.drift.twosample import smoothed_shares
from streams.profiling.profiles import (
    QUANTILE_PROBS,
    CategoricalProfile,
    NumericProfile,
    histogram_edges,
    quantile_ranks,
    rank_categories,
)

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class NumericReference:
    """A numeric distribution as its distinct quantiles and the exact CDF there."""

    edges: Floats
    cdf: Floats
    count: int
    mean: float
    std: float
    source: str

    @classmethod
    def from_profile(cls, profile: NumericProfile, source: str) -> NumericReference | None:
        """The reference of a profiled field; None if the profile saw no values."""
        if profile.count == 0 or not profile.histogram_edges:
            return None
        return cls(
            np.asarray(profile.histogram_edges, dtype=np.float64),
            np.asarray(profile.cdf(), dtype=np.float64),
            profile.count,
            float(profile.mean or 0.0),
            float(profile.std or 0.0),
            source,
        )

    @classmethod
    def from_values(cls, values: list[float], source: str = "warmup") -> NumericReference:
        """A reference from the warm-up values, computed as the batch profile does."""
        ordered = np.sort(np.asarray(values, dtype=np.float64))
        n = len(ordered)
        quantiles = [float(ordered[r]) for r in quantile_ranks(n, QUANTILE_PROBS)]
        edges = np.asarray(histogram_edges(quantiles), dtype=np.float64)
        cdf = np.searchsorted(ordered, edges, side="right") / n
        std = float(ordered.std(ddof=1)) if n > 1 else 0.0
        return cls(edges, cdf.astype(np.float64), n, float(ordered.mean()), std, source)

    def bins(self, values: Floats) -> Ints:
        """Bin of each value: k means edge[k-1] < x <= edge[k]; len(edges) means above the max."""
        result: Ints = np.searchsorted(self.edges, values, side="left").astype(np.int64)
        return result

    def pit(self, values: Floats) -> Floats:
        """Probability integral transform: where each value sits in the reference, in [0, 1].

        Between edges the CDF is interpolated; on an edge that carries an atom
        (a repeated value) the middle of the atom is used. Under no drift the
        result's mean is 1/2 whatever the field's distribution, which is what
        lets one set of detector thresholds fit every field.
        """
        k = self.bins(values)
        last = len(self.edges)
        right = np.clip(k, 0, last - 1)
        left = np.clip(k - 1, 0, last - 1)
        below = np.where(k > 0, self.cdf[left], 0.0)
        upper = self.cdf[right]
        left_x, right_x = self.edges[left], self.edges[right]
        span = right_x - left_x
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(span > 0, (values - left_x) / span, 0.5)
        between = below + fraction * (upper - below)
        on_edge = (k < last) & (right_x == values)
        result: Floats = np.where(
            k == last,
            1.0,  # above the reference maximum
            np.where(on_edge, (below + upper) / 2, np.where(k == 0, 0.0, between)),
        )
        return np.clip(result, 0.0, 1.0)

    def summary(self) -> dict[str, Any]:
        """Count, mean, standard deviation and median, for alerts."""
        median_index = int(np.searchsorted(self.cdf, 0.5, side="left"))
        median = float(self.edges[min(median_index, len(self.edges) - 1)])
        return {"count": self.count, "mean": self.mean, "std": self.std, "p50": median}

    def state(self) -> dict[str, Any]:
        """JSON-ready form for the drift state."""
        return {
            "edges": self.edges.tolist(),
            "cdf": self.cdf.tolist(),
            "count": self.count,
            "mean": self.mean,
            "std": self.std,
            "source": self.source,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NumericReference:
        """Inverse of ``state``."""
        return cls(
            np.asarray(state["edges"], dtype=np.float64),
            np.asarray(state["cdf"], dtype=np.float64),
            int(state["count"]),
            float(state["mean"]),
            float(state["std"]),
            str(state["source"]),
        )


@dataclass(frozen=True)
class CategoricalReference:
    """Category counts; one extra bin collects categories the reference never saw."""

    categories: tuple[str, ...]
    counts: Ints
    count: int
    source: str
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    shares: Floats = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {c: i for i, c in enumerate(self.categories)})
        object.__setattr__(self, "shares", smoothed_shares(self.counts))

    @classmethod
    def from_profile(cls, profile: CategoricalProfile, source: str) -> CategoricalReference | None:
        """The reference of a profiled field; None if the profile saw no values."""
        if profile.count == 0:
            return None
        counts = [*profile.counts, profile.other_count]
        return cls(
            tuple(profile.categories), np.asarray(counts, dtype=np.int64), profile.count, source
        )

    @classmethod
    def from_values(cls, values: list[str], source: str = "warmup") -> CategoricalReference:
        """A reference from the warm-up values."""
        tally: dict[str, int] = {}
        for value in values:
            tally[value] = tally.get(value, 0) + 1
        names, counts, other = rank_categories(tally)
        return cls(tuple(names), np.asarray([*counts, other], dtype=np.int64), len(values), source)

    @property
    def bins(self) -> int:
        """Number of bins: every category plus the "other or new" bin."""
        return len(self.categories) + 1

    def bin(self, value: str) -> int:
        """Bin of a category; unknown categories share the last bin."""
        return self.index.get(value, len(self.categories))

    def summary(self) -> dict[str, Any]:
        """Count and the shares of the leading categories, for alerts."""
        top = {
            c: float(n) / self.count for c, n in zip(self.categories[:8], self.counts, strict=False)
        }
        return {"count": self.count, "top": top}

    def state(self) -> dict[str, Any]:
        """JSON-ready form for the drift state."""
        return {
            "categories": list(self.categories),
            "counts": self.counts.tolist(),
            "count": self.count,
            "source": self.source,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CategoricalReference:
        """Inverse of ``state``."""
        return cls(
            tuple(state["categories"]),
            np.asarray(state["counts"], dtype=np.int64),
            int(state["count"]),
            str(state["source"]),
        )


@dataclass(frozen=True)
class RateReference:
    """The share of records where something holds (a null, an error)."""

    rate: float
    count: int
    source: str

    @classmethod
    def from_values(cls, values: list[float], source: str = "warmup") -> RateReference:
        """A reference from the warm-up indicators (0 or 1)."""
        return cls(float(np.mean(values)) if values else 0.0, len(values), source)

    @property
    def counts(self) -> Ints:
        """Records where it (does not hold, holds): the two bins of the chi-square test."""
        hits = round(self.rate * self.count)
        return np.asarray([self.count - hits, hits], dtype=np.int64)

    @property
    def shares(self) -> Floats:
        """Smoothed shares of the two bins."""
        return smoothed_shares(self.counts)

    def summary(self) -> dict[str, Any]:
        """Count and rate, for alerts."""
        return {"count": self.count, "mean": self.rate}

    def state(self) -> dict[str, Any]:
        """JSON-ready form for the drift state."""
        return {"rate": self.rate, "count": self.count, "source": self.source}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RateReference:
        """Inverse of ``state``."""
        return cls(float(state["rate"]), int(state["count"]), str(state["source"]))


Reference = NumericReference | CategoricalReference | RateReference
