"""Kafka and Schema Registry clients configured from Settings, and topic administration."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)
from confluent_kafka.schema_registry import SchemaRegistryClient

from streams.contracts.catalog import TopicSpec
from streams.runtime.spec import Headers, InputRecord
from streams.settings import Settings

log = logging.getLogger(__name__)

#: The header type confluent-kafka's produce() takes.
KafkaHeaders = list[tuple[str, str | bytes | None]]


def record_of(message: Message, topic_name: Callable[[str], str] | None = None) -> InputRecord:
    """A consumed message as a typed record; ``value`` and ``raw`` are the value bytes.

    The one place a confluent-kafka Message is unpacked: everything past the
    consumer works on InputRecord. ``topic_name`` maps the cluster's topic name
    to the name the code uses (the catalog's logical name).
    """
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("a consumed message without topic, partition or offset")
    raw = message.value()
    return InputRecord(
        topic=topic_name(topic) if topic_name else topic,
        partition=partition,
        offset=offset,
        key=message.key(),
        value=raw,
        raw=raw,
        headers=headers_of(message),
        timestamp_ms=message.timestamp()[1],
    )


def headers_of(message: Message) -> Headers:
    """A message's headers as (name, bytes) pairs."""
    raw = message.headers()
    if not raw:
        return []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in pairs]


def kafka_headers(headers: Sequence[tuple[str, bytes]]) -> KafkaHeaders | None:
    """Headers in the type produce() takes (None when there are none: cheaper to send)."""
    return [(k, v) for k, v in headers] if headers else None


def admin(settings: Settings) -> AdminClient:
    """An admin client for the configured cluster."""
    return AdminClient(settings.kafka.client_config())


def producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer that waits for all in-sync replicas."""
    conf = settings.kafka.client_config(
        **{"enable.idempotence": True, "acks": "all", "linger.ms": 5, **overrides}
    )
    return Producer(conf)


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer that sees only committed records and commits only when told to."""
    conf = settings.kafka.client_config(
        **{
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **overrides,
        }
    )
    return Consumer(conf)


def registry(settings: Settings) -> SchemaRegistryClient:
    """A Schema Registry client for the configured (Confluent-compatible) registry."""
    return SchemaRegistryClient(settings.registry.client_config())


@dataclass(frozen=True)
class TopicChange:
    """What ``ensure_topics`` did (or would do) to one topic."""

    topic: str
    action: str  # created, exists, updated-config, partitions-added, error
    detail: str = ""


def ensure_topics(
    client: AdminClient, specs: Iterable[TopicSpec], timeout: float = 30.0
) -> list[TopicChange]:
    """Create missing topics and bring existing ones to the catalog's settings.

    Idempotent: a second run reports every topic as ``exists``. Partitions are
    only ever added (Kafka cannot remove them); configs are set incrementally so
    settings the catalog does not mention stay as the operator left them.
    """
    specs = list(specs)
    metadata = client.list_topics(timeout=timeout)
    changes: list[TopicChange] = []
    to_create = [s for s in specs if s.name not in metadata.topics]
    if to_create:
        futures = client.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    config=dict(s.configs),
                )
                for s in to_create
            ],
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                changes.append(TopicChange(name, "created"))
            except KafkaException as exc:
                if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                    changes.append(TopicChange(name, "exists"))
                else:
                    changes.append(TopicChange(name, "error", exc.args[0].str()))
    for spec in specs:
        if spec.name not in metadata.topics:
            continue
        have = len(metadata.topics[spec.name].partitions)
        changes.append(_reconcile(client, spec, have, timeout))
    return changes


def _reconcile(
    client: AdminClient, spec: TopicSpec, partitions: int, timeout: float
) -> TopicChange:

    done: list[str] = []
    if partitions < spec.partitions:
        future = client.create_partitions(
            [NewPartitions(spec.name, spec.partitions)], request_timeout=timeout
        )[spec.name]
        future.result()
        done.append(f"partitions {partitions}->{spec.partitions}")
    resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
    current = client.describe_configs([resource], request_timeout=timeout)[resource].result()
    drift = {k: v for k, v in spec.configs.items() if k not in current or current[k].value != v}
    if drift:
        entries = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in drift.items()
        ]
        resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=entries)
        client.incremental_alter_configs([resource])[resource].result()
        done.append("configs " + ", ".join(f"{k}={v}" for k, v in drift.items()))
    if not done:
        return TopicChange(spec.name, "exists")
    return TopicChange(spec.name, "updated", "; ".join(done))


def missing_topics(client: AdminClient, topics: Iterable[str], timeout: float = 10.0) -> list[str]:
    """Which of ``topics`` do not exist on the cluster."""
    existing = client.list_topics(timeout=timeout).topics
    return sorted(t for t in set(topics) if t not in existing)


def end_offsets(
    client: Consumer, topics: Iterable[str], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """High watermark of every partition of ``topics``."""
    ends: dict[TopicPartition, int] = {}
    for topic in topics:
        metadata = client.list_topics(topic, timeout=timeout).topics[topic]
        for partition in metadata.partitions:
            tp = TopicPartition(topic, partition)
            ends[tp] = client.get_watermark_offsets(tp, timeout)[1]
    return ends


def group_lag(settings: Settings, group: str, topics: Iterable[str], timeout: float = 10.0) -> int:
    """Offsets of ``topics`` past what consumer group ``group`` committed.

    Transaction markers occupy offsets too: behind a transactional producer, a
    caught-up group still shows one offset per finished transaction that ended a
    partition. ``pending_records`` counts records only.
    """
    client = consumer(settings, group)
    try:
        ends = end_offsets(client, topics, timeout)
        committed = client.committed(list(ends), timeout=timeout)
    finally:
        client.close()
    lag = 0
    for tp in committed:
        end = ends[TopicPartition(tp.topic, tp.partition)]
        lag += end - tp.offset if tp.offset >= 0 else end
    return lag


def pending_records(
    settings: Settings, group: str, topics: Iterable[str], timeout: float = 10.0
) -> int:
    """Committed records of ``topics`` that consumer group ``group`` has not committed yet.

    Reads the gap between the group's offsets and the end of each partition with a
    read_committed consumer of its own, so transaction markers and aborted records
    (which ``group_lag`` counts as offsets) are not mistaken for work left.
    """
    topics = list(topics)
    client = consumer(settings, f"{group}.lag-probe")
    try:
        ends = end_offsets(client, topics, timeout)
        committed = consumer(settings, group)
        try:
            offsets = committed.committed(list(ends), timeout=timeout)
        finally:
            committed.close()
        starts = {}
        for tp in offsets:
            key = TopicPartition(tp.topic, tp.partition)
            start = tp.offset if tp.offset >= 0 else 0
            if start < ends[key]:
                starts[key] = start
        if not starts:
            return 0
        client.assign([TopicPartition(tp.topic, tp.partition, o) for tp, o in starts.items()])
        pending = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending += sum(1 for m in client.consume(1000, 0.2) if m.error() is None)
            positions = client.position(list(starts))
            if all(
                (p.offset or 0) >= ends[TopicPartition(p.topic, p.partition)] for p in positions
            ):
                break
        return pending
    finally:
        client.close()
