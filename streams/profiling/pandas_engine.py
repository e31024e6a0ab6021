"""The pandas engine of ``sluice batch profile``, and the code the cudf engine runs on a GPU.

Only pandas operations on whole columns (sort, index, searchsorted, value
counts, group-by), no per-row Python in the profile itself, so that under
``cudf.pandas`` the work runs on the GPU; anything cudf cannot do falls back to
pandas on the CPU, transparently. The contract check is per row by nature
(``streams.profiling.checks``).

Quantiles are inverse-CDF (the smallest value v with F(v) >= p), taken by rank
from the sorted column, so they are exact and identical to Spark's
``percentile_approx`` whenever Spark's is exact.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streams.contracts.datasets import Contract
from streams.profiling.checks import (
    check_rows,
    count_violations,
    null_rate_violations,
    rule_violations,
)
from streams.profiling.profiles import (
    MAX_CATEGORIES,
    QUANTILE_PROBS,
    CategoricalProfile,
    EmbeddingProfile,
    NumericProfile,
    Profile,
    dataset_fields,
    histogram_edges,
    quantile_ranks,
    rank_categories,
)

#: Rows turned into dicts at a time for the contract check.
CHECK_CHUNK = 100_000


def read_file(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file (or folder) or a JSON-lines file as a DataFrame."""
    if path.suffix in {".jsonl", ".json", ".ndjson"}:
        frame = pd.read_json(path, lines=True, dtype=False, convert_dates=False)
        return frame[[c for c in columns if c in frame]] if columns else frame
    return pd.read_parquet(path, columns=columns)


# -- one column -------------------------------------------------------------------
def numeric_profile(name: str, column: pd.Series) -> NumericProfile:
    """Quantiles, exact histogram on the distinct quantiles, moments, nulls."""
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    null_count = int(values.isna().sum())
    ordered = values.dropna().sort_values(ignore_index=True)
    n = len(ordered)
    if n == 0:
        return NumericProfile(name, 0, null_count, None, None, None, None, [], [], [], [])
    quantiles = [float(q) for q in ordered.iloc[quantile_ranks(n)].to_numpy()]
    edges = histogram_edges(quantiles)
    upto = ordered.searchsorted(edges, side="right")
    counts = np.diff(np.concatenate([[0], np.asarray(upto, dtype=np.int64)]))
    std = float(ordered.std(ddof=1)) if n > 1 else 0.0
    return NumericProfile(
        field=name,
        count=n,
        null_count=null_count,
        mean=float(ordered.mean()),
        std=std if math.isfinite(std) else 0.0,
        min=float(ordered.iloc[0]),
        max=float(ordered.iloc[-1]),
        quantile_probs=list(QUANTILE_PROBS),
        quantiles=quantiles,
        histogram_edges=edges,
        histogram_counts=[int(c) for c in counts],
    )


def categorical_profile(name: str, column: pd.Series) -> CategoricalProfile | None:
    """Category counts; None when the column has more than MAX_CATEGORIES distinct values."""
    null_count = int(column.isna().sum())
    counts = column.dropna().astype(str).value_counts()
    if len(counts) > MAX_CATEGORIES:
        return None
    tally = {str(k): int(v) for k, v in counts.items()}
    names, kept, other = rank_categories(tally)
    return CategoricalProfile(name, int(sum(tally.values())), null_count, names, kept, other)


# -- a dataset ----------------------------------------------------------------------
def profile_dataset(
    frame: pd.DataFrame, contract: Contract, source: str, engine: str = "pandas", check: bool = True
) -> Profile:
    """Check every record against the contract, then profile the ones that pass."""
    fields = dataset_fields(contract)
    counts: dict[tuple[str, str], int] = {}
    if check:
        rows: list[str] = []
        for start in range(0, len(frame), CHECK_CHUNK):  # dicts of all rows would not fit
            rows += check_rows(frame.iloc[start : start + CHECK_CHUNK].to_dict("records"), contract)
        counts = dict(count_violations(rows))
        frame = frame[[not r for r in rows]]
    numeric = [numeric_profile(n, _column(frame, n)) for n in fields.numeric]
    categorical = [
        p
        for n in fields.categorical
        if (p := categorical_profile(n, _column(frame, n))) is not None
    ]
    profile = Profile(
        subject_kind="dataset",
        subject=contract.dataset,
        source=source,
        engine=engine,
        rows=len(frame),
        numeric=numeric,
        categorical=categorical,
        contract_version=contract.version,
    )
    violations = rule_violations(counts, contract) + null_rate_violations(profile, contract)
    return _with(profile, violations=violations)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame:
        return frame[name]
    return pd.Series([None] * len(frame), dtype="object")


# -- a model's results -------------------------------------------------------------------
def result_measures(frame: pd.DataFrame) -> pd.DataFrame:
    """Per result: model, error (0/1) and, for successful ones, the measures drift watches."""
    ok = frame["status"] == "ok"
    out = pd.DataFrame({"model": frame["model"].astype(str), "error": (~ok).astype("float64")})
    for name in ("e2e_ms", "input_tokens", "output_tokens"):
        out[name] = pd.to_numeric(frame[name], errors="coerce").where(ok)
    text = frame["output_text"] if "output_text" in frame else pd.Series([None] * len(frame))
    out["output_chars"] = text.str.len().where(ok).astype("float64")
    return out


def profile_results(frame: pd.DataFrame, source: str, engine: str = "pandas") -> list[Profile]:
    """One profile per model: measures, error rate, embedding centroid and cosine."""
    measures = result_measures(frame)
    profiles = []
    for model in sorted(measures["model"].unique()):
        mine = measures["model"] == model
        part = measures[mine]
        numeric = [
            numeric_profile(name, part[name])
            for name in ("e2e_ms", "input_tokens", "output_tokens", "output_chars", "error")
        ]
        embedding = None
        vectors = _embeddings(frame[mine & (frame["status"] == "ok")])
        if vectors is not None:
            norms = np.linalg.norm(vectors, axis=1)
            centroid = vectors.mean(axis=0)
            unit = centroid / (np.linalg.norm(centroid) or 1.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                cosine = np.where(norms > 0, vectors @ unit / norms, 0.0)
            numeric.append(numeric_profile("embedding_norm", pd.Series(norms)))
            numeric.append(numeric_profile("embedding_cosine", pd.Series(cosine)))
            embedding = EmbeddingProfile(
                vectors.shape[1], len(vectors), [float(x) for x in centroid]
            )
        profiles.append(
            Profile(
                subject_kind="model",
                subject=str(model),
                source=source,
                engine=engine,
                rows=len(part),
                numeric=numeric,
                categorical=[],
                embedding=embedding,
            )
        )
    return profiles


def _embeddings(frame: pd.DataFrame) -> Any:
    if "embedding" not in frame:
        return None
    vectors = [v for v in frame["embedding"] if v is not None and len(v) > 0]
    if not vectors:
        return None
    # The most common width (ties: the larger), as the Spark engine picks it.
    widths = pd.Series([len(v) for v in vectors]).value_counts()
    width = max(widths.items(), key=lambda item: (item[1], item[0]))[0]
    return np.asarray([v for v in vectors if len(v) == width], dtype=np.float64)


def _with(profile: Profile, **changes: Any) -> Profile:
    import dataclasses  # noqa: PLC0415

    return dataclasses.replace(profile, **changes)
