"""faust-streaming adapted to Sluice's contracts: Confluent Avro, and read-committed input.

* ``AvroCodec`` is a faust codec for the Confluent wire format over the
  Schema Registry, built on ``streams.serde.AvroSerde`` (same cache, same
  "never register" rule as every other Sluice client).
* ``ReadCommittedTransport``: faust's aiokafka consumer reads
  ``read_uncommitted`` unless ``processing_guarantee="exactly_once"``. Sluice's
  processors write in transactions, and an aborted transaction (a replica
  killed mid-batch, a retried batch) leaves its records in the log: read
  uncommitted, meter would count them and bill requests that never happened.
  This transport makes the worker consumer ``read_committed`` under any
  guarantee. It changes nothing else in faust.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.serializers.codecs import Codec
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.avro_schemas import AvroSchema
from streams.serde import AvroSerde


class AvroCodec(Codec):
    """Values of one catalog topic in the Confluent wire format."""

    def __init__(self, serde: AvroSerde, topic: str, **kwargs: Any) -> None:
        self.serde = serde
        self.topic = topic
        self.schema: AvroSchema = serde.catalog.value_schema(topic)
        self._encode = serde.encoder(topic)
        super().__init__(**kwargs)

    def _dumps(self, obj: Any) -> bytes:
        return self._encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self.serde.decode(s, self.schema)

    def clone(self, *children: Any) -> AvroCodec:
        """Codecs combine with ``|`` in faust; this one stands alone."""
        return AvroCodec(self.serde, self.topic)


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        # faust picks read_committed only when the app is transactional: let it.
        consumer = self.consumer
        saved = consumer.in_transaction
        consumer.in_transaction = True
        try:
            return super()._create_worker_consumer(transport)
        finally:
            consumer.in_transaction = saved


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with a read-committed worker consumer."""

    Consumer = _ReadCommittedConsumer


class SluiceFaustApp(faust.App):
    """A faust app on ``ReadCommittedTransport`` (everything else is stock faust)."""

    def _new_transport(self) -> Any:
        return ReadCommittedTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return ReadCommittedTransport(self.conf.broker_producer, self)
