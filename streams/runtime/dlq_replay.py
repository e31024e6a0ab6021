"""Reading and replaying dead-letter topics (``sluice dlq show|replay``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.runtime import kafka
from streams.runtime.dead_letters import (
    REPLAY_COUNT,
    DlqInfo,
    parse_error_headers,
    without_error_headers,
)
from streams.runtime.spec import Headers, InputRecord
from streams.settings import Settings


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    size: int
    info: DlqInfo
    replays: int


@dataclass
class ReplaySummary:
    """What a replay sent where."""

    replayed: int = 0
    by_target: dict[str, int] = field(default_factory=dict)
    skipped: int = 0


def dlq_topic_name(topic: str) -> str:
    """Accept either a DLQ topic or the input topic it belongs to."""
    return topic if topic.endswith(".dlq") else f"{topic}.dlq"


def read_recent(
    settings: Settings, topic: str, limit: int = 20, timeout: float = 10.0
) -> list[DeadLetter]:
    """The last ``limit`` records of a dead-letter topic (all partitions), oldest first."""
    consumer = kafka.consumer(settings, f"{settings.runner.group_prefix}.dlq-reader")
    try:
        bounds = _watermarks(consumer, topic, timeout)
        ends = {p: high for p, (_, high) in bounds.items()}
        # Offsets also hold transaction markers and aborted records, so "the last N
        # offsets" can hold fewer than N records: widen the window until it does.
        window = 2 * limit + 2
        while True:
            starts = {p: max(low, high - window) for p, (low, high) in bounds.items()}
            letters = [_letter(r) for r in _read_range(consumer, topic, starts, ends, timeout)]
            short = [
                p
                for p, (low, high) in bounds.items()
                if high - window > low and sum(d.partition == p for d in letters) < limit
            ]
            if not short:
                break
            window *= 4
    finally:
        consumer.close()
    letters.sort(key=lambda d: (d.timestamp_ms, d.partition, d.offset))
    return letters[-limit:]


def replay(
    settings: Settings,
    topic: str,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Send every not-yet-replayed record of ``topic`` back to the topic it came from.

    Progress is kept in the consumer group ``<prefix>.dlq-replay.<topic>`` and
    each chunk is produced and committed in one transaction, so running replay
    twice never sends a record twice. Only records present when replay starts
    are sent; a record that fails again lands in the DLQ again, with its replay
    count.
    """
    group = f"{settings.runner.group_prefix}.dlq-replay.{topic}"
    consumer = kafka.consumer(settings, group)
    summary = ReplaySummary()
    try:
        bounds = _watermarks(consumer, topic, 10)
        partitions = [TopicPartition(topic, p) for p in bounds]
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        starts = {p: committed[p] if committed[p] >= 0 else low for p, (low, _) in bounds.items()}
        ends = {p: high for p, (_, high) in bounds.items() if high > starts[p]}
        if not ends:
            return summary
        producer = None
        if not dry_run:
            producer = kafka.producer(
                settings, **{"transactional.id": f"{group}.{uuid.uuid4().hex[:8]}"}
            )
            producer.init_transactions(30)
        for chunk in _chunks(consumer, topic, starts, ends):
            _replay_chunk(chunk, producer, consumer, summary)
            if progress:
                progress(summary.replayed)
    finally:
        consumer.close()
    return summary


def _replay_chunk(
    chunk: list[InputRecord],
    producer: Producer | None,
    consumer: Consumer,
    summary: ReplaySummary,
) -> None:
    """Produce one chunk back to its source topics and commit its offsets, atomically."""
    if producer is not None:
        producer.begin_transaction()
    for record in chunk:
        info = parse_error_headers(record.headers)
        if not info.topic:
            summary.skipped += 1
            continue
        headers = [(k, v) for k, v in without_error_headers(record.headers) if k != REPLAY_COUNT]
        headers.append((REPLAY_COUNT, str(_replays(record.headers) + 1).encode()))
        if producer is not None:
            producer.produce(
                info.topic, value=record.raw, key=record.key, headers=kafka.kafka_headers(headers)
            )
        summary.replayed += 1
        summary.by_target[info.topic] = summary.by_target.get(info.topic, 0) + 1
    if producer is not None:
        offsets = _next_offsets(chunk)
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)


def _watermarks(consumer: Consumer, topic: str, timeout: float) -> dict[int, tuple[int, int]]:
    """(low, high) per non-empty partition; a clear error if the topic does not exist."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise ValueError(f"topic {topic!r} does not exist")
    bounds = {}
    for partition in metadata.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout)
        if high > low:
            bounds[partition] = (low, high)
    return bounds


def _chunks(
    consumer: Consumer,
    topic: str,
    starts: dict[int, int],
    ends: dict[int, int],
    idle_timeout: float = 10.0,
) -> Iterator[list[InputRecord]]:
    """Records from ``starts`` up to (not including) ``ends``, in consumed chunks."""
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
    remaining = dict(ends)
    idle_since = time.monotonic()
    while remaining and time.monotonic() - idle_since < idle_timeout:
        messages = [m for m in consumer.consume(500, 0.5) if m.error() is None]
        records = [r for r in map(kafka.record_of, messages) if r.offset < ends[r.partition]]
        if records:
            idle_since = time.monotonic()
            yield records
        for partition, end in list(remaining.items()):
            position = consumer.position([TopicPartition(topic, partition)])[0].offset
            if position is not None and position >= end:
                remaining.pop(partition)


def _read_range(
    consumer: Consumer, topic: str, starts: dict[int, int], ends: dict[int, int], timeout: float
) -> list[InputRecord]:
    return [r for chunk in _chunks(consumer, topic, starts, ends, timeout) for r in chunk]


def _letter(record: InputRecord) -> DeadLetter:
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp_ms,
        key=record.key,
        size=len(record.raw or b""),
        info=parse_error_headers(record.headers),
        replays=_replays(record.headers),
    )


def _next_offsets(records: list[InputRecord]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for r in records:
        last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _replays(headers: Headers) -> int:
    for key, value in reversed(headers):
        if key == REPLAY_COUNT:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
