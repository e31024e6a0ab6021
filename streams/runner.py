"""The processor runner: poll → batch → process → produce → commit, exactly once.

Every processor runs in this loop (DESIGN sections 3 and 4):

* a consumer in the group ``<prefix>.<processor>`` reading only committed
  records, and a transactional producer; each batch's outputs, dead-letter
  records and input offsets are committed in one Kafka transaction
  (``send_offsets_to_transaction``), so a crash at any point neither loses nor
  duplicates anything downstream;
* a record the processor refuses (``RecordError``), cannot decode, or that
  makes it raise goes to ``<input topic>.dlq`` with its original bytes and
  ``sluice.error.*`` headers; the batch carries on;
* a dependency that is down (``TransientError``) aborts the transaction,
  rewinds the batch, pauses the partitions and retries with backoff;
* SIGTERM finishes the batch in hand, commits and leaves the group.

Replicas share the input partitions through the consumer group; each has its
own transactional id, and an instance that dies holding a transaction is
aborted by the broker after ``transaction_timeout_ms``.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from streams import kafka, metrics, tracing
from streams.catalog import DLQ_SUFFIX, Catalog, catalog_for
from streams.dlq import dlq_record_headers, error_headers
from streams.errors import RecordError, TransientError
from streams.processor import Context, InputRecord, Outcome, Output, ProcessorSpec
from streams.serde import AvroSerde
from streams.settings import Settings
from streams.span_export import TOPIC as SPANS_TOPIC

log = logging.getLogger(__name__)
Encoder = Callable[[Any], bytes]


class Runner:
    """Runs one processor until stopped."""

    def __init__(
        self,
        spec: ProcessorSpec,
        settings: Settings,
        catalog: Catalog | None = None,
        *,
        metrics_port: int | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.catalog = catalog or catalog_for(settings)
        self.instance_id = settings.instance_id()
        self.group_id = f"{settings.runner.group_prefix}.{spec.name}"
        self.inputs = spec.inputs(self.catalog)
        self.outputs = spec.outputs(self.catalog)
        self._metrics_port = settings.metrics.port if metrics_port is None else metrics_port
        self._batch_size, self._batch_timeout_s = self._batching()
        self._stopping = threading.Event()
        self._encoders: dict[str, Encoder] = {}
        self._dlq_topics = {t: self._dlq_topic_of(t) for t in self.inputs}
        self._tracing = settings.telemetry.exporter != "none"
        self._tracer = trace.get_tracer("sluice.runner")
        self._registration: Path | None = None
        self.ctx = Context(
            processor=spec.name,
            settings=settings,
            catalog=self.catalog,
            logger=logging.getLogger(f"sluice.{spec.name}"),
            instance_id=self.instance_id,
        )
        self.committed_batches = 0
        self.committed_records = 0

    # -- lifecycle --------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Ask the loop to finish the batch in hand, commit and exit."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the runner gracefully."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("%s received, finishing the current batch", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        """Consume, process and commit until ``stop`` is called."""
        self._start()
        try:
            while not self._stopping.is_set():
                messages = self.consumer.consume(self._batch_size, self._batch_timeout_s)
                batch = self._usable(messages)
                if not batch:
                    continue
                try:
                    self._commit_batch(batch)
                except TransientError as exc:
                    self._rewind(batch)
                    self._back_off(exc)
                else:
                    self._attempt = 0
        finally:
            self._close()

    def _batching(self) -> tuple[int, float]:
        runner = self.settings.runner
        size, timeout_ms = runner.batch_size, runner.batch_timeout_ms
        if self.spec.batching is not None:
            own_size, own_timeout_ms = self.spec.batching()
            explicit = runner.model_fields_set
            size = size if "batch_size" in explicit else own_size
            timeout_ms = timeout_ms if "batch_timeout_ms" in explicit else own_timeout_ms
        return size, timeout_ms / 1000

    # -- start and stop ---------------------------------------------------------
    def _start(self) -> None:
        runner = self.settings.runner
        self._check_topics()
        self.serde = AvroSerde(kafka.registry(self.settings), self.catalog)
        self.ctx.services["serde"] = self.serde
        for topic in self.outputs:
            self._encoder(topic)  # fail now, not mid-stream, if a schema is not registered
        if self.spec.setup is not None:
            self.spec.setup(self.ctx)
        self.producer = kafka.producer(
            self.settings,
            **{
                "transactional.id": f"{self.group_id}.{self.instance_id}",
                "transaction.timeout.ms": runner.transaction_timeout_ms,
            },
        )
        self.producer.init_transactions(60)
        self.consumer = kafka.consumer(
            self.settings,
            self.group_id,
            **{
                "partition.assignment.strategy": "cooperative-sticky",
                "statistics.interval.ms": 5000,
                "stats_cb": lambda stats: metrics.record_consumer_lag(self.spec.name, stats),
            },
        )
        self.consumer.subscribe(
            [self.catalog.physical(t) for t in self.inputs],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        self._attempt = 0
        if self.settings.metrics.enabled:
            self._serve_metrics()
        self._register()
        log.info(
            "%s running: group %s, instance %s, reading %s",
            self.spec.name,
            self.group_id,
            self.instance_id,
            ", ".join(self.inputs),
        )

    def _check_topics(self) -> None:
        dlqs = {t for t in self._dlq_topics.values() if t is not None}
        needed = set(self.inputs) | set(self.outputs) | dlqs
        physical = {self.catalog.physical(t) for t in needed}
        missing = kafka.missing_topics(kafka.admin(self.settings), physical)
        if missing:
            raise SystemExit(
                f"{self.spec.name}: topics missing on {self.settings.kafka.bootstrap_servers}: "
                f"{', '.join(missing)}. Run `sluice schemas apply` first."
            )

    def _dlq_topic_of(self, topic: str) -> str | None:
        if topic.endswith(DLQ_SUFFIX) and topic in self.catalog.topics:
            return None  # a dead-letter topic is read (by the sink), never dead-lettered
        spec = self.catalog.topics.get(topic)
        if spec is None or spec.dlq_topic is None:
            raise SystemExit(
                f"{self.spec.name}: input topic {topic!r} has no dead-letter topic in "
                "schemas/topics.yaml (set `dlq: true`)"
            )
        return spec.dlq_topic

    def _serve_metrics(self) -> None:
        self.metrics_port = metrics.serve_or_any(self.settings.metrics.host, self._metrics_port)

    def _register(self) -> None:
        """Leave a note in the state directory so ``sluice status`` can find this replica."""
        self._registration = metrics.register(
            self.settings,
            processor=self.spec.name,
            instance=self.instance_id,
            group=self.group_id,
            inputs=self.inputs,
            port=getattr(self, "metrics_port", None),  # None: metrics are off
        )

    def _close(self) -> None:
        log.info("%s stopping", self.spec.name)
        with suppress(Exception):
            self.consumer.close()
        with suppress(Exception):
            self.producer.flush(self.settings.runner.shutdown_timeout_s)
        if self.spec.teardown is not None:
            self.spec.teardown(self.ctx)
        if self._registration is not None:
            with suppress(OSError):
                self._registration.unlink()

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _describe(partitions))

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # No transaction is ever open here: callbacks run inside consume(), between batches.
        log.info("revoked %s", _describe(partitions))

    # -- one batch --------------------------------------------------------------
    def _usable(self, messages: list[Message]) -> list[InputRecord]:
        batch = []
        for message in messages:
            error = message.error()
            if error is None:
                batch.append(kafka.record_of(message, self.catalog.logical))
            elif error.code() != KafkaError._PARTITION_EOF:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer: %s", error.str())
        return batch

    def _commit_batch(self, batch: list[InputRecord]) -> None:
        started = time.perf_counter()
        name = self.spec.name
        metrics.IN_FLIGHT.labels(name).inc()
        traced = self._tracing and any(r.topic != SPANS_TOPIC for r in batch)
        span = self._batch_span(batch) if traced else None
        try:
            self.producer.begin_transaction()
            try:
                produced = self._process_and_produce(batch)
                self.producer.send_offsets_to_transaction(
                    self._offsets(batch, last=True), self.consumer.consumer_group_metadata(), 60
                )
                self.producer.commit_transaction(60)
            except TransientError:
                self._abort()
                raise
            except KafkaException as exc:
                self._abort()
                error = exc.args[0]
                if error.fatal():
                    raise
                raise TransientError(f"transaction failed: {error.str()}") from exc
            except BaseException:
                self._abort()
                raise
        except TransientError as exc:
            metrics.BATCHES.labels(name, "retried").inc()
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        finally:
            metrics.IN_FLIGHT.labels(name).dec()
            if span is not None:
                span.end()
        self.committed_batches += 1
        self.committed_records += len(batch)
        metrics.BATCHES.labels(name, "committed").inc()
        metrics.BATCH_SIZE.labels(name).observe(len(batch))
        metrics.BATCH_LATENCY.labels(name).observe(time.perf_counter() - started)
        # Metrics name topics as the cluster does, like the lag librdkafka reports.
        for topic, count in Counter(record.topic for record in batch).items():
            metrics.RECORDS_IN.labels(name, self.catalog.physical(topic)).inc(count)
        for (topic, stage), count in produced.items():
            if stage:
                metrics.RECORDS_DLQ.labels(name, topic, stage).inc(count)
            else:
                metrics.RECORDS_OUT.labels(name, topic).inc(count)
        if self.spec.after_commit is not None:
            self.spec.after_commit(self.ctx)

    def _process_and_produce(self, batch: list[InputRecord]) -> dict[tuple[str, str], int]:
        """Process a batch and produce its outputs in the open transaction.

        Returns counts per (topic, dlq stage or ""), for the metrics.
        """
        decoded = [self._decode(record) for record in batch]
        records = {i: r for i, r in enumerate(decoded) if isinstance(r, InputRecord)}
        # Spans are never traced themselves: the sink loading telemetry.spans would
        # otherwise write a span per span it loads, without end.
        spans = (
            {i: self._record_span(r) for i, r in records.items() if r.topic != SPANS_TOPIC}
            if self._tracing
            else {}
        )
        for index, span in spans.items():
            records[index] = dataclasses.replace(records[index], span=span)
        processed = dict(zip(records, self._process(list(records.values())), strict=True))
        counts: dict[tuple[str, str], int] = {}
        for index, source in enumerate(batch):
            first = decoded[index]
            outcome = first if isinstance(first, RecordError) else processed[index]
            for key in self._emit(source, outcome, spans.get(index)):
                counts[key] = counts.get(key, 0) + 1
        for span in spans.values():
            span.end()
        return counts

    def _emit(
        self, source: InputRecord, outcome: Outcome, span: trace.Span | None
    ) -> list[tuple[str, str]]:
        """Produce one record's outputs, or its dead letter; returns (topic, stage) per record."""
        if not isinstance(outcome, RecordError):
            try:
                encoded = [self._encode(output, source, span) for output in outcome]
            except RecordError as error:
                outcome = error
            else:
                for output, (key, value, headers) in zip(outcome, encoded, strict=True):
                    self._produce(self.catalog.physical(output.topic), value, key, headers)
                return [(self.catalog.physical(output.topic), "") for output in outcome]
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, outcome.error_class))
        produced = [(self._dead_letter(source, outcome), outcome.stage)]
        if outcome.outputs:  # e.g. the error result a request is still owed
            produced += self._emit(source, outcome.outputs, span)
        return produced

    def _process(self, records: Sequence[InputRecord]) -> Sequence[Outcome]:
        """Run the processor; if it raises, isolate the record that made it raise."""
        if not records:
            return []
        try:
            outcomes = self.spec.process_batch(records, self.ctx)
        except (TransientError, KafkaException):
            raise
        except Exception as exc:
            if len(records) == 1:
                log.exception(
                    "%s raised on %s[%d]@%d; sending the record to the DLQ",
                    self.spec.name,
                    records[0].topic,
                    records[0].partition,
                    records[0].offset,
                )
                return [
                    RecordError(
                        "process", f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__
                    )
                ]
            return [outcome for record in records for outcome in self._process([record])]
        if len(outcomes) != len(records):
            raise RuntimeError(
                f"{self.spec.name}.process_batch returned {len(outcomes)} outcomes "
                f"for {len(records)} records"
            )
        return outcomes

    def _decode(self, record: InputRecord) -> InputRecord | RecordError:
        if not self.spec.decode_inputs:
            return record
        try:
            value = self.serde.decode(record.raw, self.catalog.value_schema(record.topic))
        except RecordError as error:
            return error
        return dataclasses.replace(record, value=value)

    def _encoder(self, topic: str) -> Encoder:
        encoder = self._encoders.get(topic)
        if encoder is None:
            spec = self.catalog.topic(topic)
            encoder = self.serde.encoder(topic) if spec.is_avro else _as_bytes
            self._encoders[topic] = encoder
        return encoder

    def _encode(
        self, output: Output, source: InputRecord, span: trace.Span | None
    ) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        try:
            value = self._encoder(output.topic)(output.value)
        except RecordError:
            raise
        except Exception as exc:  # fastavro raises ValueError/TypeError/KeyError and friends
            raise RecordError(
                "serialize",
                f"output for {output.topic} does not fit its schema: {type(exc).__name__}: {exc}",
                error_class=type(exc).__name__,
            ) from exc
        key = output.key.encode("utf-8") if isinstance(output.key, str) else output.key
        if span is not None:
            headers = tracing.span_context_headers(span)
        else:
            headers = tracing.trace_headers(source.headers)
        return key, value, [*headers, *output.headers]

    def _produce(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=kafka.kafka_headers(headers)
                )
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain

    def _dead_letter(self, source: InputRecord, error: RecordError) -> str:
        dlq = self._dlq_topics[source.topic]
        if dlq is None:
            raise RuntimeError(
                f"{self.spec.name} refused a record of the dead-letter topic {source.topic}: "
                f"{error.error_class}: {error.message}. Dead letters are never dead-lettered "
                "again; nothing was committed."
            )
        topic = self.catalog.physical(dlq)
        headers = dlq_record_headers(
            source.headers,
            error_headers(
                error,
                processor=self.spec.name,
                topic=self.catalog.physical(source.topic),
                partition=source.partition,
                offset=source.offset,
                max_message_chars=self.settings.runner.max_dlq_message_chars,
            ),
        )
        self._produce(topic, source.raw or b"", source.key, headers)
        return topic

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(60)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            log.warning("abort_transaction: %s", exc.args[0].str())

    # -- retry ------------------------------------------------------------------
    def _offsets(self, batch: list[InputRecord], *, last: bool) -> list[TopicPartition]:
        """Per partition of the batch, where to commit to or rewind to.

        ``last``: the offset after the partition's last record (what a commit
        stores); otherwise its first record's offset (where a retry restarts).
        """
        bounds: dict[tuple[str, int], int] = {}
        for record in batch:
            key = (record.topic, record.partition)
            seen = bounds.get(key)
            if seen is None or (record.offset > seen if last else record.offset < seen):
                bounds[key] = record.offset
        return [
            TopicPartition(self.catalog.physical(t), p, o + 1 if last else o)
            for (t, p), o in bounds.items()
        ]

    def _rewind(self, batch: list[InputRecord]) -> None:
        """Seek every partition of the batch back to its first record in the batch."""
        for tp in self._offsets(batch, last=False):
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:  # partition revoked meanwhile: committed offset rules
                log.debug("seek %s[%d]: %s", tp.topic, tp.partition, exc)

    def _back_off(self, error: Exception) -> None:
        runner = self.settings.runner
        self._attempt += 1
        delay = min(
            runner.retry_backoff_max_s, runner.retry_backoff_initial_s * 2 ** (self._attempt - 1)
        )
        metrics.RETRIES.labels(self.spec.name).inc()
        log.warning(
            "%s: %s; nothing committed, retrying the batch in %.1fs (attempt %d)",
            self.spec.name,
            error,
            delay,
            self._attempt,
        )
        self.consumer.pause(self.consumer.assignment())
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._stopping.is_set():
            # Polling keeps this member in the group while paused; a partition assigned
            # meanwhile is not paused, so anything it returns is put back.
            message = self.consumer.poll(min(0.2, max(0.0, deadline - time.monotonic())))
            if message is not None and message.error() is None:
                record = kafka.record_of(message)  # physical topic name: it goes back to Kafka
                tp = TopicPartition(record.topic, record.partition, record.offset)
                self.consumer.seek(tp)
                self.consumer.pause([tp])
        self.consumer.resume(self.consumer.assignment())

    # -- tracing ----------------------------------------------------------------
    def _batch_span(self, batch: list[InputRecord]) -> trace.Span:
        topics = sorted({r.topic for r in batch})
        links = []
        for record in batch[:128]:  # a span with thousands of links helps nobody
            context = trace.get_current_span(tracing.extract(record.headers)).get_span_context()
            if context.is_valid:
                links.append(Link(context))
        return self._tracer.start_span(
            f"process {','.join(topics)}",
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=tracing.kafka_attributes(
                operation="process",
                destination=",".join(self.catalog.physical(t) for t in topics),
                group=self.group_id,
                **{"messaging.batch.message_count": len(batch), "sluice.processor": self.spec.name},
            ),
        )

    def _record_span(self, record: InputRecord) -> trace.Span:
        return self._tracer.start_span(
            f"{self.spec.name} {record.topic}",
            context=tracing.extract(record.headers),
            kind=SpanKind.CONSUMER,
            attributes=tracing.kafka_attributes(
                operation="process",
                destination=self.catalog.physical(record.topic),
                group=self.group_id,
                **{
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                    "sluice.processor": self.spec.name,
                },
            ),
        )


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    raise TypeError(f"a byte topic takes bytes, got {type(value).__name__}")


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"
