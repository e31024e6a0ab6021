"""drift throughput against river's raw detectors, and profile job time, Spark vs pandas.

    sluice up && .venv/bin/python bench/drift.py detectors --records 100000
    .venv/bin/python bench/drift.py profile --rows 1000000 --rows 10000000

``detectors`` measures, in one process and on the same tickets (a planted mean
shift at 80%):

* ``river raw``: river's ``ADWIN`` and ``PageHinkley`` updated on exactly the
  values drift's detectors see (each signal's transformed stream), nothing
  else: the floor any drift processor built on river pays;
* ``engine``: drift's ``DriftEngine.observe`` on decoded records (signal
  extraction, reference transform, ADWIN with explicit state, river's
  Page-Hinkley, test windows, checkpoints), no Kafka;
* ``processor``: ``sluice run drift`` in the runner, end to end through Kafka
  (Avro decode, transactions with the alerts and checkpoints, offsets), timed
  from its first consumed record to its last committed one.

``profile`` writes synthetic tickets to Parquet (vectorized, so generation is
not timed) and times ``sluice batch profile`` with each engine, contract check
on and off.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from river import drift as river_drift

from processors.drift import processor as drift_processor
from processors.drift.engine import DriftEngine
from processors.drift.monitor import MonitorParams, Position
from processors.drift.signals import dataset_observations, dataset_plan
from streams.contracts.catalog import load_catalog
from streams.contracts.serde import AvroSerde
from streams.profiling import profile_job
from streams.runtime import kafka
from streams.runtime.runner import Runner
from streams.runtime.spec import ProcessorSpec
from streams.settings import PROJECT_ROOT, MetricsSettings, Settings
from streams.stack import sandbox

sys.path.insert(0, str(PROJECT_ROOT))
from tests.support.drift_streams import tickets

TOPIC = "support_tickets.validated"
BATCH = 2000


# -- detectors ----------------------------------------------------------------------------
def streams_seen(records: list[dict], plan) -> tuple[list[list[float]], int]:  # type: ignore[no-untyped-def]
    """The values every online detector of drift sees, per stream, and the alerts drift raised."""
    engine = DriftEngine(MonitorParams())
    alerts = 0
    for start in range(0, len(records), BATCH):
        pairs = [
            (o, Position(TOPIC, 0, start + i, 0))
            for i, r in enumerate(records[start : start + BATCH])
            for o in dataset_observations(r, plan)
        ]
        alerts += len(engine.observe(pairs))
    # Replay each signal's values through its (now known) reference transform.
    values: dict[str, list] = {}
    for record in records:
        for signal, value in dataset_observations(record, plan):
            values.setdefault(signal.key, []).append(value)
    out: list[list[float]] = []
    for key, monitor in engine.monitors.items():
        _, series = monitor._transform(values[key])
        out += list(series.values())
    return out, alerts


def river_raw(streams: list[list[float]]) -> float:
    """Seconds for river's ADWIN + PageHinkley on every stream value."""
    started = time.perf_counter()
    for values in streams:
        adwin = river_drift.ADWIN(delta=1e-4)
        ph = river_drift.PageHinkley(min_instances=100, delta=0.03, threshold=20.0, alpha=1.0)
        for x in values:
            adwin.update(x)
            ph.update(x)
    return time.perf_counter() - started


def engine_only(records: list[dict], plan) -> float:  # type: ignore[no-untyped-def]
    """Seconds for DriftEngine on decoded records, with checkpoints per batch."""
    engine = DriftEngine(MonitorParams())
    started = time.perf_counter()
    for start in range(0, len(records), BATCH):
        pairs = []
        for i, record in enumerate(records[start : start + BATCH]):
            position = Position(TOPIC, 0, start + i, 0)  # one per record, as the processor does
            pairs += [(o, position) for o in dataset_observations(record, plan)]
        engine.observe(pairs)
        engine.checkpoints()
        engine.committed()
    return time.perf_counter() - started


