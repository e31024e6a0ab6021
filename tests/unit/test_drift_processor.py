"""The drift processor's batch function: outputs in the batch's transaction, retries once."""

from __future__ import annotations

import logging

import pytest

from processors import drift
from processors.drifting.engine import DriftEngine
from processors.drifting.monitor import MonitorParams
from processors.drifting.signals import dataset_plan
from streams.catalog import load_catalog
from streams.errors import RecordError
from streams.processor import Context, InputRecord
from streams.settings import PROJECT_ROOT, Settings
from tests.drift_streams import tickets

TOPIC = "support_tickets.validated"


@pytest.fixture
def ctx():
    catalog = load_catalog(PROJECT_ROOT / "schemas")
    context = Context("drift", Settings(), catalog, logging.getLogger("test"))
    context.resources.update(
        engine=DriftEngine(MonitorParams()),
        plans={TOPIC: dataset_plan(catalog.dataset("support_tickets").contract)},
        applied={},
        uncommitted={},
    )
    return context


def batch(values, start):
    return [InputRecord(TOPIC, 0, start + i, None, v, b"", [], 0) for i, v in enumerate(values)]


def run(ctx, records, commit=True):
    outcomes = drift.process_batch(records, ctx)
    if commit:
        drift._after_commit(ctx)
    return outcomes


def topics(outcomes):
    return [o.topic for outcome in outcomes if isinstance(outcome, list) for o in outcome]


def test_alerts_with_their_record_and_checkpoints_with_the_last(ctx):
    records = list(tickets(12_000, seed=3, shift="mean", at=6000))
    alerts = []
    for start in range(0, 12_000, 500):
        outcomes = run(ctx, batch(records[start : start + 500], start))
        assert [o.topic for o in outcomes[-1]][-1] == "drift.state"
        for index, outcome in enumerate(outcomes):
            for output in outcome:
                if output.topic == "drift.alerts":
                    assert output.value["window_end"]["offset"] == start + index
                    assert output.key == output.value["signal"]
                    alerts.append(output.value)
    assert [a["signal"] for a in alerts] == ["dataset:support_tickets:first_response_minutes"]


def test_a_retried_batch_is_not_applied_twice(ctx):
    records = list(tickets(7000, seed=3, shift="mean", at=5000))
    for start in range(0, 5000, 500):
        run(ctx, batch(records[start : start + 500], start))
    engine: DriftEngine = ctx.resources["engine"]
    shifted = batch(records[5000:5500], 5000)
    first = run(ctx, shifted, commit=False)  # its transaction aborts...
    seen = engine.monitors["dataset:support_tickets:first_response_minutes"].seen
    retried = run(ctx, shifted + batch(records[5500:5600], 5500))  # ...and the runner retries
    assert engine.monitors["dataset:support_tickets:first_response_minutes"].seen == seen + 100
    assert topics(retried[:500]).count("drift.alerts") == topics(first).count("drift.alerts") == 1
    assert "drift.state" in topics(retried)


def test_a_record_without_fields_goes_to_the_dlq(ctx):
    outcomes = run(ctx, [InputRecord(TOPIC, 0, 0, None, "not a record", b"", [], 0)])
    assert isinstance(outcomes[0], RecordError)
