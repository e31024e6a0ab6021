"""drift: ``<dataset>.validated`` and ``inference.results`` → ``drift.alerts`` (+ ``drift.state``).

Watches every numeric and categorical field of each dataset, each field's null
rate, and per model the latency, token counts, output length, embedding norm,
cosine similarity to the reference centroid and error rate. ADWIN and
Page-Hinkley run on every value; a binned KS or chi-square test compares each
full window with the reference profile (``sluice batch profile``; without one,
a signal's first values). See ``processors/drifting/monitor.py`` for how one
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
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from processors.drifting.engine import DriftEngine
from processors.drifting.monitor import Position
from processors.drifting.settings import DriftSettings
from processors.drifting.signals import (
    FieldPlan,
    Observation,
    dataset_observations,
    dataset_plan,
    model_observations,
)
from processors.drifting.store import read_latest
from streams.catalog import Catalog
from streams.errors import RecordError
from streams.processor import Context, InputRecord, Outcome, Output, ProcessorSpec
from streams.profiles import Profile
from streams.serde import AvroSerde

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


def _datasets(catalog: Catalog) -> list[str]:
    return DriftSettings().datasets or sorted(catalog.datasets)


def _inputs(catalog: Catalog) -> list[str]:
    topics = [catalog.dataset(name).validated_topic for name in _datasets(catalog)]
    if DriftSettings().results:
        topics.append(RESULTS_TOPIC)
    return topics


# -- pure functions ---------------------------------------------------------------
def observations_of(
    record: InputRecord, plans: dict[str, FieldPlan], engine: DriftEngine
) -> list[Observation]:
    """The signals one decoded input record carries; RecordError if it carries nonsense."""
    value = record.value
    if not isinstance(value, dict):
        raise RecordError("drift", "record is not an Avro record", error_class="NotARecord")
    plan = plans.get(record.topic)
    try:
        if plan is not None:
            return dataset_observations(value, plan)
        return model_observations(value, engine.cosine)
    except (TypeError, ValueError, KeyError) as exc:
        raise RecordError(
            "drift", f"cannot read signals: {type(exc).__name__}: {exc}", error_class="BadSignal"
        ) from exc


def process_batch(records: Sequence[InputRecord], ctx: Context) -> list[Outcome]:
    """Update every signal's detectors and return alerts and checkpoints as outputs.

    Alerts go with the record that raised them, checkpoints with the batch's last
    record, so all of them land in the batch's transaction.

    The detectors live in memory, but a batch's transaction may still abort (the
    runner then rewinds and retries it). Records already applied since the last
    commit are therefore not applied again: their outcome from the first attempt
    is replayed, and every signal touched since the last commit is checkpointed.
    """
    engine: DriftEngine = ctx.resources["engine"]
    plans: dict[str, FieldPlan] = ctx.resources["plans"]
    applied: dict[tuple[str, int], int] = ctx.resources["applied"]
    uncommitted: dict[tuple[str, int, int], Outcome] = ctx.resources["uncommitted"]
    outcomes: list[Outcome] = []
    pairs: list[tuple[Observation, Position]] = []
    fresh: dict[tuple[str, int, int], int] = {}
    for record in records:
        where = (record.topic, record.partition, record.offset)
        if record.offset <= applied.get((record.topic, record.partition), -1):
            replay = uncommitted[where]
            outcomes.append(list(replay) if isinstance(replay, list) else replay)
            continue
        applied[(record.topic, record.partition)] = record.offset
        try:
            found = observations_of(record, plans, engine)
        except RecordError as error:
            uncommitted[where] = error
            outcomes.append(error)
            continue
        position = Position(record.topic, record.partition, record.offset, record.timestamp_ms)
        pairs += [(observation, position) for observation in found]
        fresh[where] = len(outcomes)
        outcomes.append([])
    try:
        alerts = engine.observe(pairs)
        checkpoints = engine.checkpoints()
    except Exception as exc:
        # The detectors may be half-updated: never commit that. Exiting drops the memory;
        # a restart resumes from the last committed checkpoint and the same offsets.
        ctx.logger.exception("drift: detectors failed mid-batch")
        raise SystemExit(
            f"drift: detectors failed mid-batch ({type(exc).__name__}: {exc}); nothing of this "
            "batch was committed, restart to resume from the last checkpoint"
        ) from exc
    for alert in alerts:
        end = alert["window_end"]
        outcome = outcomes[fresh[(end["topic"], end["partition"], end["offset"])]]
        assert isinstance(outcome, list)  # noqa: S101 (only records with signals raise alerts)
        outcome.append(Output(ALERTS_TOPIC, alert, key=alert["signal"]))
    for where, index in fresh.items():
        outcome = outcomes[index]
        uncommitted[where] = list(outcome) if isinstance(outcome, list) else outcome
    if checkpoints:
        last = max(i for i, o in enumerate(outcomes) if isinstance(o, list))
        target = outcomes[last]
        assert isinstance(target, list)  # noqa: S101
        target += [Output(STATE_TOPIC, c.value, key=c.key) for c in checkpoints]
    return outcomes


# -- the processor declaration ------------------------------------------------------
def _setup(ctx: Context) -> None:
    settings = DriftSettings()
    serde: AvroSerde = ctx.services["serde"]
    catalog = ctx.catalog
    started = time.monotonic()
    profiles = {
        key: Profile.from_avro(value)
        for key, value in _read(ctx, serde, PROFILES_TOPIC, settings.restore_timeout_s).items()
    }
    states = _read(ctx, serde, STATE_TOPIC, settings.restore_timeout_s)
    engine = DriftEngine(settings.monitor_params(), profiles, states)
    ctx.resources["engine"] = engine
    ctx.resources["plans"] = {
        catalog.dataset(name).validated_topic: dataset_plan(catalog.dataset(name).contract)
        for name in _datasets(catalog)
    }
    ctx.resources["applied"] = {}
    ctx.resources["uncommitted"] = {}
    ctx.logger.info(
        "drift: %d profiles, %d signal checkpoints restored in %.1fs",
        len(profiles),
        len(engine.monitors),
        time.monotonic() - started,
    )


def _read(ctx: Context, serde: AvroSerde, topic: str, timeout_s: float) -> dict[str, Any]:
    schema = ctx.catalog.value_schema(topic)
    return read_latest(
        ctx.settings,
        ctx.catalog.physical(topic),
        lambda data: serde.decode(data, schema),
        timeout_s,
    )


def _after_commit(ctx: Context) -> None:
    uncommitted: dict[tuple[str, int, int], Outcome] = ctx.resources["uncommitted"]
    alerts = [
        output.value
        for outcome in uncommitted.values()
        if isinstance(outcome, list)
        for output in outcome
        if output.topic == ALERTS_TOPIC
    ]
    uncommitted.clear()
    ctx.resources["applied"].clear()
    ctx.resources["engine"].committed()
    for alert in alerts:
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
    SIGNALS.set(len(ctx.resources["engine"].monitors))


PROCESSOR = ProcessorSpec(
    name="drift",
    description="Watch dataset fields and model outputs for drift; alerts to drift.alerts.",
    inputs=_inputs,
    outputs=lambda catalog: [ALERTS_TOPIC, STATE_TOPIC],
    process_batch=process_batch,
    setup=_setup,
    after_commit=_after_commit,
)
