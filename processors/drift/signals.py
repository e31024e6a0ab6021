"""Which signals a record carries: dataset fields from the contract, model measures from results.

Datasets: every numeric field of the contract's schema (timestamps and the key
excepted), every string field short enough to be a category (the key and free
text, whose contract allows more than 64 characters, excepted), and the null
rate of every nullable one. Models: latency, token counts, output length,
embedding norm and cosine similarity to the reference centroid, on successful
results; the error rate on all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from processors.drift.monitor import SignalId
from streams.contracts.datasets import Contract
from streams.profiling.profiles import dataset_fields

#: Measures of a model's results, and their kinds.
MODEL_SIGNALS: dict[str, str] = {
    "e2e_ms": "numeric",
    "input_tokens": "numeric",
    "output_tokens": "numeric",
    "output_chars": "numeric",
    "embedding_norm": "numeric",
    "embedding_cosine": "numeric",
    "error_rate": "rate",
}
Observation = tuple[SignalId, Any]


@dataclass(frozen=True)
class FieldPlan:
    """The watched fields of a dataset and their signals, derived once from its contract."""

    dataset: str
    numeric: tuple[tuple[str, SignalId], ...]
    categorical: tuple[tuple[str, SignalId], ...]
    nullable: tuple[tuple[str, SignalId], ...]


def dataset_plan(contract: Contract) -> FieldPlan:
    """Numeric, categorical and nullable fields of a dataset, as the batch profile sees them."""
    fields = dataset_fields(contract)
    dataset = contract.dataset
    return FieldPlan(
        dataset,
        tuple((n, SignalId("dataset", dataset, n, "numeric")) for n in fields.numeric),
        tuple((n, SignalId("dataset", dataset, n, "categorical")) for n in fields.categorical),
        tuple((n, SignalId("dataset", dataset, f"{n}.null_rate", "rate")) for n in fields.nullable),
    )


def dataset_observations(record: Mapping[str, Any], plan: FieldPlan) -> list[Observation]:
    """The (signal, value) pairs of one validated record (called per record: kept lean)."""
    out: list[Observation] = []
    append, get = out.append, record.get
    for name, signal in plan.numeric:
        value = get(name)
        if value is not None:
            number = float(value)
            if math.isfinite(number):
                append((signal, number))
    for name, signal in plan.categorical:
        value = get(name)
        if value is not None:
            append((signal, value if type(value) is str else str(value)))
    for name, signal in plan.nullable:
        append((signal, 1.0 if get(name) is None else 0.0))
    return out


def model_signal(model: str, name: str) -> SignalId:
    """The signal of one measure of a model."""
    return SignalId("model", model, name, MODEL_SIGNALS[name])


def model_observations(
    result: Mapping[str, Any], cosine: Callable[[str, NDArray[np.float64]], float | None]
) -> list[Observation]:
    """The (signal, value) pairs of one inference result.

    ``cosine(model, embedding)`` returns the similarity to the model's centroid,
    or None while the centroid is still being learned.
    """
    model = str(result["model"])
    ok = result.get("status") == "ok"
    out: list[Observation] = [(model_signal(model, "error_rate"), 0.0 if ok else 1.0)]
    if not ok:
        return out
    for name in ("e2e_ms", "input_tokens", "output_tokens"):
        value = result.get(name)
        if value is not None and math.isfinite(float(value)):
            out.append((model_signal(model, name), float(value)))
    text = result.get("output_text")
    if text is not None:
        out.append((model_signal(model, "output_chars"), float(len(text))))
    embedding = result.get("embedding")
    if embedding:
        vector = np.asarray(embedding, dtype=np.float64)
        norm = float(np.linalg.norm(vector))
        out.append((model_signal(model, "embedding_norm"), norm))
        similarity = cosine(model, vector)
        if similarity is not None:
            out.append((model_signal(model, "embedding_cosine"), similarity))
    return out


class Centroid:
    """A model's reference centroid: from its profile, or the mean of its first embeddings."""

    def __init__(self, warmup: int, centroid: list[float] | None = None, source: str = "warmup"):
        self.warmup = warmup
        self.source = source
        self.sum: NDArray[np.float64] | None = None
        self.n = 0
        self.centroid: NDArray[np.float64] | None = None
        self._unit: NDArray[np.float64] | None = None
        if centroid is not None:
            self._freeze(np.asarray(centroid, dtype=np.float64))

    def _freeze(self, centroid: NDArray[np.float64]) -> None:
        self.centroid = centroid
        norm = float(np.linalg.norm(centroid))
        self._unit = centroid / norm if norm > 0 else centroid
        self.sum = None

    def cosine(self, vector: NDArray[np.float64]) -> float | None:
        """Cosine similarity of ``vector`` to the centroid; None while warming up."""
        if self._unit is None:
            self.sum = vector.copy() if self.sum is None else self.sum + vector
            self.n += 1
            if self.n >= self.warmup:
                self._freeze(self.sum / self.n)
            return None
        if len(vector) != len(self._unit):
            return None  # another dimension: a different model version; not comparable
        norm = float(np.linalg.norm(vector))
        return float(vector @ self._unit / norm) if norm > 0 else 0.0

    def state(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "warmup": self.warmup,
            "source": self.source,
            "n": self.n,
            "sum": None if self.sum is None else self.sum.tolist(),
            "centroid": None if self.centroid is None else self.centroid.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Centroid:
        """Inverse of ``state``."""
        centroid = cls(int(state["warmup"]), state["centroid"], str(state["source"]))
        centroid.n = int(state["n"])
        if state["sum"] is not None:
            centroid.sum = np.asarray(state["sum"], dtype=np.float64)
        return centroid
