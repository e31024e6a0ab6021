"""Reference profiles with the pandas engine: known quantiles, exact histograms, contract checks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from processors.drift.engine import DriftEngine
from processors.drift.monitor import MonitorParams, Position
from processors.drift.signals import dataset_observations, dataset_plan
from streams.contracts.catalog import load_catalog
from streams.profiling import pandas_engine
from streams.profiling.profiles import QUANTILE_PROBS, Profile
from streams.settings import PROJECT_ROOT
from tests.support.drift_streams import results, tickets


@pytest.fixture(scope="module")
def contract():
    return load_catalog(PROJECT_ROOT / "schemas").dataset("support_tickets").contract


def test_quantiles_of_normal_data_are_the_known_ones():
    values = np.random.default_rng(0).normal(10.0, 2.0, size=200_000)
    profile = pandas_engine.numeric_profile("x", pd.Series(values))
    expected = stats.norm.ppf(QUANTILE_PROBS[1:-1], loc=10.0, scale=2.0)
    assert np.allclose(profile.quantiles[1:-1], expected, atol=0.05)
    # Exactly numpy's inverse-CDF quantiles (the definition both engines share).
    assert profile.quantiles == list(np.quantile(values, QUANTILE_PROBS, method="inverted_cdf"))
    assert abs(profile.mean - 10.0) < 0.02 and abs(profile.std - 2.0) < 0.02
    assert sum(profile.histogram_counts) == profile.count == 200_000
    cdf = profile.cdf()
    assert all(
        abs(c - (values <= e).mean()) < 1e-12
        for c, e in zip(cdf, profile.histogram_edges, strict=True)
    )


def test_discrete_field_keeps_exact_atoms():
    profile = pandas_engine.numeric_profile("score", pd.Series([1, 2, 2, 3, 3, 3, None, None]))
    assert profile.histogram_edges == [1.0, 2.0, 3.0]
    assert profile.histogram_counts == [1, 2, 3]
    assert profile.null_count == 2 and profile.count == 6


def test_categories_ranked_and_high_cardinality_skipped():
    column = pd.Series(["b", "a", "b", None, "c", "a", "b"])
    profile = pandas_engine.categorical_profile("f", column)
    assert (profile.categories, profile.counts, profile.null_count) == (
        ["b", "a", "c"],
        [3, 2, 1],
        1,
    )
    assert pandas_engine.categorical_profile("id", pd.Series([str(i) for i in range(100)])) is None


def test_contract_violations_by_field_and_null_rate(contract, tmp_path):
    rows = list(tickets(2000, seed=1))
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
    rows[0]["channel"] = "fax"
    rows[1]["first_response_minutes"] = -1
    rows[2]["first_response_minutes"] = -2
    for row in rows[:1700]:
        row["satisfaction"] = None  # 85% nulls: above the contract's 0.8
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    profile = pandas_engine.profile_dataset(pandas_engine.read_file(path), contract, str(path))
    found = {(v.field, v.rule): v.count for v in profile.violations}
    assert found == {
        ("channel", "enum"): 1,
        ("first_response_minutes", "min"): 2,
        ("satisfaction", "max_null_rate"): 1,
    }
    assert profile.rows == 1997  # records that broke a rule are not part of the reference
    assert {c.field for c in profile.categorical} >= {"channel", "product", "language"}
    assert "body" not in {c.field for c in profile.categorical}


def test_profile_round_trips_through_json_and_avro_shape(contract):
    frame = pd.DataFrame(list(tickets(500, seed=2)))
    profile = pandas_engine.profile_dataset(frame, contract, "memory")
    assert Profile.from_json(profile.to_json()) == profile
    assert Profile.from_avro(profile.to_avro()) == profile


def test_results_profile_per_model_with_centroid():
    frame = pd.DataFrame(list(results(3000, seed=3)) + list(results(500, seed=4, model="other")))
    profiles = pandas_engine.profile_results(frame, "memory")
    assert [p.subject for p in profiles] == ["minilm", "other"]
    minilm = profiles[0]
    assert minilm.embedding is not None and minilm.embedding.dimension == 32
    cosine = minilm.numeric_field("embedding_cosine")
    assert cosine.quantiles[50] > 0.9
    assert 0.0 < minilm.numeric_field("error").mean < 0.05


def test_drift_uses_the_profile_from_the_first_value(contract):
    """With a profile there is no warm-up: data that differs from the profile from the
    first record on is caught by the first test window. (ADWIN and Page-Hinkley see
    changes within the stream; a stream that is shifted from its start has none.)"""
    reference = pandas_engine.profile_dataset(
        pd.DataFrame(list(tickets(20_000, seed=5))), contract, "m"
    )
    engine = DriftEngine(MonitorParams(), {reference.key: reference})
    plan = dataset_plan(contract)
    shifted = list(tickets(3000, seed=6, shift="mean", at=0))
    pairs = [
        (o, Position("support_tickets.validated", 0, i, 0))
        for i, r in enumerate(shifted)
        for o in dataset_observations(r, plan)
    ]
    alerts = engine.observe(pairs)
    assert [a["signal"] for a in alerts] == ["dataset:support_tickets:first_response_minutes"]
    assert alerts[0]["values_seen"] <= MonitorParams().window
    assert alerts[0]["detector"] == "ks"
    assert alerts[0]["reference_source"] == f"profile:{reference.profile_id}"


def test_cudf_engine_installs_cudf_pandas_before_pandas(tmp_path):
    """The RAPIDS way: cudf.pandas.install() runs before pandas is imported, then the
    pandas engine's own code runs. A stand-in cudf package records the order (no GPU here)."""
    fake = tmp_path / "cudf"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "pandas.py").write_text(
        textwrap.dedent(
            """
            import sys
            def install():
                print("installed; pandas already imported:", "pandas" in sys.modules)
            """
        )
    )
    rows = tmp_path / "t.jsonl"
    rows.write_text(
        "\n".join(
            json.dumps({**r, "created_at": r["created_at"].isoformat()})
            for r in tickets(50, seed=1)
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "batch",
            "profile",
            "support_tickets",
            "--engine",
            "cudf",
            "--input",
            str(rows),
            "--no-publish",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env={**_env(), "PYTHONPATH": str(tmp_path)},
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "installed; pandas already imported: False" in out.stdout
    written = Profile.from_json((tmp_path / "out" / "dataset.support_tickets.json").read_text())
    assert written.engine == "cudf" and written.rows == 50


def test_cudf_engine_without_cudf_says_what_to_do(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "batch",
            "profile",
            "support_tickets",
            "--engine",
            "cudf",
            "--no-publish",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert out.returncode != 0
    assert "NVIDIA GPU" in out.stderr and "--engine pandas" in out.stderr


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
