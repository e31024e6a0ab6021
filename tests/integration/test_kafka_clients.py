"""The broker version works with both client stacks Sluice uses, and the wire format
interoperates with Confluent's own serializers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from tests.support.world import TOPIC_SUBJECTS, World, make_world, read_all

#: A faust-streaming app, run as its own process (faust owns the event loop).
FAUST_SCRIPT = Path(__file__).parents[1] / "support" / "faust_round_trip.py"


def new_topic(settings, partitions=3) -> str:
    name = f"it-{uuid.uuid4().hex[:10]}"
    admin = kafka.admin(settings)  # keep a reference until the future resolves
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result()
    return name


def test_confluent_kafka_transactional_round_trip(stack):
    topic = new_topic(stack)
    producer = Producer(stack.kafka.client_config(**{"transactional.id": f"tx-{topic}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(100):
        producer.produce(topic, value=str(i).encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.abort_transaction(30)
    values = [m.value() for m in read_all(stack, topic, 100, settle=2)]
    assert sorted(values, key=int) == [str(i).encode() for i in range(100)]


def test_confluent_kafka_new_consumer_protocol(stack):
    topic = new_topic(stack)
    producer = Producer(stack.kafka.client_config())
    for i in range(10):
        producer.produce(topic, value=b"%d" % i)
    producer.flush(30)
    consumer = Consumer(
        stack.kafka.client_config(
            **{
                "group.id": f"g-{topic}",
                "group.protocol": "consumer",
                "auto.offset.reset": "earliest",
            }
        )
    )
    consumer.subscribe([topic])
    got = []
    for _ in range(60):
        got += [m for m in consumer.consume(10, 1.0) if m.error() is None]
        if len(got) >= 10:
            break
    consumer.close()
    assert len(got) == 10


def test_faust_streaming_round_trip(stack):
    topic = new_topic(stack, partitions=1)
    result = subprocess.run(
        [sys.executable, str(FAUST_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CHECK_TOPIC": topic},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "received 20 of 20" in result.stdout + result.stderr


def test_serde_interoperates_with_confluent_serializers(stack, tmp_path):
    world: World = make_world(stack, tmp_path)
    # make_world only registers dataset topics; the request schema is registered here.
    from streams.contracts import registry

    specs = [world.catalog.topics[t] for t in world.catalog.topics]
    registry.apply(world.settings.registry, world.catalog, specs)
    client = SchemaRegistryClient(stack.registry.client_config())
    serde = AvroSerde(client, world.catalog)
    raw_schema = world.catalog.schemas["sluice.v1.RawEvent"]
    context = SerializationContext(world.raw, MessageField.VALUE)
    event = {
        "event_id": "e",
        "dataset": world.dataset,
        "source": "t",
        "produced_at": 5,
        "payload": "{}",
        "attributes": {"a": "b"},
    }

    ours = serde.encoder("raw.support_tickets")(event)
    theirs = AvroDeserializer(client, conf=TOPIC_SUBJECTS)(ours, context)
    assert theirs["event_id"] == "e"
    assert theirs["attributes"] == {"a": "b"}

    serializer = AvroSerializer(
        client,
        raw_schema.document,
        conf={"auto.register.schemas": False, "use.latest.version": False},
    )
    confluent_bytes = serializer(event, context)
    assert confluent_bytes[:5] == ours[:5], "same subject, same schema id"
    back = serde.decode(confluent_bytes, raw_schema)
    assert back["payload"] == "{}"
    assert back["produced_at"].timestamp() == 0.005


def test_request_record_round_trip(stack, tmp_path):
    world: World = make_world(stack, tmp_path)
    catalog = world.catalog
    request = InferenceRequest.new("acme", "minilm", "hello", metadata={"feature": "search"})
    assert InferenceRequest.from_avro(request.to_avro()) == request
    assert "sluice.v1.InferenceRequest" in catalog.schemas