def produce(box: sandbox.Sandbox, records: list[dict]) -> None:
    """The tickets as Avro on the sandbox's validated topic, all on partition 0, in order."""
    encode = AvroSerde(kafka.registry(box.settings), box.catalog).encoder(TOPIC)
    producer = kafka.producer(box.settings)
    physical = box.topic(TOPIC)
    for i, record in enumerate(records):
        meta = {"event_id": str(i), "source": "bench", "raw_topic": "raw", "raw_partition": 0}
        record["meta"] = {**meta, "raw_offset": i, "contract_version": 1, "validated_at": 0}
        while True:
            try:
                producer.produce(physical, encode(record), key=record["ticket_id"], partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def processor(settings: Settings, records: int) -> float:
    """Seconds for `sluice run drift` in the runner, first consumed to last committed record."""
    first: list[float] = []
    spec = drift_processor.PROCESSOR

    def timed(batch, ctx):  # type: ignore[no-untyped-def]
        if not first:
            first.append(time.perf_counter())
        return spec.process_batch(batch, ctx)

    run_settings = settings.model_copy(
        update={
            "runner": settings.runner.model_copy(update={"batch_size": BATCH}),
            "metrics": MetricsSettings(enabled=False),
        }
    )
    runner = Runner(ProcessorSpec(**{**spec.__dict__, "process_batch": timed}), run_settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 900
    while runner.committed_records < records and time.monotonic() < deadline:
        time.sleep(0.05)
    finished = time.perf_counter()
    runner.stop()
    thread.join(60)
    return finished - first[0]


def detectors(count: int) -> None:
    records = list(tickets(count, seed=7, shift="mean", at=int(count * 0.8)))
    plan = dataset_plan(load_catalog(PROJECT_ROOT / "schemas").dataset("support_tickets").contract)
    streams, alerts = streams_seen(records, plan)
    updates = sum(len(s) for s in streams)
    print(
        f"{count:,} tickets: {len(streams)} detector streams, {updates:,} values, {alerts} alert(s)"
    )
    settings = Settings()
    results: dict[str, list[float]] = {"river raw": [], "engine": [], "processor": []}
    for _ in range(2):  # interleaved, so load on the shared machine hits each variant
        results["river raw"].append(count / river_raw(streams))
        results["engine"].append(count / engine_only(records, plan))
        with tempfile.TemporaryDirectory() as workdir:  # fresh topics: no state from round 1
            box = sandbox.create(settings, Path(workdir))
            box.apply()
            produce(box, records)
            results["processor"].append(count / processor(box.settings, count))
    best = {name: max(rates) for name, rates in results.items()}
    for name, rates in results.items():
        print(
            f"{name:>10}: {best[name]:>9,.0f} tickets/s  (runs: "
            + ", ".join(f"{r:,.0f}" for r in rates)
            + ")"
        )
    print(f"engine / river raw     = {best['engine'] / best['river raw']:.2f}")
    print(f"processor / river raw  = {best['processor'] / best['river raw']:.2f}")


# -- profile ------------------------------------------------------------------------------
def synthetic_parquet(path: Path, rows: int, seed: int = 1) -> None:
    """Tickets like tests/support/drift_streams.py, vectorized, written in row groups of 1M."""
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, 1_000_000):
        n = min(1_000_000, rows - start)
        score = rng.choice(5, p=[0.05, 0.1, 0.2, 0.35, 0.3], size=n) + 1
        frame = pd.DataFrame(
            {
                "ticket_id": [f"TCK-{i:08d}" for i in range(start, start + n)],
                "tenant_id": "acme",
                "created_at": pd.Timestamp("2026-01-01", tz="UTC")
                + pd.to_timedelta(np.arange(start, start + n), "s"),
                "channel": rng.choice(
                    ["email", "chat", "phone", "web"], p=[0.4, 0.3, 0.2, 0.1], size=n
                ),
                "priority": rng.choice(["low", "medium", "high", "urgent"], size=n),
                "product": rng.choice(
                    ["billing", "mobile-app", "web-app", "api", "hardware", "shipping"], size=n
                ),
                "subject": "Subject line",
                "body": "Body text",
                "customer_tier": rng.choice(["free", "pro", "enterprise"], size=n),
                "first_response_minutes": np.exp(rng.normal(3.0, 0.8, size=n)),
                "satisfaction": pd.array(np.where(rng.random(n) < 0.3, None, score), dtype="Int32"),
                "order_value_usd": np.round(rng.gamma(2.0, 40.0, size=n), 2),
                "language": rng.choice(["en", "de", "fr", "es"], p=[0.7, 0.1, 0.1, 0.1], size=n),
            }
        )
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, coerce_timestamps="ms")
        writer.write_table(table)
    if writer is not None:
        writer.close()


def profile(sizes: list[int], engines: list[str], checks: list[bool]) -> None:
    settings = Settings()
    catalog = load_catalog(PROJECT_ROOT / "schemas")
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    try:
        for rows in sizes:
            path = workdir / f"tickets-{rows}.parquet"
            started = time.perf_counter()
            synthetic_parquet(path, rows)
            print(
                f"{rows:,} rows written to {path} ({path.stat().st_size / 1e6:.0f} MB) "
                f"in {time.perf_counter() - started:.0f}s"
            )
            for check in checks:
                for engine in engines:
                    request = profile_job.ProfileRequest("support_tickets", engine, path, check)  # type: ignore[arg-type]
                    label = f"  {engine:>6} check={check!s:<5}:"
                    try:
                        outcome = profile_job.run(request, settings, catalog, lambda m: None)
                    except Exception as exc:  # report and go on: a size may not fit
                        print(f"{label} failed: {type(exc).__name__}: {str(exc)[:300]}")
                        continue
                    rate = rows / outcome.seconds
                    profiled = outcome.profiles[0].rows
                    took = f"{outcome.seconds:7.1f}s ({rate:,.0f} rows/s)"
                    print(f"{label} {took}, {profiled:,} profiled", flush=True)
            path.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("detectors")
    d.add_argument("--records", type=int, default=100_000)
    p = sub.add_parser("profile")
    p.add_argument("--rows", type=int, action="append")
    p.add_argument("--engine", action="append", choices=["spark", "pandas"])
    p.add_argument("--check", choices=["on", "off", "both"], default="both")
    args = parser.parse_args()
    if args.what == "detectors":
        detectors(args.records)
    else:
        checks = {"on": [True], "off": [False], "both": [False, True]}[args.check]
        profile(args.rows or [1_000_000, 10_000_000], args.engine or ["pandas", "spark"], checks)


if __name__ == "__main__":
    main()
