"""Reading and replaying dead-letter topics (``sluice dlq show|replay``).

Whoever can write to a topic can write any header, ``sluice.error.topic``
included, so a replay never trusts a header to choose where a record goes: the
dead-letter topic ``X.dlq`` is replayed into ``X`` only, and a record whose header
names another topic is skipped and counted. An operator who means to send the
records elsewhere names the target (``--to``), which must be a catalog topic.

An encrypted dead letter (``streams.runtime.sealing``) is decrypted before it is sent
back; without the key that encrypted it the replay stops before sending anything of
its chunk.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams.contracts.catalog import DLQ_SUFFIX, Catalog
from streams.errors import ConfigurationError
from streams.runtime import kafka
from streams.runtime.dead_letters import (
    REPLAY_COUNT,
    DlqInfo,
    parse_error_headers,
    without_error_headers,
)
from streams.runtime.sealing import Keyring, sealed_key_id
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
    key_id: str | None = None  # the encryption key's id when the payload is encrypted


@dataclass
class ReplaySummary:
    """What a replay sent where, and what it would not send."""

    replayed: int = 0
    by_target: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # records without a sluice.error.topic header
    #: records whose sluice.error.topic names another topic than the replay's target,
    #: by the topic named (never sent)
    foreign: dict[str, int] = field(default_factory=dict)


class ReplayTargetError(ConfigurationError, ValueError):
    """A replay target that is not allowed (not a catalog topic, or a dead-letter topic)."""


@dataclass(frozen=True)
class ReplayTarget:
    """Where a replay sends records: a cluster topic name.

    ``explicit`` when the operator named it (``--to``): then every record goes there.
    Otherwise it is the topic the dead-letter topic belongs to, and only records whose
    ``sluice.error.topic`` header names it are sent.
    """

    topic: str
    explicit: bool = False

    def destination(self, info: DlqInfo) -> str | None:
        """The topic one record is sent to, or None when it must not be sent."""
        if self.explicit or info.topic == self.topic:
            return self.topic
        return None


def dlq_topic_name(topic: str) -> str:
    """Accept either a DLQ topic or the input topic it belongs to."""
    return topic if topic.endswith(DLQ_SUFFIX) else f"{topic}{DLQ_SUFFIX}"


def replay_target(catalog: Catalog, dlq: str, to: str | None = None) -> ReplayTarget:
    """Where the records of the dead-letter topic ``dlq`` (a cluster name) may be replayed.

    Without ``to``: the topic ``dlq`` belongs to (``X`` for ``X.dlq``; the cluster
    name, so the topic prefix is the one the dead-letter topic has). With ``to``: that
    topic, which must be in the catalog (by its logical or its cluster name) and must
    not be a dead-letter topic; its cluster name is returned.
    """
    if not dlq.endswith(DLQ_SUFFIX) or len(dlq) == len(DLQ_SUFFIX):
        raise ReplayTargetError(f"{dlq!r} is not a dead-letter topic (<topic>{DLQ_SUFFIX})")
    if to is None:
        return ReplayTarget(dlq[: -len(DLQ_SUFFIX)])
    logical = to if to in catalog.topics else catalog.logical(to)
    spec = catalog.topics.get(logical)
    if spec is None or to not in (logical, spec.name):
        known = ", ".join(sorted(t for t in catalog.topics if not t.endswith(DLQ_SUFFIX)))
        raise ReplayTargetError(
            f"--to {to!r} is not a topic of the catalog; replay writes only to catalog "
            f"topics: {known}"
        )
    if logical.endswith(DLQ_SUFFIX):
        raise ReplayTargetError(f"--to {to!r} is a dead-letter topic, not a replay target")
    return ReplayTarget(spec.name, explicit=True)


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


_COORDINATOR_NOT_READY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def _committed(
    consumer: Consumer, partitions: list[TopicPartition], timeout_s: float
) -> list[TopicPartition]:
    """The group's committed offsets, waiting out a group coordinator that is not ready.

    On a broker that has just started, ``__consumer_offsets`` is still being created or
    loaded and the first lookup fails with a retriable error (NOT_COORDINATOR,
    COORDINATOR_LOAD_IN_PROGRESS): that is a wait, not a reason to give up a replay.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            committed: list[TopicPartition] = consumer.committed(partitions, timeout=10)
            return committed
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _COORDINATOR_NOT_READY
            )
            if not retriable or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def replay(
    settings: Settings,
    topic: str,
    target: ReplayTarget,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    keyring: Keyring | None = None,
) -> ReplaySummary:
    """Send every not-yet-replayed record of ``topic`` to ``target`` (see ``replay_target``).

    A record whose ``sluice.error.topic`` header names another topic than a target
    the operator did not choose is skipped and counted in ``foreign``, never sent;
    it still counts as handled, so a later replay does not see it again.

    Progress is kept in the consumer group ``<prefix>.dlq-replay.<topic>`` and
    each chunk is produced and committed in one transaction, so running replay
    twice never sends a record twice (with or without a ``--to`` target: both
    share the group). Only records present when replay starts
    are sent; a record that fails again lands in the DLQ again, with its replay
    count. Encrypted records are decrypted with ``keyring`` (by default the keys of
    ``SLUICE_DEAD_LETTERS__*``), in a dry run too, so that a missing key shows before
    anything is sent.
    """
    keys = keyring if keyring is not None else Keyring.from_settings(settings.dead_letters)
    group = f"{settings.runner.group_prefix}.dlq-replay.{topic}"
    consumer = kafka.consumer(settings, group)
    summary = ReplaySummary()
    try:
        bounds = _watermarks(consumer, topic, 10)
        partitions = [TopicPartition(topic, p) for p in bounds]
        committed = {tp.partition: tp.offset for tp in _committed(consumer, partitions, 60)}
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
            _replay_chunk(chunk, target, producer, consumer, summary, keyring=keys)
            if progress:
                progress(summary.replayed)
    finally:
        consumer.close()
    return summary


def _replay_chunk(
    chunk: list[InputRecord],
    target: ReplayTarget,
    producer: Producer | None,
    consumer: Consumer,
    summary: ReplaySummary,
    *,
    keyring: Keyring | None = None,
) -> None:
    """Produce one chunk to the target and commit its offsets, atomically."""
    # Decrypt first: a record that does not open stops the replay before this chunk
    # sends anything (and so before its offsets are committed).
    keys = keyring if keyring is not None else Keyring()
    values = [
        record.raw
        if sealed_key_id(record.headers) is None
        else keys.open(record.raw or b"", record.headers)
        for record in chunk
    ]
    if producer is not None:
        producer.begin_transaction()
    for record, value in zip(chunk, values, strict=True):
        info = parse_error_headers(record.headers)
        if not info.topic and not target.explicit:
            summary.skipped += 1
            continue
        destination = target.destination(info)
        if destination is None:
            summary.foreign[info.topic] = summary.foreign.get(info.topic, 0) + 1
            continue
        headers = [(k, v) for k, v in without_error_headers(record.headers) if k != REPLAY_COUNT]
        headers.append((REPLAY_COUNT, str(_replays(record.headers) + 1).encode()))
        if producer is not None:
            producer.produce(
                destination, value=value, key=record.key, headers=kafka.kafka_headers(headers)
            )
        summary.replayed += 1
        summary.by_target[destination] = summary.by_target.get(destination, 0) + 1
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
        key_id=sealed_key_id(record.headers),
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
