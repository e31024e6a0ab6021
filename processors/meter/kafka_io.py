"""faust-streaming adapted to Sluice's contracts: Confluent Avro, and read-committed input.

* ``AvroCodec`` is a faust codec for the Confluent wire format over the
  Schema Registry, built on ``streams.contracts.serde.AvroSerde`` (same cache, same
  "never register" rule as every other Sluice client).
* ``ReadCommittedTransport``: faust's aiokafka consumer reads
  ``read_uncommitted`` unless ``processing_guarantee="exactly_once"``. Sluice's
  processors write in transactions, and an aborted transaction (a replica
  killed mid-batch, a retried batch) leaves its records in the log: read
  uncommitted, meter would count them and bill requests that never happened.
  This transport makes the worker consumer ``read_committed`` under any
  guarantee.
* ``DrainingProducerBuffer``: table writes (``table[key] = value``) wait in
  faust's producer buffer, and faust flushes it before committing offsets, but
  its flush gives up after 0.1 s without progress and returns with messages
  still buffered (``ProducerBuffer.flush_atmost``). Offsets could then be
  committed before the changelog records of the events they cover: after a
  ``kill -9`` those counts would be lost (seen under load in the crash test).
  This buffer's flush returns only once every buffered message was handed to
  the Kafka producer, which the commit path then flushes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.serializers.codecs import Codec
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import FutureMessage

from streams.contracts.avro_schemas import AvroSchema
from streams.contracts.serde import AvroSerde


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
        return self.serde.decode(s, self.schema, topic=self.topic)

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


class DrainingProducerBuffer(ProducerBuffer):
    """A producer buffer whose ``flush`` really drains it (see the module doc)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.in_flight = 0

    async def _send_pending(self, fut: FutureMessage) -> None:
        # Taken off the queue but not yet handed to aiokafka: still "in the buffer".
        self.in_flight += 1
        try:
            await super()._send_pending(fut)
        finally:
            self.in_flight -= 1

    async def flush(self) -> None:
        """Return once every message put before the call is with the Kafka producer."""
        while self.size or self.in_flight:
            await self.flush_atmost(None)
            if not self.size and self.in_flight:
                await asyncio.sleep(0.001)


class _DrainingProducer(faust_aiokafka.Producer):
    def __init__(self, transport: Any, loop: Any = None, **kwargs: Any) -> None:
        super().__init__(transport, loop=loop, **kwargs)
        buffer = DrainingProducerBuffer(loop=self.loop, beacon=self.beacon)
        buffer.app = self.app
        self.buffer = buffer


class ReadCommittedTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport: read-committed consumer, producer whose flush drains."""

    Consumer = _ReadCommittedConsumer
    Producer = _DrainingProducer


class SluiceFaustApp(faust.App):
    """A faust app on ``ReadCommittedTransport`` (everything else is stock faust)."""

    def _new_transport(self) -> Any:
        return ReadCommittedTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return ReadCommittedTransport(self.conf.broker_producer, self)
