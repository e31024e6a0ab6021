"""Reading and replaying dead-letter topics (``sluice dlq show|replay``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from streams import kafka
from streams.dlq import REPLAY_COUNT, DlqInfo, parse_error_headers, without_error_headers
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


def dlq_topic_name(topic: str) -> str:
    """Accept either a DLQ topic or the input topic it belongs to."""
    return topic if topic.endswith(".dlq") else f"{topic}.dlq"


def read_recent(settings: Settings, topic: str, limit: int = 20, timeout: float = 10.0) -> list[DeadLetter]:
    """The last ``limit`` records of a dead-letter topic (all partitions), oldest first."""
    consumer = _reader(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ValueError(f"topic {topic!r} does not exist")
        bounds = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout)
            if high > low:
                bounds[partition] = (low, high)
        # Offsets also hold transaction markers and aborted records, so "the last N
        # offsets" can hold fewer than N records: widen the window until it does.
        window = 2 * limit + 2
        while True:
            assignment = [TopicPartition(topic, p, max(low, high - window))
                          for p, (low, high) in bounds.items()]
            letters = _drain(consumer, assignment, {p: h for p, (_, h) in bounds.items()}, timeout)
            short = [p for p, (low, high) in bounds.items()
                     if high - window > low and sum(d.partition == p for d in letters) < limit]
            if not short:
                break
            window *= 4
    finally:
        consumer.close()
    letters.sort(key=lambda d: (d.timestamp_ms, d.partition, d.offset))
    return letters[-limit:]


@dataclass
class ReplaySummary:
    """What a replay sent where."""

    replayed: int = 0
    by_target: dict[str, int] | None = None
    skipped: int = 0


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
    producer = None if dry_run else kafka.producer(
        settings, **{"transactional.id": f"{group}.{uuid.uuid4().hex[:8]}"}
    )
    summary = ReplaySummary(by_target={})
    assert summary.by_target is not None
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ValueError(f"topic {topic!r} does not exist")
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        assignment, ends = [], {}
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            start = committed[tp.partition] if committed[tp.partition] >= 0 else low
            if high > start:
                assignment.append(TopicPartition(topic, tp.partition, start))
                ends[tp.partition] = high
        if not assignment:
            return summary
        if producer is not None:
            producer.init_transactions(30)
        consumer.assign(assignment)
        remaining = dict(ends)
        idle_since = time.monotonic()
        while remaining and time.monotonic() - idle_since < 10:
            messages = [m for m in consumer.consume(500, 1.0) if m.error() is None]
            if not messages:
                _drop_finished(consumer, topic, remaining)
                continue
            idle_since = time.monotonic()
            messages = [m for m in messages if m.offset() < ends[m.partition()]]
            if producer is not None:
                producer.begin_transaction()
            for message in messages:
                info = parse_error_headers(message.headers())
                if not info.topic:
                    summary.skipped += 1
                    continue
                headers = without_error_headers(message.headers())
                count = _replays(message.headers()) + 1
                headers = [(k, v) for k, v in headers if k != REPLAY_COUNT]
                headers.append((REPLAY_COUNT, str(count).encode()))
                if producer is not None:
                    producer.produce(info.topic, value=message.value(), key=message.key(),
                                     headers=headers)
                summary.replayed += 1
                summary.by_target[info.topic] = summary.by_target.get(info.topic, 0) + 1
            if producer is not None and messages:
                offsets = _next_offsets(messages)
                producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
                producer.commit_transaction(30)
            if progress:
                progress(summary.replayed)
            for message in messages:
                if message.offset() + 1 >= ends[message.partition()]:
                    remaining.pop(message.partition(), None)
            _drop_finished(consumer, topic, remaining)
    finally:
        consumer.close()
    return summary


def _drop_finished(consumer: Consumer, topic: str, remaining: dict[int, int]) -> None:
    for partition, end in list(remaining.items()):
        position = consumer.position([TopicPartition(topic, partition)])[0].offset
        if position >= end:
            remaining.pop(partition)


def _next_offsets(messages: list) -> list[TopicPartition]:  # type: ignore[type-arg]
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic(), m.partition())] = max(last.get((m.topic(), m.partition()), -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _replays(headers: list[tuple[str, bytes]] | None) -> int:
    for key, value in reversed(headers or []):
        if key == REPLAY_COUNT:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _reader(settings: Settings) -> Consumer:
    return kafka.consumer(settings, f"{settings.runner.group_prefix}.dlq-reader")


def _drain(consumer: Consumer, assignment: list[TopicPartition], ends: dict[int, int],
           timeout: float) -> list[DeadLetter]:
    if not assignment:
        return []
    consumer.assign(assignment)
    letters: list[DeadLetter] = []
    remaining = dict(ends)
    topic = assignment[0].topic
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            if message.error() is not None or message.offset() >= ends[message.partition()]:
                continue
            headers = message.headers()
            letters.append(DeadLetter(
                partition=message.partition(), offset=message.offset(),
                timestamp_ms=message.timestamp()[1], key=message.key(),
                size=len(message.value() or b""), info=parse_error_headers(headers),
                replays=_replays(headers),
            ))
        _drop_finished(consumer, topic, remaining)
    return letters
