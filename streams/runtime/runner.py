"""The processor runner: poll → batch → process → produce → commit, exactly once.

Every processor runs in this loop (DESIGN sections 3 and 4):

* a consumer in the group ``<prefix>.<processor>`` (or the group the spec
  names for the instance's settings: ``<prefix>.infer-<lane>``) reading only committed
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

What happens to the records of a batch (decode, process, isolate, encode,
dead-letter) is ``streams.runtime.pipeline``, shared with the in-process
harness; this module owns Kafka: the group, the transaction, the retries.

Replicas share the input partitions through the consumer group; each has its
own transactional id, and an instance that dies holding a transaction is
aborted by the broker after ``transaction_timeout_ms``.

A spec with ``share_of`` (guard, infer) is scheduled fairly across tenants: the
runner reads up to ``SLUICE_RUNNER__FAIR_WINDOW_RECORDS`` ahead and builds each batch by
weighted fair queuing (``streams.runtime.fair_window``); records then finish out of
offset order, and each commit carries the partition's done-offsets map in its metadata
(``streams.runtime.offset_ledger``), so that whoever reads the partition next skips
what is done: still exactly once.

A spec with ``at_least_once`` (guard-stream) runs without transactions: each batch's
records are produced by an idempotent producer and flushed, and the offsets are
committed only once every record was delivered; a crash in between replays the batch.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from streams.contracts.catalog import Catalog, catalog_for
from streams.contracts.serde import AvroSerde
from streams.errors import ConfigurationError, TransientError
from streams.runtime import kafka, metrics, tracing
from streams.runtime.fair_window import FairWindow
from streams.runtime.offset_ledger import MetadataError, PartitionLedger, decode_done
from streams.runtime.pipeline import BatchPipeline
from streams.runtime.span_export import TOPIC as SPANS_TOPIC
from streams.runtime.spec import Context, Headers, InputRecord, ProcessorSpec
from streams.settings import Settings

log = logging.getLogger(__name__)

#: How long an idle runner waits for a record before it looks at its stop flag again.
IDLE_WAIT_S = 0.25
#: Most records a fair runner takes from the consumer while its window is full (records of
#: partitions assigned since it paused the others).
READ_AHEAD_CHUNK = 1000


class Runner:
    """Runs one processor until stopped."""

    def __init__(
        self,
        spec: ProcessorSpec[Any, Any],
        settings: Settings,
        config: Any = None,
        catalog: Catalog | None = None,
        *,
        metrics_port: int | None = None,
    ) -> None:
        """``config``: the processor's own settings, built once (default: from the environment)."""
        self.spec = spec
        self.settings = settings
        self.config = config if config is not None else spec.build_settings()
        self.catalog = catalog or catalog_for(settings)
        self.instance_id = settings.instance_id()
        # <prefix>.<processor>, or the group the spec gives these settings (infer's lanes).
        self.group_id = f"{settings.runner.group_prefix}.{spec.group_name(self.config)}"
        self.inputs = spec.inputs(self.catalog, self.config)
        self.outputs = spec.outputs(self.catalog, self.config)
        self._metrics_port = settings.metrics.port if metrics_port is None else metrics_port
        self._batch_size, self._batch_timeout_s = self._batching()
        self._stopping = threading.Event()
        self._tracing = settings.telemetry.exporter != "none"
        self._tracer = trace.get_tracer("sluice.runner")
        self._registration: Path | None = None
        self.logger = logging.getLogger(f"sluice.{spec.name}")
        self.ctx: Context[Any, Any] | None = None
        self.committed_batches = 0
        self.committed_records = 0
        self._undelivered = 0  # at-least-once: deliveries of the batch in hand that failed
        self._processed_at = 0.0  # when the batch in hand was processed (stage timing)
        runner = settings.runner
        fair = spec.share_of is not None and not spec.at_least_once
        self._window = (
            FairWindow(runner.fair_window_records, runner.fair_window_bytes)
            if fair and runner.fair_window_records > 0
            else None
        )
        self._reading_paused = False  # the window is full: its partitions are paused

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
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    self._commit_batch(batch)
                except TransientError as exc:
                    self.pipeline.rollback()
                    self._rewind(batch)
                    self._back_off(exc)
                else:
                    self._attempt = 0
        finally:
            self._close()

    def _next_batch(self) -> list[InputRecord]:
        """The records to process next: in offset order, or fairly from the window."""
        if self._window is None:
            return self._usable(self._poll())
        self._read_ahead(self._window)
        batch = self._window.take(self._batch_size)
        metrics.WINDOW_RECORDS.labels(self.spec.name).set(self._window.records)
        metrics.WINDOW_SHARES.labels(self.spec.name).set(len(self._window.queued()))
        return batch

    def _read_ahead(self, window: FairWindow) -> None:
        """Top the window up from the consumer, pausing reads while it is full.

        An empty window waits for a record (and a batch's worth of company) as the
        in-order runner does; a window with records waiting takes only what the consumer
        has already fetched. A full window still calls the consumer, which serves
        rebalances and keeps this member in the group; its partitions are paused so that
        nothing more is fetched, and resumed once a quarter of the window is free.
        """
        if window.full:
            if not self._reading_paused:
                self.consumer.pause(self.consumer.assignment())
                self._reading_paused = True
            messages = self.consumer.consume(READ_AHEAD_CHUNK, 0)
        else:
            if self._reading_paused and window.records <= window.max_records * 3 // 4:
                self.consumer.resume(self.consumer.assignment())
                self._reading_paused = False
            # An empty window waits for a record and a batch's worth of company; then
            # everything fetched already, up to the room: a record read a loop late
            # waits a whole batch longer for its turn.
            messages = self._poll() if window.records == 0 else []
            if window.room > len(messages):
                messages += self.consumer.consume(window.room - len(messages), 0)
        share_of, ctx = self.spec.share_of, self.ctx
        if share_of is None or ctx is None:  # a window exists only with both
            raise RuntimeError("a fair window without share_of or before start")
        skipped = 0
        for record in self._usable(messages):
            if not window.add(record, share_of(ctx, record)):
                skipped += 1
        if skipped:
            metrics.SKIPPED_DONE.labels(self.spec.name).inc(skipped)

    def _poll(self) -> list[Message]:
        """The next batch: whatever arrives within the batch timeout of its first record.

        The wait to fill a batch starts at its first record, not at the poll: an idle
        runner costs a lone record no wait beyond the timeout (records that queued up
        while the last batch was processed are all there at once), and the timeout is
        what a record may wait for company, the latency traded for bigger batches.
        """
        first = self.consumer.consume(1, IDLE_WAIT_S)
        if not first or self._batch_size == 1:
            return first
        filling = time.perf_counter()
        rest = self.consumer.consume(self._batch_size - 1, self._batch_timeout_s)
        metrics.BATCH_STAGE.labels(self.spec.name, "fill").observe(time.perf_counter() - filling)
        return first + rest

    def _batching(self) -> tuple[int, float]:
        runner = self.settings.runner
        size, timeout_ms = runner.batch_size, runner.batch_timeout_ms
        if self.spec.batching is not None:
            own_size, own_timeout_ms = self.spec.batching(self.config)
            explicit = runner.model_fields_set
            size = size if "batch_size" in explicit else own_size
            timeout_ms = timeout_ms if "batch_timeout_ms" in explicit else own_timeout_ms
        return size, timeout_ms / 1000

    # -- start and stop ---------------------------------------------------------
    def _start(self) -> None:
        runner = self.settings.runner
        self.serde = AvroSerde(kafka.registry(self.settings), self.catalog, self.settings.registry)
        bare = Context(
            processor=self.spec.name,
            settings=self.settings,
            config=self.config,
            catalog=self.catalog,
            logger=self.logger,
            serde=self.serde,
            resources=None,
            instance_id=self.instance_id,
        )
        probe = BatchPipeline(self.spec, bare, group_id=self.group_id)
        self._check_topics(probe.dlq_topics)
        probe.check_output_schemas()  # fail now, not mid-stream, if a schema is not registered
        resources = self.spec.setup(bare) if self.spec.setup is not None else None
        self.ctx = dataclasses.replace(bare, resources=resources)
        self.pipeline = BatchPipeline(
            self.spec,
            self.ctx,
            group_id=self.group_id,
            tracing_on=self._tracing,
            rethrow=(KafkaException,),
        )
        if self.spec.at_least_once:
            self.producer = kafka.producer(
                self.settings, **{"linger.ms": 1, "on_delivery": self._delivered}
            )
        else:
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

    def _check_topics(self, dlq_topics: dict[str, str | None]) -> None:
        dlqs = {t for t in dlq_topics.values() if t is not None}
        needed = set(self.inputs) | set(self.outputs) | dlqs
        physical = {self.catalog.physical(t) for t in needed}
        missing = kafka.missing_topics(kafka.admin(self.settings), physical)
        if missing:
            raise ConfigurationError(
                f"{self.spec.name}: topics missing on {self.settings.kafka.bootstrap_servers}: "
                f"{', '.join(missing)}. Run `sluice schemas apply` first."
            )

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
        if self.spec.teardown is not None and self.ctx is not None:
            self.spec.teardown(self.ctx)
        if self._registration is not None:
            with suppress(OSError):
                self._registration.unlink()

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _describe(partitions))
        if self._window is not None and partitions:
            self._load_ledgers(consumer, self._window, partitions)
            if self._reading_paused:
                consumer.pause(partitions)

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # No transaction is ever open here: callbacks run inside consume(), between batches.
        log.info("revoked %s", _describe(partitions))
        if self._window is not None:
            self._window.revoke((self.catalog.logical(p.topic), p.partition) for p in partitions)

    def _load_ledgers(
        self, consumer: Any, window: FairWindow, partitions: list[TopicPartition]
    ) -> None:
        """Each newly assigned partition's committed offset and done-offsets map.

        Read with the consumer's isolation (read_committed asks the broker for stable
        offsets), so a previous owner's open transaction is settled first.
        """
        for tp in consumer.committed(partitions, timeout=60):
            committed = tp.offset if tp.offset >= 0 else None
            done: set[int] = set()
            if committed is not None:
                try:
                    done = decode_done(committed, tp.metadata)
                except MetadataError as exc:
                    log.warning(
                        "%s[%d]: %s; records above offset %d will be processed again",
                        tp.topic,
                        tp.partition,
                        exc,
                        committed,
                    )
            if done:
                log.info(
                    "%s[%d]: committed at %d, %d records after it done already (skipped)",
                    tp.topic,
                    tp.partition,
                    committed,
                    len(done),
                )
            window.assign(
                (self.catalog.logical(tp.topic), tp.partition), PartitionLedger(committed, done)
            )

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
            if self.spec.at_least_once:
                produced = self._deliver_then_commit(batch)
            else:
                produced = self._transaction(batch)
            committed = time.perf_counter()
        except TransientError as exc:
            metrics.BATCHES.labels(name, "retried").inc()
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        finally:
            metrics.IN_FLIGHT.labels(name).dec()
            if span is not None:
                span.end()
        if self._window is not None:
            self._window.committed(batch)
        self.committed_batches += 1
        self.committed_records += len(batch)
        metrics.BATCHES.labels(name, "committed").inc()
        metrics.BATCH_SIZE.labels(name).observe(len(batch))
        metrics.BATCH_LATENCY.labels(name).observe(time.perf_counter() - started)
        metrics.BATCH_STAGE.labels(name, "process").observe(self._processed_at - started)
        metrics.BATCH_STAGE.labels(name, "commit").observe(committed - self._processed_at)
        # Metrics name topics as the cluster does, like the lag librdkafka reports.
        for topic, count in Counter(record.topic for record in batch).items():
            metrics.RECORDS_IN.labels(name, self.catalog.physical(topic)).inc(count)
        for (topic, stage), count in produced.items():
            if stage:
                metrics.RECORDS_DLQ.labels(name, topic, stage).inc(count)
            else:
                metrics.RECORDS_OUT.labels(name, topic).inc(count)
        if self.spec.after_commit is not None and self.ctx is not None:
            self.spec.after_commit(self.ctx)

    def _transaction(self, batch: list[InputRecord]) -> dict[tuple[str, str], int]:
        """The batch's records and its offsets, in one transaction."""
        self.producer.begin_transaction()
        try:
            produced = self.pipeline.run(batch, self)
            self._processed_at = time.perf_counter()
            self.producer.send_offsets_to_transaction(
                self._commit_offsets(batch), self.consumer.consumer_group_metadata(), 60
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
        return produced

    def _deliver_then_commit(self, batch: list[InputRecord]) -> dict[tuple[str, str], int]:
        """The batch's records, flushed and all delivered; then its offsets (at least once)."""
        self._undelivered = 0
        produced = self.pipeline.run(batch, self)
        self._processed_at = time.perf_counter()
        left = self.producer.flush(self.settings.runner.shutdown_timeout_s)
        if left or self._undelivered:
            # Rewound and processed again: what was delivered is delivered twice.
            raise TransientError(
                f"{left + self._undelivered} records of the batch were not delivered"
            )
        try:
            self.consumer.commit(offsets=self._offsets(batch, last=True), asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            raise TransientError(f"offset commit failed: {exc.args[0].str()}") from exc
        return produced

    def _delivered(self, error: KafkaError | None, _message: Message | None) -> None:
        if error is not None:
            self._undelivered += 1
            log.warning("a record was not delivered: %s", error.str())

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> None:
        """Send one record, in the open transaction or at least once (the pipeline's output)."""
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=kafka.kafka_headers(headers)
                )
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(60)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            log.warning("abort_transaction: %s", exc.args[0].str())

    # -- retry ------------------------------------------------------------------
    def _commit_offsets(self, batch: list[InputRecord]) -> list[TopicPartition]:
        """What the batch's transaction commits: the offsets after it, or the window's."""
        if self._window is None:
            return self._offsets(batch, last=True)
        return [
            TopicPartition(self.catalog.physical(topic), partition, offset, metadata=metadata)
            for (topic, partition), (offset, metadata) in self._window.commit_offsets(batch).items()
        ]

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
        """Seek every partition of the batch back to its first record in the batch.

        A fair runner empties its window and seeks every partition back to its commit
        point: what it had read ahead is read again, and what is done is skipped.
        """
        if self._window is not None:
            seeks = [
                TopicPartition(self.catalog.physical(topic), partition, offset)
                for (topic, partition), offset in self._window.rewind().items()
            ]
        else:
            seeks = self._offsets(batch, last=False)
        for tp in seeks:
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
        self._reading_paused = False

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


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"
