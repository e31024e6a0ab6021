"""Drift detection on synthetic streams: bounded delay after a planted shift, no crying wolf.

Bounds (values of the signal after the shift, each with margin over what the
seeds below measure; see README "Drift"):

| planted shift                                   | detected within |
| ----------------------------------------------- | --------------: |
| response time: log-mean +0.5 sigma (~50% slower) |             400 |
| response time: log-sigma doubled                |             400 |
| a new language at 15% of records               |             400 |
| satisfaction null rate 0.3 -> 0.6               |             400 |
| embeddings rotated (cosine to centroid 1 -> 0.8) |             200 |
| category mix (window test only)                 |   2 x window    |

False alarms: 100,000 stable tickets (11 signals, so 1.1M detector values) and
100,000 stable results (7 signals): at most 1 alert in all, measured and printed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from processors.drift.engine import DriftEngine
from processors.drift.monitor import MonitorParams, Position, SignalId, SignalMonitor
from processors.drift.reference import CategoricalReference, NumericReference
from processors.drift.signals import dataset_observations, dataset_plan, model_observations
from streams.contracts.catalog import load_catalog
from streams.settings import PROJECT_ROOT
from tests.support.drift_streams import results, tickets

TOPIC = "support_tickets.validated"
SHIFT_AT = 10_000
BATCH = 500


@pytest.fixture(scope="module")
def plan():
    return dataset_plan(load_catalog(PROJECT_ROOT / "schemas").dataset("support_tickets").contract)


def run_tickets(records, plan, engine=None):
    engine = engine or DriftEngine(MonitorParams())
    alerts = []
    for start in range(0, len(records), BATCH):
        pairs = [
            (observation, Position(TOPIC, 0, start + i, 0))
            for i, record in enumerate(records[start : start + BATCH])
            for observation in dataset_observations(record, plan)
        ]
        alerts += engine.observe(pairs)
        engine.checkpoints()
        engine.committed()
    return engine, alerts


def run_results(records, engine=None):
    engine = engine or DriftEngine(MonitorParams())
    alerts = []
    for start in range(0, len(records), BATCH):
        pairs = [
            (observation, Position("inference.results", 0, start + i, 0))
            for i, record in enumerate(records[start : start + BATCH])
            for observation in model_observations(record, engine.cosine)
        ]
        alerts += engine.observe(pairs)
    return engine, alerts


def test_plan_watches_the_contract_fields(plan):
    numeric = ["first_response_minutes", "satisfaction", "order_value_usd"]
    assert [n for n, _ in plan.numeric] == numeric
    assert {n for n, _ in plan.categorical} == {
        "tenant_id",
        "channel",
        "priority",
        "product",
        "customer_tier",
        "language",
    }
    assert not {"body", "ticket_id"} & {n for n, _ in plan.categorical}
    assert {n for n, _ in plan.nullable} == {
        "customer_tier",
        "first_response_minutes",
        "satisfaction",
        "order_value_usd",
    }


def test_false_alarms_on_100k_stable_tickets(plan):
    records = list(tickets(100_000, seed=11))
    engine, alerts = run_tickets(records, plan)
    values = sum(m.seen for m in engine.monitors.values())
    print(
        f"\n100,000 stable tickets, {len(engine.monitors)} signals, {values:,} values: "
        f"{len(alerts)} false alarm(s) {[a['signal'] for a in alerts]}"
    )
    assert values > 1_000_000
    assert len(alerts) <= 1


def test_false_alarms_on_100k_stable_results():
    engine, alerts = run_results(list(results(100_000, seed=12)))
    print(f"\n100,000 stable results, {len(engine.monitors)} signals: {len(alerts)} false alarm(s)")
    assert len(alerts) <= 1


@pytest.mark.parametrize(
    ("shift", "signal", "bound"),
    [
        ("mean", "dataset:support_tickets:first_response_minutes", 400),
        ("variance", "dataset:support_tickets:first_response_minutes", 400),
        ("new_category", "dataset:support_tickets:language", 400),
        ("null_rate", "dataset:support_tickets:satisfaction.null_rate", 400),
    ],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planted_shift_raises_one_alert_within_bound(plan, shift, signal, bound, seed):
    records = list(tickets(30_000, seed=seed, shift=shift, at=SHIFT_AT))
    _, alerts = run_tickets(records, plan)
    mine = [a for a in alerts if a["signal"] == signal]
    others = [a["signal"] for a in alerts if a["signal"] != signal]
    assert len(mine) == 1, f"{len(mine)} alerts for {signal}; all: {[a['signal'] for a in alerts]}"
    alert = mine[0]
    shift_value = _values_before(records, SHIFT_AT, signal)
    delay = alert["values_seen"] - shift_value
    print(
        f"\n{shift} seed {seed}: {alert['detector']} on {alert['stream']} after {delay} values, "
        f"{alert['severity']}"
    )
    assert 0 < delay <= bound
    assert alert["window_end"]["offset"] >= SHIFT_AT
    assert not others, f"unrelated alerts: {others}"


def _values_before(records, at, signal):
    """How many values the signal had received before record ``at``."""
    name = signal.split(":")[2]
    if name.endswith(".null_rate"):
        return at
    return sum(1 for r in records[:at] if r.get(name) is not None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_embedding_shift_alerts_on_cosine_within_bound(seed):
    _, alerts = run_results(list(results(30_000, seed=seed, shift_at=SHIFT_AT)))
    cosine = [a for a in alerts if a["signal"] == "model:minilm:embedding_cosine"]
    assert len(cosine) == 1, [a["signal"] for a in alerts]
    records = list(results(SHIFT_AT, seed=seed))
    # The first 2000 embeddings of successful results make the centroid; the rest are values.
    before = sum(1 for r in records if r["status"] == "ok") - 2000
    delay = cosine[0]["values_seen"] - before
    print(f"\nembedding shift seed {seed}: {cosine[0]['detector']} after {delay} values")
    assert 0 < delay <= 200
    assert cosine[0]["current"]["mean"] < cosine[0]["reference"]["mean"]


def test_category_mix_change_caught_by_the_window_test():
    params = MonitorParams()
    rng = np.random.default_rng(5)
    cats = ["a", "b", "c", "d"]
    reference = CategoricalReference.from_values(
        list(rng.choice(cats, p=[0.4, 0.3, 0.2, 0.1], size=5000))
    )
    monitor = SignalMonitor(SignalId("dataset", "d", "f", "categorical"), params, reference)
    values = list(rng.choice(cats, p=[0.4, 0.3, 0.2, 0.1], size=10_000)) + list(
        rng.choice(cats, p=[0.25, 0.25, 0.25, 0.25], size=10_000)
    )
    alerts = []
    for start in range(0, len(values), BATCH):
        chunk = values[start : start + BATCH]
        alerts += monitor.observe(
            chunk, [Position("t", 0, start + i, 0) for i in range(len(chunk))]
        )
    assert len(alerts) == 1
    assert alerts[0]["detector"] == "chi_square"
    assert alerts[0]["p_value"] < params.alpha and alerts[0]["effect"] >= params.min_psi
    assert alerts[0]["values_seen"] - 10_000 <= 2 * params.window


def test_restart_from_checkpoints_is_invisible(plan):
    """Stopping anywhere and restoring from the checkpoints gives the same alerts."""
    records = list(tickets(30_000, seed=4, shift="mean", at=SHIFT_AT))
    _, uninterrupted = run_tickets(records, plan)
    engine, first = run_tickets(records[:12_500], plan)
    states = {c.key: json.loads(json.dumps(c.value)) for c in _all_checkpoints(engine)}
    restored = DriftEngine(MonitorParams(), {}, states)
    pairs_offset = 12_500
    second = []
    for start in range(pairs_offset, len(records), BATCH):
        pairs = [
            (observation, Position(TOPIC, 0, start + i, 0))
            for i, record in enumerate(records[start : start + BATCH])
            for observation in dataset_observations(record, plan)
        ]
        second += restored.observe(pairs)

    def strip(alerts):  # the wall clock, and the epoch of each engine's own monitors
        return [
            {k: v for k, v in a.items() if k not in ("detected_at", "alert_id")} for a in alerts
        ]

    assert strip(first + second) == strip(uninterrupted)
    assert len(uninterrupted) == 1
    epoch = engine.monitors["dataset:support_tickets:first_response_minutes"].epoch
    assert (first + second)[0]["alert_id"].split("#")[1] == epoch
    assert restored.monitors["dataset:support_tickets:first_response_minutes"].epoch == epoch


def _all_checkpoints(engine):
    engine._dirty.update(engine.monitors)
    return engine.checkpoints()


def test_monitor_state_survives_json_at_every_stage():
    params = MonitorParams(warmup=200, window=100)
    rng = np.random.default_rng(0)
    monitor = SignalMonitor(SignalId("dataset", "d", "x", "numeric"), params)
    for step in range(6):
        values = rng.normal(size=150).tolist()
        monitor.observe(values, [Position("t", 0, step * 150 + i, 0) for i in range(150)])
        copy = SignalMonitor.from_state(params, json.loads(json.dumps(monitor.state())))
        assert copy.state() == monitor.state()
    assert isinstance(monitor.reference, NumericReference)


def test_model_names_with_colons_survive_a_restart():
    engine, _ = run_results(list(results(3000, seed=8, model="llama3:8b")))
    engine._dirty.update([*engine.monitors, "model:llama3:8b:embedding_centroid"])
    states = {c.key: json.loads(json.dumps(c.value)) for c in engine.checkpoints()}
    restored = DriftEngine(MonitorParams(), {}, states)
    assert set(restored.monitors) == set(engine.monitors)
    assert "model:llama3:8b:e2e_ms" in restored.monitors
    assert restored.centroids["llama3:8b"].centroid is not None


def test_a_checkpoint_without_an_epoch_still_loads():
    monitor = SignalMonitor(SignalId("dataset", "d", "x", "numeric"), MonitorParams())
    state = monitor.state()
    del state["epoch"]
    assert SignalMonitor.from_state(MonitorParams(), state).epoch
