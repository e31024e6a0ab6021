"""Reading a whole topic's committed history into memory (the pandas engine's topic source)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streams.contracts.catalog import Catalog
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.settings import Settings


def read_history(
    settings: Settings,
    catalog: Catalog,
    topic: str,
    limit: int | None = None,
    timeout_s: float = 600,
) -> tuple[list[dict[str, Any]], str]:
    """Every committed record of the logical ``topic``, decoded, and where it was read."""
    physical = catalog.physical(topic)
    serde = AvroSerde(kafka.registry(settings), catalog, settings.registry)
    schema = catalog.value_schema(topic)
    consumer = kafka.consumer(
        settings,
        f"{settings.runner.group_prefix}.batch-{uuid.uuid4().hex[:8]}",
        **{"enable.partition.eof": True},
    )
    records: list[dict[str, Any]] = []
    try:
        ends = kafka.end_offsets(consumer, [physical])
        pending = {tp.partition for tp, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(physical, tp.partition, 0) for tp in ends])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline and (limit is None or len(records) < limit):
            for message in consumer.consume(1000, 1.0):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                    continue
                value = message.value()
                if value is not None:
                    records.append(serde.decode(value, schema, topic=topic))
    finally:
        consumer.close()
    offsets = ",".join(
        f"{tp.partition}:{end}" for tp, end in sorted(ends.items(), key=lambda i: i[0].partition)
    )
    return records[:limit], f"topic:{physical}@{offsets}"
