"""sink rows/s into embedded ClickHouse against a bare clickhouse-connect insert; meter events/s.

    sluice up && .venv/bin/python bench/meter_sink.py --rows 100000 --meter-events 20000

sink: N synthetic InferenceResults are produced to a private topic that the
sink maps to the ``results`` table. The sink runs in the runner in this
process (consume, one INSERT of the raw Avro per batch that ClickHouse decodes,
transactional offset commit), timed from its first batch to its last commit; and
again decoding in Python (``SLUICE_CLICKHOUSE__AVRO_INGEST=false``). The baseline
inserts the very same rows, already built as Python tuples, with
``client.insert`` in batches of the same size into an identical table of the
same chdb engine: what clickhouse-connect alone costs. Target: sink / bare >=
0.7. Runs are interleaved (bare, sink, bare, sink) and the best of each kept.

meter: N results in a private-named world are metered by ``sluice run meter``
(a child process, faust); events/s is the growth rate of ``metering.budgets``
(one status per counted request) between its first and last change.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from processors.sink import processor as sink
from streams.contracts.records import InferenceResult
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.runtime.runner import Runner
from streams.settings import MetricsSettings, Settings
from streams.stack import sandbox
from streams.stack.secrets import ensure_budget_keys
from streams.warehouse import clickhouse, migrations
from streams.warehouse import tables as sink_tables

BATCH = 5000


def results(n: int, tenant: str) -> list[InferenceResult]:
    start = datetime(2026, 2, 1, tzinfo=UTC)
    return [
        InferenceResult(
            request_id=str(uuid.uuid4()),
            tenant_id=tenant,
            model=("gpt-4o-mini", "textgen", "minilm")[i % 3],
            status="ok" if i % 17 else "error",
            request_created_at=start + timedelta(milliseconds=i),
            completed_at=start + timedelta(milliseconds=i + 40),
            input_tokens=100 + i % 900,
            cached_input_tokens=i % 50,
            output_tokens=i % 300,
            e2e_ms=float(40 + i % 500),
            queue_ms=float(i % 20),
            inference_ms=float(20 + i % 100),
            batch_size=32,
            device="cpu",
        )
        for i in range(n)
    ]


def produce(settings: Settings, serde: AvroSerde, topic: str, items: list[InferenceResult]) -> None:
    encode = serde.encoder(topic)
    physical = serde.catalog.physical(topic)
    producer = kafka.producer(settings, **{"linger.ms": 20})
    for r in items:
        while True:
            try:
                producer.produce(physical, value=encode(r.to_avro()), key=r.request_id.encode())
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(300)
    if left:
        raise RuntimeError(f"{left} results were not delivered to {physical}")


def migrated(settings: Settings, database: str) -> clickhouse.DirectWarehouse:
    boot = clickhouse.connect(settings)
    clickhouse.ensure_database(boot, database)
    boot.close()
    db = clickhouse.connect(settings, database=database)
    migrations.migrate(db, settings.project_root / sink.MIGRATIONS)
    return db


def bare_insert(settings: Settings, rows: list[tuple[object, ...]]) -> float:
    db = migrated(settings, f"bench_bare_{uuid.uuid4().hex[:6]}")
    try:
        started = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            db.insert("results", rows[i : i + BATCH], sink_tables.RESULTS.columns)
        return len(rows) / (time.perf_counter() - started)
    finally:
        db.close()


def run_sink(settings: Settings, topic: str, n: int, *, avro_ingest: bool = True) -> float:
    database = f"bench_sink_{uuid.uuid4().hex[:6]}"
    first: list[float] = []

    def timed(batch, ctx):  # type: ignore[no-untyped-def]
        if not first:
            first.append(time.perf_counter())
        return sink.process_batch(batch, ctx)

    spec = replace(sink.PROCESSOR, inputs=lambda _c, _s: [topic], process_batch=timed)
    run_settings = settings.model_copy(
        update={
            "runner": settings.runner.model_copy(
                update={"group_prefix": f"bench-{uuid.uuid4().hex[:8]}"}
            ),
            "metrics": MetricsSettings(enabled=False),
            "clickhouse": settings.clickhouse.model_copy(
                update={"database": database, "avro_ingest": avro_ingest}
            ),
        }
    )
    runner = Runner(spec, run_settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 900
    while runner.committed_records < n and time.monotonic() < deadline:
        time.sleep(0.02)
    finished = time.perf_counter()
    runner.stop()
    thread.join(60)
    if runner.committed_records < n:
        raise TimeoutError("the sink did not finish")
    return n / (finished - first[0])


def meter_rate(box: sandbox.Sandbox, settings: Settings, serde: AvroSerde, n: int) -> float:
    tenant = f"bench-{box.suffix}"
    probe = kafka.consumer(settings, "bench-probe")

    def budgets_end() -> int:
        return sum(kafka.end_offsets(probe, [box.topic("metering.budgets")]).values())

    baseline = budgets_end()
    ensure_budget_keys(settings)  # meter signs its budgets; `sluice run` hands it the key
    env = {**os.environ, **box.env, "SLUICE_METRICS__PORT": "0", "SLUICE_LOG_LEVEL": "WARNING"}
    log = open(Path(box.schemas.parent) / "meter.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "run", "meter"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(15)  # let the worker join its group and recover its (empty) state
        last = budgets_end()
        produce(settings, serde, "inference.results", results(n, tenant))
        start_value, first_t, last_t = last, None, None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.25)
            now = budgets_end()
            if now != last:
                first_t = first_t or time.perf_counter()
                last_t = time.perf_counter()
                last = now
            elif last_t and time.perf_counter() - last_t > 8:
                break
        counted = last - start_value
        if first_t is None or last_t is None:
            log.close()
            tail = (Path(box.schemas.parent) / "meter.log").read_text(errors="replace")[-3000:]
            raise TimeoutError(f"meter counted nothing; its log ends with:\n{tail}")
        print(f"meter: {counted:,} statuses written (expected {n:,}; baseline offset {baseline})")
        return counted / (last_t - first_t)
    finally:
        process.terminate()
        process.wait(60)
        probe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--meter-events", type=int, default=20_000)
    args = parser.parse_args()
    base = Settings()
    with tempfile.TemporaryDirectory() as workdir:
        box = sandbox.create(base, Path(workdir))
        topic = "bench.results"
        catalog_file = box.schemas / "topics.yaml"
        spec = yaml.safe_load(catalog_file.read_text())
        spec["topics"].append({"name": topic, "value": "sluice.v1.InferenceResult", "dlq": True})
        catalog_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        box = box.reload()
        box.apply()
        sink_tables.BY_TOPIC[topic] = sink_tables.RESULTS  # the bench topic fills `results`
        sink_tables.AVRO_INGEST[topic] = sink_tables.AVRO_INGEST["inference.results"]
        settings = box.settings.model_copy(
            update={
                "clickhouse": box.settings.clickhouse.model_copy(
                    update={"url": f"chdb://{Path(workdir) / 'clickhouse'}"}
                )
            }
        )
        serde = AvroSerde(kafka.registry(settings), box.catalog)
        items = results(args.rows, f"bench-{box.suffix}")
        print(f"producing {args.rows:,} results to {topic}")
        produce(settings, serde, topic, items)
        rows = [sink_tables.RESULTS.rows(None, r.to_avro())[0] for r in items]  # type: ignore[arg-type]

        rates: dict[str, list[float]] = {"bare": [], "sink": [], "sink, Python decoding": []}
        for _ in range(2):
            rates["bare"].append(bare_insert(settings, rows))
            rates["sink"].append(run_sink(settings, topic, args.rows))
            rates["sink, Python decoding"].append(
                run_sink(settings, topic, args.rows, avro_ingest=False)
            )
        best = {k: max(v) for k, v in rates.items()}
        for name, values in rates.items():
            runs = ", ".join(f"{v:,.0f}" for v in values)
            print(f"{name:>22}: {best[name]:>9,.0f} rows/s  (runs: {runs})")
        print(f"sink / bare clickhouse-connect insert = {best['sink'] / best['bare']:.2f}")
        python = best["sink, Python decoding"] / best["bare"]
        print(f"sink with Python decoding / bare = {python:.2f}")

        if args.meter_events:
            rate = meter_rate(box, settings, serde, args.meter_events)
            print(f"meter: {rate:,.0f} events/s (results priced, counted into windows and budgets)")


if __name__ == "__main__":
    main()
