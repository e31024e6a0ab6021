"""drift run in process through the runner's real batch path: outputs in the batch's
transaction, in-memory detectors rolled back when a batch is not committed.

Tickets go through validate's harness first, so drift reads exactly what validate writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from processors.drift.engine import DriftEngine
from processors.drift.processor import PROCESSOR, DriftResources
from processors.drift.settings import DriftSettings
from processors.drift.signals import dataset_plan
from processors.validate.processor import PROCESSOR as VALIDATE
from streams.contracts.catalog import catalog_for
from streams.contracts.records import InferenceResult
from streams.llm.model_catalog import load_models
from streams.runtime.spec import InputRecord
from streams.runtime.testing import BatchResult, Harness
from streams.settings import Settings
from tests.support.drift_streams import tickets

TOPIC = "support_tickets.validated"
SIGNAL = "dataset:support_tickets:first_response_minutes"


@pytest.fixture(scope="module")
def validated() -> list[bytes]:
    """12,000 tickets as validate writes them; the response time shifts at 6,000."""
    with Harness(VALIDATE, settings=Settings()) as validate:
        records = [
            validate.record(
                "raw.support_tickets",
                orjson.dumps({**t, "created_at": t["created_at"].isoformat()}),
            )
            for t in tickets(12_000, seed=3, shift="mean", at=6000)
        ]
        out = validate.run(records)
    assert out.dead_letters == []
    return [p.raw for p in out.on(TOPIC)]


@pytest.fixture
def harness() -> Iterator[Harness[DriftSettings, DriftResources]]:
    settings = Settings()
    config = DriftSettings()
    catalog = catalog_for(settings)
    # drift's setup restores checkpoints and profiles from Kafka; here they start empty.
    resources = DriftResources(
        engine=DriftEngine(config.monitor_params()),
        plans={TOPIC: dataset_plan(catalog.dataset("support_tickets").contract)},
        models=frozenset(load_models().models),
    )
    with Harness(PROCESSOR, settings=settings, config=config, resources=resources) as harness:
        yield harness


def batch(harness: Harness[Any, Any], values: list[bytes]) -> list[InputRecord]:
    return [harness.record(TOPIC, value) for value in values]


def alerts(out: BatchResult) -> list[dict[str, Any]]:
    return out.values("drift.alerts")


def test_alerts_with_their_record_and_checkpoints_with_the_batch(
    harness: Harness[DriftSettings, DriftResources], validated: list[bytes]
) -> None:
    raised = []
    for start in range(0, 12_000, 500):
        records = batch(harness, validated[start : start + 500])
        out = harness.run(records)
        assert out.produced[-1].topic == "drift.state"
        for alert in alerts(out):
            assert alert["window_end"]["offset"] in {r.offset for r in records}
            raised.append(alert["signal"])
    assert raised == [SIGNAL]


def test_an_aborted_batch_is_rolled_back_and_not_applied_twice(
    harness: Harness[DriftSettings, DriftResources], validated: list[bytes]
) -> None:
    for start in range(0, 5000, 500):
        harness.run(batch(harness, validated[start : start + 500]))
    engine = harness.ctx.resources.engine
    seen = engine.monitors[SIGNAL].seen
    shifted = batch(harness, validated[5000:7000])
    first = harness.run_aborted(shifted)  # its transaction aborts...
    assert engine.monitors[SIGNAL].seen == seen + 2000
    harness.abort()  # ...the runner rolls the detectors back...
    assert engine.monitors[SIGNAL].seen == seen
    retried = harness.run(shifted)  # ...and processes the same records again
    assert engine.monitors[SIGNAL].seen == seen + 2000
    assert [a["signal"] for a in alerts(retried)] == [a["signal"] for a in alerts(first)]
    assert [a["window_end"]["offset"] for a in alerts(retried)] == [
        a["window_end"]["offset"] for a in alerts(first)
    ]


def test_a_detector_failure_dead_letters_its_record_and_keeps_the_rest(
    harness: Harness[DriftSettings, DriftResources],
    validated: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A detector that raises is an error the runner handles, not a process exit."""
    harness.run(batch(harness, validated[:500]))
    engine = harness.ctx.resources.engine
    seen = engine.monitors[SIGNAL].seen
    records = batch(harness, validated[500:510])
    poison = records[4].offset
    observe = DriftEngine.observe

    def failing(self: DriftEngine, observations: Any) -> list[dict[str, Any]]:
        pairs = list(observations)
        if any(position.offset == poison for _, position in pairs):
            raise FloatingPointError("detector blew up")
        return observe(self, pairs)

    monkeypatch.setattr(DriftEngine, "observe", failing)
    out = harness.run(records)
    assert out.kinds() == ["ProcessingFailed"]
    assert out.dead_letters[0].info.offset == poison
    assert out.dead_letters[0].info.details == {"exception": "FloatingPointError"}
    # Nine records applied once each, the poison not at all.
    assert engine.monitors[SIGNAL].seen == seen + 9


def test_a_record_without_fields_goes_to_the_dlq(
    harness: Harness[DriftSettings, DriftResources],
) -> None:
    out = harness.run([harness.record(TOPIC, b"\x00\x00\x00\x00\x01\x02")])
    assert len(out.dead_letters) == 1


def result(model: str, i: int) -> dict[str, Any]:
    return InferenceResult(
        request_id=f"r{i}",
        tenant_id="acme",
        model=model,
        status="ok",
        request_created_at=datetime(2026, 3, 5, tzinfo=UTC),
        completed_at=datetime(2026, 3, 5, 0, 0, 1, tzinfo=UTC),
        input_tokens=10,
        output_tokens=3,
        inference_ms=12.0,
    ).to_avro()


def test_results_of_models_outside_the_catalog_are_dead_lettered(
    harness: Harness[DriftSettings, DriftResources],
) -> None:
    """Each model name opens a dozen detectors: made-up names must not open any."""
    known = sorted(load_models().models)[0]
    records = [harness.record("inference.results", result(known, 0))] + [
        harness.record("inference.results", result(f"made-up-{i}", i)) for i in range(1, 200)
    ]
    out = harness.run(records)
    assert out.kinds() == ["UnknownModel"] * 199
    assert all("made-up" not in d.info.message for d in out.dead_letters)
    monitors = harness.ctx.resources.engine.monitors
    assert monitors and {m.signal.subject for m in monitors.values()} == {known}
