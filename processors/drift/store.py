"""Reading a compacted topic back: the latest committed value per key.

drift's checkpoints (``drift.state``) are written in the same transaction as its
alerts and input offsets, so "the latest committed checkpoint per signal" is
exactly the state that matches the offsets the consumer group resumes from. The
reader therefore uses ``read_committed`` and reads up to the high watermark: if a
killed replica left a transaction open, the last stable offset stays below the
high watermark until the broker aborts it (after the runner's
``transaction_timeout_ms``), and the reader waits for that rather than guess.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streams.errors import TransientError
from streams.runtime import kafka
from streams.settings import Settings


class RestoreTimeoutError(TransientError):
    """A compacted topic could not be read to its end in time."""


def read_latest(
    settings: Settings,
    topic: str,
    decode: Callable[[bytes], dict[str, Any]],
    timeout_s: float,
) -> dict[str, dict[str, Any]]:
    """Latest committed value per key of the physical ``topic``; tombstones delete a key."""
    consumer = kafka.consumer(
        settings,
        f"{settings.runner.group_prefix}.restore-{uuid.uuid4().hex[:8]}",
        **{"enable.partition.eof": True},
    )
    latest: dict[str, dict[str, Any]] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        consumer.assign(partitions)
        pending = {tp.partition for tp in partitions}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise RestoreTimeoutError(
                    f"{topic}: could not read partitions {sorted(pending)} to their end in "
                    f"{timeout_s:.0f}s (an open transaction of a dead replica is aborted after "
                    "SLUICE_RUNNER__TRANSACTION_TIMEOUT_MS; is the broker healthy?)"
                )
            for message in consumer.consume(500, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        partition = message.partition()
                        if partition is not None and _at_end(consumer, topic, partition):
                            pending.discard(partition)
                    continue
                key = (message.key() or b"").decode("utf-8")
                value = message.value()
                if value is None:
                    latest.pop(key, None)
                else:
                    latest[key] = decode(value)
            if pending and all(_at_end(consumer, topic, p) for p in pending):
                pending.clear()
    finally:
        consumer.close()
    return latest


def _at_end(consumer: Any, topic: str, partition: int) -> bool:
    """True when the consumer's position has reached the partition's high watermark."""
    tp = TopicPartition(topic, partition)
    high = consumer.get_watermark_offsets(tp, timeout=10)[1]
    position = consumer.position([tp])[0].offset
    return high == 0 or (position is not None and position >= high)
