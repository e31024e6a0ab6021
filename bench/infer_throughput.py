"""infer throughput through Kafka → infer → Triton → Kafka: batching against batch size 1.

    sluice up && .venv/bin/python bench/infer_throughput.py --requests 1000

The same MiniLM embedding requests (short support-ticket sentences) are
consumed, in the same run, by the infer processor in three configurations,
each with a fresh consumer group and timed from its first request to its last
committed result:

* ``batched``: the defaults — up to 512 requests per poll and transaction,
  micro-batches of the model's size (64), 8 Triton calls in flight;
* ``triton-batch-1``: the same polls and transactions, but one request per
  Triton call and one call at a time (Triton's own batcher gets nothing to merge);
* ``batch-1``: one request per poll, per transaction and per Triton call —
  what a naive consume-call-produce loop does.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from processors.infer import processor as infer
from streams.contracts.records import GuardVerdict, InferenceRequest, utcnow
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.runtime.runner import Runner
from streams.runtime.signing import Signer
from streams.settings import MetricsSettings, Settings
from streams.stack import sandbox
from streams.stack.secrets import ensure_verdict_keys, local_verdict_keys, verdict_key_paths

SAFE = "inference.requests.safe"
CONFIGS: dict[str, dict[str, str]] = {
    "batched": {},
    "triton-batch-1": {"SLUICE_INFER__MAX_BATCH_SIZE": "1", "SLUICE_INFER__MAX_IN_FLIGHT": "1"},
    "batch-1": {
        "SLUICE_INFER__MAX_BATCH_SIZE": "1",
        "SLUICE_INFER__MAX_IN_FLIGHT": "1",
        "SLUICE_INFER__MAX_RECORDS_PER_POLL": "1",
    },
}


def produce_requests(box: sandbox.Sandbox, count: int) -> None:
    sample = box.settings.project_root / "schemas/datasets/support_tickets/sample.jsonl"
    subjects = [
        line.split('"subject": "')[1].split('"')[0]
        for line in sample.read_text().splitlines()[:500]
        if '"subject": "' in line
    ]
    encode = AvroSerde(kafka.registry(box.settings), box.catalog).encoder(SAFE)
    producer = kafka.producer(box.settings, **{"linger.ms": 20})
    # Standing in for guard: its verdict, signed with the local stack's key (infer serves
    # nothing else).
    ensure_verdict_keys(box.settings)
    private = verdict_key_paths(box.settings)[0].read_text(encoding="ascii").strip()
    signer = Signer.from_secret(private, "the local stack's verdict signing key")
    verdict = GuardVerdict(
        policy_version="bench", action="pass", redacted=False, checked_at=utcnow()
    )
    for i in range(count):
        request = InferenceRequest.new("bench", "minilm", f"{subjects[i % len(subjects)]} ({i})")
        value = encode(dataclasses.replace(request, guard=verdict).to_avro())
        key = request.request_id.encode()
        headers = signer.headers(SAFE, key, value)
        producer.produce(box.topic(SAFE), value=value, key=key, headers=headers)
        producer.poll(0)
    producer.flush(60)


@contextmanager
def environment(overrides: dict[str, str]) -> Iterator[None]:
    """SLUICE_INFER__* for one configuration (infer reads its settings at setup)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SLUICE_INFER__")}
    for key in saved:
        del os.environ[key]
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key in overrides:
            os.environ.pop(key, None)
        os.environ.update(saved)


def run(box: sandbox.Sandbox, count: int) -> float:
    """Requests/s of infer over the whole input, in this process."""
    first: list[float] = []

    def timed(batch: Any, ctx: Any) -> Any:
        if not first:
            first.append(time.perf_counter())
        return infer.PROCESSOR.process_batch(batch, ctx)

    settings = box.settings.model_copy(
        update={
            "runner": box.settings.runner.model_copy(
                update={"group_prefix": f"bench-{uuid.uuid4().hex[:8]}"}
            ),
            "metrics": MetricsSettings(enabled=False),
        }
    )
    runner = Runner(
        dataclasses.replace(infer.PROCESSOR, process_batch=timed), settings, catalog=box.catalog
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 1800
    while runner.committed_records < count and time.monotonic() < deadline:
        time.sleep(0.05)
    finished = time.perf_counter()
    runner.stop()
    thread.join(60)
    return count / (finished - first[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        box = sandbox.create(Settings(), Path(workdir))
        box.apply()
        print(f"producing {args.requests:,} minilm requests to {box.topic(SAFE)}")
        produce_requests(box, args.requests)
        rates = {}
        keys = local_verdict_keys(box.settings, "infer")  # guard's public key, for infer
        for name, overrides in CONFIGS.items():
            # minilm is served by the embeddings lane (infra/triton/models.yaml): an infer
            # of the default lane would only skip these requests.
            # The subjects repeat: with infer's response cache on, most requests would
            # be answered without Triton, and this measures Triton's batching.
            uncached = {"SLUICE_INFER__LANE": "embeddings", "SLUICE_INFER__CACHE_MAX_ENTRIES": "0"}
            with environment({**keys, **uncached, **overrides}):
                rates[name] = run(box, args.requests)
    for name, rate in rates.items():
        print(f"{name:>15}: {rate:8,.1f} requests/s")
    print(f"batched / batch-1        = {rates['batched'] / rates['batch-1']:.1f}x")
    print(f"batched / triton-batch-1 = {rates['batched'] / rates['triton-batch-1']:.1f}x")


if __name__ == "__main__":
    main()
