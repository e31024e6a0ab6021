"""validate throughput against a bare confluent-kafka consume→produce passthrough.

    sluice up && .venv/bin/python bench/validate_throughput.py --records 100000

All runs read the same input topic (plain JSON support tickets from the sample
dataset, about 4% of them invalid) in the same process, one after the other,
each with a fresh consumer group; each run is timed from its first consumed
record to its last committed one, so group joins do not count. Baselines:

* ``bare``: consume, produce each value unchanged, commit offsets
  asynchronously — the least a Kafka→Kafka hop can do;
* ``transactional``: the same with the runner's guarantees (one transaction per
  batch, offsets committed inside it) — the cost of exactly-once without any
  Sluice code.

The ratio that matters is validate / bare (target >= 0.5).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from itertools import cycle, islice
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from processors.validate import processor as validate
from streams.runtime import kafka
from streams.runtime.runner import Runner
from streams.runtime.spec import ProcessorSpec
from streams.settings import MetricsSettings, Settings
from streams.stack import sandbox

BATCH = int(os.environ.get("BENCH_BATCH", "5000"))


def produce_input(settings: Settings, topic: str, records: int) -> None:
    sample = settings.project_root / "schemas/datasets/support_tickets/sample.jsonl"
    lines = [line.encode() for line in sample.read_text().splitlines() if line.strip()]
    producer = Producer(
        settings.kafka.client_config(**{"linger.ms": 20, "enable.idempotence": True})
    )
    for value in islice(cycle(lines), records):
        while True:
            try:
                producer.produce(topic, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def passthrough(
    settings: Settings, source: str, target: str, records: int, *, transactional: bool
) -> float:
    """Records/s of a plain consume→produce loop; transactional=True adds exactly-once."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    consumer = kafka.consumer(settings, group)
    extra = {"transactional.id": f"{group}-tx"} if transactional else {}
    producer = kafka.producer(settings, **extra)
    if transactional:
        producer.init_transactions(30)
    consumer.subscribe([source])
    seen, started = 0, None
    while seen < records:
        messages = [m for m in consumer.consume(BATCH, 1.0) if m.error() is None]
        if not messages:
            continue
        started = started or time.perf_counter()
        if transactional:
            producer.begin_transaction()
        for message in messages:
            while True:
                try:
                    producer.produce(target, value=message.value(), key=message.key())
                    break
                except BufferError:
                    producer.poll(0.05)
        if transactional:
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
        else:
            producer.poll(0)
            consumer.commit(asynchronous=True)
        seen += len(messages)
    producer.flush(60)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return records / elapsed


def run_validate(settings: Settings, source: str, records: int) -> float:
    """Records/s of the validate processor in the runner, same input."""
    first: list[float] = []
    spec = validate.PROCESSOR

    def timed(batch, ctx):  # type: ignore[no-untyped-def]
        if not first:
            first.append(time.perf_counter())
        return spec.process_batch(batch, ctx)

    timed_spec = ProcessorSpec(**{**spec.__dict__, "process_batch": timed})
    group_prefix = f"bench-{uuid.uuid4().hex[:8]}"
    run_settings = settings.model_copy(
        update={
            "runner": settings.runner.model_copy(
                update={"group_prefix": group_prefix, "batch_size": BATCH}
            ),
            "metrics": MetricsSettings(enabled=False),
        }
    )
    runner = Runner(timed_spec, run_settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    # The runner counts what it committed: polling Kafka for the lag would load the machine.
    _wait(lambda: runner.committed_records >= records, 600)
    finished = time.perf_counter()
    runner.stop()
    thread.join(30)
    return records / (finished - first[0])


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError("validate did not catch up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory() as workdir:
        box = sandbox.create(settings, Path(workdir))
        box.apply()
        raw_topic = box.topic("raw.support_tickets")
        admin = kafka.admin(settings)
        sink = f"bench-passthrough-{box.suffix}"
        admin.create_topics([NewTopic(sink, 3, 1)])[sink].result()
        print(f"producing {args.records:,} raw records to {raw_topic}")
        produce_input(box.settings, raw_topic, args.records)

        results: dict[str, list[float]] = {"bare": [], "transactional": [], "validate": []}
        for _ in range(2):  # interleaved, so drift in machine load hits every variant
            results["bare"].append(
                passthrough(box.settings, raw_topic, sink, args.records, transactional=False)
            )
            results["transactional"].append(
                passthrough(box.settings, raw_topic, sink, args.records, transactional=True)
            )
            results["validate"].append(run_validate(box.settings, raw_topic, args.records))
        best = {name: max(rates) for name, rates in results.items()}
        for name, rates in results.items():
            print(
                f"{name:>14}: {best[name]:>9,.0f} records/s  (runs: "
                + ", ".join(f"{r:,.0f}" for r in rates)
                + ")"
            )
        print(f"validate / bare passthrough          = {best['validate'] / best['bare']:.2f}")
        print(
            f"validate / transactional passthrough = {best['validate'] / best['transactional']:.2f}"
        )


if __name__ == "__main__":
    main()
