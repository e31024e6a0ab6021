"""100,000 made-up tenant ids and model names leave caches and label sets at their bounds.

Sizes are counted, and memory measured with tracemalloc: what the first 10,000
ids allocate is the cost of filling the caches; the next 90,000 must add
almost nothing (a generous fixed bound, far below what unbounded caches take).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from prometheus_client import Metric

from processors.guard.engine import GuardEngine, GuardItem
from processors.guard.hashing import TenantHasher
from processors.guard.pii import Detection
from processors.guard.policy import Entity
from processors.guard.redaction import Redactor
from processors.infer import processor as infer
from processors.meter import observe
from processors.meter import state as meter
from processors.meter.usage import usage_of
from streams.contracts.records import InferenceRequest, InferenceResult
from streams.errors import ImplausibleTimestamp
from streams.llm.budgets import BudgetConfig
from streams.llm.model_catalog import load_models
from streams.llm.pricing import load_prices
from streams.runtime.metrics import OTHER
from streams.settings import PROJECT_ROOT
from tests.support.guard import SECRET, make_policy, unit_key_ids

IDS = 100_000
WARMUP = 10_000
BOUND = 1_000
#: Bytes the 90,000 ids after the first 10,000 may add (unbounded caches: tens of MiB).
GROWTH_LIMIT = 2 * 1024 * 1024
NOW = datetime(2026, 3, 5, 12, tzinfo=UTC)


def growth_after_warmup(step: Callable[[int], None]) -> int:
    """Bytes still allocated after ``step(i)`` for the last 90,000 ids, beyond the first 10,000.

    Tracing starts before the first id, so what an evicted entry frees is counted too.
    """
    tracemalloc.start()
    try:
        for i in range(WARMUP):
            step(i)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(WARMUP, IDS):
            step(i)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before


def label_values(metrics: Sequence[Metric], label: str) -> set[str]:
    return {s.labels[label] for m in metrics for s in m.samples if label in s.labels}


def test_guard_caches_stay_at_their_bound_for_100k_tenants():
    hasher = TenantHasher(SECRET, unit_key_ids, max_tenants=BOUND)
    policy = make_policy(EMAIL_ADDRESS="hash")
    redactor = Redactor(hasher, max_tenants=BOUND)

    def step(i: int) -> None:
        tenant = f"tenant-{i}"
        hasher.token(tenant, "EMAIL_ADDRESS", "ana@example.com")
        redactor.operators(policy.for_tenant(tenant))

    growth = growth_after_warmup(step)
    print(f"guard caches: {growth} bytes after the first {WARMUP} tenants")
    assert len(hasher._keys) == BOUND
    assert len(redactor._operators) == BOUND
    assert len(policy._resolved) == policy._resolved.max_entries
    assert growth < GROWTH_LIMIT


class _EmailAt0:
    """An analyzer without NER: every text starts with an e-mail address of 15 characters."""

    def analyze_batch(
        self, texts: Sequence[str], entities: frozenset[Entity], threshold: float
    ) -> list[list[Detection]]:
        return [[Detection(0, 15, "EMAIL_ADDRESS", 1.0, "fake")] for _ in texts]


def test_the_engine_bounds_its_per_tenant_caches_from_its_setting():
    hasher = TenantHasher(SECRET, unit_key_ids, max_tenants=100)
    engine = GuardEngine(
        make_policy(EMAIL_ADDRESS="hash"),
        _EmailAt0(),  # type: ignore[arg-type]
        hasher,
        None,
        tenant_cache_size=100,
        clock=lambda: NOW,
    )
    try:
        for batch in range(10):
            items = [
                GuardItem(f"r{i}", f"tenant-{batch}-{i}", "ana@example.com wrote")
                for i in range(100)
            ]
            out = engine.redact_batch(items)
            assert all(o.text.startswith("<EMAIL_ADDRESS_") for o in out)
    finally:
        engine.close()
    assert len(hasher._keys) == 100
    assert len(engine._redactor._operators) == 100


def test_infer_model_labels_stay_in_the_catalog_for_100k_model_names():
    catalog = load_models()
    now = NOW

    def step(i: int) -> None:
        request = InferenceRequest(
            request_id=f"r{i}",
            tenant_id=f"tenant-{i}",
            model=f"made-up-model-{i}",
            input_text="hi",
            created_at=now,
        )
        infer._refused(request, "unknown_model", "not in the catalog", now, catalog=catalog)

    growth = growth_after_warmup(step)
    print(f"infer labels: {growth} bytes after the first {WARMUP} model names")
    models = label_values(list(infer.RESULTS.collect()), "model")
    assert OTHER in models
    assert models <= set(catalog.models) | {OTHER}
    assert growth < GROWTH_LIMIT


def test_meter_opens_no_future_window_and_bounds_its_model_labels_for_100k_ids():
    prices = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
    budgets = BudgetConfig.model_validate({})
    state: dict[str, dict[str, object]] = {}
    far = datetime(9999, 12, 31, tzinfo=UTC)
    refused = 0
    for i in range(IDS):
        # Absurd dates (year 9999, days ahead) are refused; the near future is clamped.
        completed_at = [
            far,
            NOW + timedelta(days=i % 365 + 1, seconds=1),
            NOW + timedelta(minutes=6 + i % 1400),
        ][i % 3]
        result = InferenceResult(
            request_id=f"r{i}",
            tenant_id="acme",
            model=f"made-up-model-{i}",
            status="ok",
            request_created_at=NOW,
            completed_at=completed_at,
            input_tokens=10,
            output_tokens=1,
        )
        usage = usage_of(result, prices)
        try:
            out = meter.apply(state, usage, partition=0, offset=i, budgets=budgets, now=NOW)
        except ImplausibleTimestamp:
            refused += 1
            continue
        assert out.clamped
        observe.count_usage(usage, prices.models)
    assert refused == len(range(0, IDS, 3)) + len(range(1, IDS, 3))
    windows = [v for k, v in state.items() if k.startswith("w|")]
    assert max(int(str(w["e"])) for w in windows) <= meter.window_start(NOW, "1h") + 3_600_000
    models = label_values(list(observe.TOKENS.collect()), "model")
    assert models <= set(prices.models) | {OTHER}
    # Everything windowed is swept once final; request ids leave after dedup_records.
    later = NOW + timedelta(days=3)
    meter.sweep(
        state, partition=0, offset=IDS, now=later, dedup_records=1000, retention_ms=86_400_000
    )
    assert not [k for k in state if k.startswith("w|")]
    assert len([k for k in state if k.startswith("s|")]) <= 1000
