"""Where a gateway call's time goes: per hop from Kafka timestamps, per stage from the runners.

Two views of the same window, both read after the window so that nothing is measured
while the load runs:

* **Hops**, per request, from the create time of the record each stage wrote: the
  gateway's request on ``inference.requests``, guard's copy on ``.safe``, infer's result
  on ``inference.responses``, guard's stored result on ``inference.results``. A hop is
  the difference between two of them, so it holds everything between one stage
  producing and the next producing: the first stage's transaction commit (a record is
  invisible to ``read_committed`` readers until then), the next stage's poll and batch
  wait, and its processing up to the produce. The gateway's own share is what the
  client measured beyond ``inference.requests`` → ``inference.results``.
* **Stages**, per batch, from each runner's ``sluice_batch_stage_seconds`` histogram
  (``streams/runtime/runner.py``), scraped before and after the window: mean seconds of
  ``fill`` (from the batch's first record until it is full or its timeout is over),
  ``process`` and ``commit``, and
  the mean batch size.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import httpx
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench.kafka_security_cost import percentile
from streams.stack.sandbox import Sandbox

#: The topics a gateway call crosses, in order, and the hop that ends at each.
PATH = (
    ("inference.requests", "gateway"),
    ("inference.requests.safe", "guard, input side"),
    ("inference.responses", "infer"),
    ("inference.results", "guard, output side"),
)
STAGES = ("fill", "process", "commit")
STAGE_METRIC = "sluice_batch_stage_seconds"
BATCH_SIZE_METRIC = "sluice_batch_size"


# -- hops ------------------------------------------------------------------------------------
def hop_latencies(stamps: Mapping[str, Mapping[str, int]]) -> dict[str, list[float]]:
    """Per hop (named by the stage that ends it), the ms of every request seen on all topics.

    ``stamps`` maps each topic of ``PATH`` to {request id: create time in ms}; requests
    missing from any topic (refused, or outside the window) are left out.
    """
    topics = [topic for topic, _ in PATH]
    complete = set.intersection(*(set(stamps.get(topic, {})) for topic in topics))
    hops: dict[str, list[float]] = {name: [] for _, name in PATH[1:]}
    hops["requests → results"] = []
    for request in sorted(complete):
        times = [stamps[topic][request] for topic in topics]
        for (_, name), before, after in zip(PATH[1:], times[:-1], times[1:], strict=True):
            hops[name].append(float(after - before))
        hops["requests → results"].append(float(times[-1] - times[0]))
    return hops


def hop_lines(hops: Mapping[str, Sequence[float]], client_p50_ms: float | None) -> list[str]:
    """The hop table: p50 and p99 per hop, then the gateway's share of the client's p50."""
    lines = [f"{'hop (ends when this stage produces)':<38} {'p50 ms':>9} {'p99 ms':>9} {'n':>6}"]
    for name, values in hops.items():
        if values:
            p50, p99 = percentile(values, 50), percentile(values, 99)
            lines.append(f"{name:<38} {p50:>9,.1f} {p99:>9,.1f} {len(values):>6}")
    through = hops.get("requests → results") or []
    if client_p50_ms is not None and through:
        rest = client_p50_ms - percentile(through, 50)
        lines.append(
            f"{'gateway: HTTP, admission, outcome read':<38} {rest:>9,.1f} {'':>9} {'':>6}"
            "  (client p50 minus requests → results p50)"
        )
    return lines


def read_create_times(box: Sandbox, since_ms: int, until_ms: int) -> dict[str, dict[str, int]]:
    """{topic: {request id: create time}} of the records each path topic got in the window.

    Read from the first offset at ``since_ms`` to the end, committed records only (what
    the next stage could see); the first record of a request id counts.
    """
    consumer = Consumer(
        box.settings.kafka.client_config(
            **{
                "group.id": f"bench-hops-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        return {
            topic: _first_times(consumer, box.topic(topic), since_ms, until_ms) for topic, _ in PATH
        }
    finally:
        consumer.close()


def _first_times(consumer: Consumer, topic: str, since_ms: int, until_ms: int) -> dict[str, int]:
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    starts = consumer.offsets_for_times(
        [TopicPartition(topic, p, since_ms) for p in partitions], timeout=10
    )
    remaining: dict[int, int] = {}
    assigned = []
    for start in starts:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, start.partition), timeout=10)
        if start.offset >= 0 and start.offset < high:
            remaining[start.partition] = high
            assigned.append(start)
    times: dict[str, int] = {}
    if not assigned:
        return times
    consumer.assign(assigned)
    idle = 0
    while remaining and idle < 20:
        messages = consumer.consume(1000, 0.5)
        idle = 0 if messages else idle + 1
        for message in messages:
            if message.error() is not None:
                continue
            partition, offset = message.partition(), message.offset()
            _, stamp = message.timestamp()
            key = message.key()
            if key is not None and since_ms <= stamp <= until_ms:
                times.setdefault(key.decode("utf-8", "replace"), stamp)
            if partition in remaining and offset + 1 >= remaining[partition]:
                del remaining[partition]
    consumer.unassign()
    return times


# -- stages ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageTotals:
    """Cumulative sums and counts of the runners' stage histograms, by (processor, stage)."""

    seconds: Mapping[tuple[str, str], float]
    batches: Mapping[tuple[str, str], float]
    records: Mapping[str, float]


def parse_stage_totals(text: str) -> StageTotals:
    """The ``_sum`` and ``_count`` of the stage histogram and the records of the batch sizes."""
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    batches: dict[tuple[str, str], float] = defaultdict(float)
    records: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == f"{STAGE_METRIC}_sum":
                seconds[(labels["processor"], labels["stage"])] += sample.value
            elif sample.name == f"{STAGE_METRIC}_count":
                batches[(labels["processor"], labels["stage"])] += sample.value
            elif sample.name == f"{BATCH_SIZE_METRIC}_sum":
                records[labels["processor"]] += sample.value
    return StageTotals(dict(seconds), dict(batches), dict(records))


def scrape(urls: Iterable[str]) -> StageTotals:
    """The stage totals of every runner at ``urls`` (their ``/metrics``), added up."""
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    batches: dict[tuple[str, str], float] = defaultdict(float)
    records: dict[str, float] = defaultdict(float)
    for url in urls:
        totals = parse_stage_totals(httpx.get(url, timeout=10).text)
        for key, value in totals.seconds.items():
            seconds[key] += value
        for key, value in totals.batches.items():
            batches[key] += value
        for name, value in totals.records.items():
            records[name] += value
    return StageTotals(dict(seconds), dict(batches), dict(records))


def stage_lines(before: StageTotals, after: StageTotals) -> list[str]:
    """Per processor: batches in the window, mean records per batch, mean ms per stage."""
    header = f"{'processor':<10} {'batches':>8} {'records/batch':>14}" + "".join(
        f" {stage + ' ms':>11}" for stage in STAGES
    )
    lines = [header]
    processors = sorted({name for name, _ in after.batches})
    for name in processors:
        count = after.batches.get((name, "process"), 0) - before.batches.get((name, "process"), 0)
        if count <= 0:
            continue
        size = (after.records.get(name, 0) - before.records.get(name, 0)) / count
        means = []
        for stage in STAGES:
            n = after.batches.get((name, stage), 0) - before.batches.get((name, stage), 0)
            total = after.seconds.get((name, stage), 0) - before.seconds.get((name, stage), 0)
            means.append(f" {total / n * 1000 if n > 0 else 0:>11,.1f}")
        lines.append(f"{name:<10} {count:>8,.0f} {size:>14,.1f}" + "".join(means))
    return lines
