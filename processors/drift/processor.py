"""drift: ``<dataset>.validated`` and ``inference.results`` → ``drift.alerts`` (+ ``drift.state``).

Watches every numeric and categorical field of each dataset, each field's null
rate, and per model the latency, token counts, output length, embedding norm,
cosine similarity to the reference centroid and error rate. ADWIN and
Page-Hinkley run on every value; a binned KS or chi-square test compares each
full window with the reference profile (``sluice batch profile``; without one,
a signal's first values). See ``processors/drift/monitor.py`` for how one
shift yields one alert.

**Exactly-once state.** Each batch's alerts and the checkpoints of the signals
it touched are outputs of that batch, so the runner commits them in one Kafka
transaction with the input offsets. On start, drift reads the latest committed
checkpoint per signal from the compacted ``drift.state``: after ``kill -9`` it
resumes from exactly the state that matches the offsets it resumes from, so it
neither forgets history nor alerts twice.

**One replica per signal.** Detectors need every value of a signal, so run one
replica per set of inputs (split datasets over replicas with
``SLUICE_DRIFT__DATASETS`` and ``SLUICE_DRIFT__RESULTS``, each with its own
``SLUICE_RUNNER__GROUP_PREFIX``), not several replicas in one group.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from processors.drift.engine import DriftEngine
from processors.drift.monitor import Position
from processors.drift.settings import DriftSettings
from processors.drift.signals import (
    FieldPlan,
    Observation,
    dataset_observations,
    dataset_plan,
    model_observations,
)
from processors.drift.store import read_latest
from streams.contracts.catalog import Catalog
from streams.errors import BadSignal, NotARecord, RecordError, UnknownModel, value_free
from streams.llm.model_catalog import load_models
from streams.profiling.profiles import Profile
from streams.runtime.spec import Context, InputRecord, Outcome, Output, ProcessorSpec

RESULTS_TOPIC = "inference.results"
ALERTS_TOPIC = "drift.alerts"
STATE_TOPIC = "drift.state"
PROFILES_TOPIC = "drift.profiles"

ALERTS = Counter(
    "sluice_drift_alerts_total",
    "Drift alerts raised, by signal, detector and severity.",
    ["signal", "detector", "severity"],
)
SIGNALS = Gauge("sluice_drift_signals", "Signals drift is watching.")


def _datasets(catalog: Catalog, settings: DriftSettings) -> list[str]:
    return settings.datasets or sorted(catalog.datasets)


def _inputs(catalog: Catalog, settings: DriftSettings) -> list[str]:
    topics = [catalog.dataset(name).validated_topic for name in _datasets(catalog, settings)]
    if settings.results:
        topics.append(RESULTS_TOPIC)
    return topics


# -- pure functions ---------------------------------------------------------------
def observations_of(
    record: InputRecord,
    plans: dict[str, FieldPlan],
    engine: DriftEngine,
    models: Collection[str],
) -> list[Observation]:
    """The signals one decoded input record carries; RecordError if it carries nonsense.

    A result of a model the model catalog does not list is refused: infer only serves
    catalog models, and each model name opens a dozen detectors and a checkpoint, so
    made-up names must not grow drift's memory and state topic without bound.
    """
    value = record.value
    if not isinstance(value, dict):
        raise NotARecord("record is not an Avro record", stage="drift")
    plan = plans.get(record.topic)
    if plan is None and value.get("model") not in models:
        raise UnknownModel(
            "result of a model that is not in the model catalog",
            stage="drift",
            details={"catalog_models": str(len(models))},
        )
    try:
        if plan is not None:
            return dataset_observations(value, plan)
        return model_observations(value, engine.cosine)
    except (TypeError, ValueError, KeyError) as exc:
        raise BadSignal(
            f"cannot read signals: {value_free(exc)}",
            details={"exception": type(exc).__name__},
        ) from exc


def process_batch(records: Sequence[InputRecord], ctx: DriftContext) -> list[Outcome]:
    """Update every signal's detectors and return alerts and checkpoints as outputs.

    Alerts go with the record that raised them, checkpoints with the batch's last
    record, so all of them land in the batch's transaction. The detectors live in
    memory; if the batch is not committed, the runner calls ``rollback`` and they
    return to their last committed checkpoint before the batch is processed again.
    """
    engine = ctx.resources.engine
    outcomes: list[Outcome] = []
    pairs: list[tuple[Observation, Position]] = []
    fresh: dict[tuple[str, int, int], int] = {}
    for record in records:
        try:
            found = observations_of(record, ctx.resources.plans, engine, ctx.resources.models)
        except RecordError as error:
            outcomes.append(error)
            continue
        position = Position(record.topic, record.partition, record.offset, record.timestamp_ms)
        pairs += [(observation, position) for observation in found]
        fresh[(record.topic, record.partition, record.offset)] = len(outcomes)
        outcomes.append([])
    # A detector that raises leaves the batch uncommitted: the runner rolls the engine
    # back and finds the record that made it raise by processing the batch record by record.
    alerts = engine.observe(pairs)
    checkpoints = engine.checkpoints()
    for alert in alerts:
        end = alert["window_end"]
        outcome = outcomes[fresh[(end["topic"], end["partition"], end["offset"])]]
        assert isinstance(outcome, list)  # noqa: S101 (only records with signals raise alerts)
        outcome.append(Output(ALERTS_TOPIC, alert, key=alert["signal"]))
    ctx.resources.pending_alerts.extend(alerts)
    if checkpoints:
        last = max(i for i, o in enumerate(outcomes) if isinstance(o, list))
        target = outcomes[last]
        assert isinstance(target, list)  # noqa: S101
        target += [Output(STATE_TOPIC, c.value, key=c.key) for c in checkpoints]
    return outcomes


# -- the processor declaration ------------------------------------------------------
@dataclass
class DriftResources:
    """The detectors, the field plan of each dataset topic, and the alerts not yet committed."""

    engine: DriftEngine
    plans: dict[str, FieldPlan]
    #: The model catalog's model names: results of other models are dead-lettered.
    models: frozenset[str]
    pending_alerts: list[dict[str, Any]] = field(default_factory=list)


DriftContext = Context[DriftSettings, DriftResources]


def _setup(ctx: Context[DriftSettings, None]) -> DriftResources:
    settings = ctx.config
    catalog = ctx.catalog
    started = time.monotonic()
    profiles = {
        key: Profile.from_avro(value)
        for key, value in _read(ctx, PROFILES_TOPIC, settings.restore_timeout_s).items()
    }
    states = _read(ctx, STATE_TOPIC, settings.restore_timeout_s)
    engine = DriftEngine(settings.monitor_params(), profiles, states)
    ctx.logger.info(
        "drift: %d profiles, %d signal checkpoints restored in %.1fs",
        len(profiles),
        len(engine.monitors),
        time.monotonic() - started,
    )
    return DriftResources(
        engine=engine,
        plans={
            catalog.dataset(name).validated_topic: dataset_plan(catalog.dataset(name).contract)
            for name in _datasets(catalog, settings)
        },
        models=frozenset(load_models(ctx.settings.triton.models_file).models),
    )


def _read(ctx: Context[DriftSettings, None], topic: str, timeout_s: float) -> dict[str, Any]:
    schema = ctx.catalog.value_schema(topic)
    serde = ctx.serde
    return read_latest(
        ctx.settings,
        ctx.catalog.physical(topic),
        lambda data: serde.decode(data, schema, topic=topic),
        timeout_s,
    )


def _rollback(ctx: DriftContext) -> None:
    ctx.resources.engine.rollback()
    ctx.resources.pending_alerts.clear()


def _after_commit(ctx: DriftContext) -> None:
    ctx.resources.engine.committed()
    for alert in ctx.resources.pending_alerts:
        ALERTS.labels(alert["signal"], alert["detector"], alert["severity"]).inc()
        ctx.logger.warning(
            "drift %s: %s %s on %s (statistic %.4g, threshold %.4g, after %d values)",
            alert["severity"],
            alert["signal"],
            alert["detector"],
            alert["stream"],
            alert["statistic"],
            alert["threshold"],
            alert["values_seen"],
        )
    ctx.resources.pending_alerts.clear()
    SIGNALS.set(len(ctx.resources.engine.monitors))


PROCESSOR: ProcessorSpec[DriftSettings, DriftResources] = ProcessorSpec(
    name="drift",
    description="Watch dataset fields and model outputs for drift; alerts to drift.alerts.",
    settings=DriftSettings,
    inputs=_inputs,
    outputs=lambda catalog, settings: [ALERTS_TOPIC, STATE_TOPIC],
    process_batch=process_batch,
    setup=_setup,
    after_commit=_after_commit,
    rollback=_rollback,
)
