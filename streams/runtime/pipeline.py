"""One batch through a processor: decode → process → encode → outputs or dead letters.

This is the part of the runner that does not talk to Kafka, so that the
in-process harness (``streams.runtime.testing``) runs exactly the same path:

* each record is decoded with the topic's value schema (unless the spec takes
  raw bytes); one that does not decode is dead-lettered with its kind;
* the processor sees the decoded batch; if it raises, the batch is re-run
  record by record so that only the record that makes it raise is
  dead-lettered (``ProcessingFailed``), and a stateful processor's ``rollback``
  hook restores its memory before each re-run;
* each output is encoded with its topic's schema; an output that does not fit
  dead-letters its input (``OutputRejected``);
* a dead letter keeps the original bytes and key and gets ``sluice.error.*``
  headers; outputs a refusal still owes (infer's error result) go out too.

Where the records go is the caller's: the runner hands a transactional
producer, the harness a list.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from streams.contracts.catalog import DLQ_SUFFIX, Catalog
from streams.contracts.serde import AvroSerde
from streams.errors import (
    ConfigurationError,
    OutputRejected,
    ProcessingFailed,
    RecordError,
    TransientError,
    value_free,
    value_free_traceback,
)
from streams.runtime import tracing
from streams.runtime.dead_letters import dlq_record_headers, error_headers
from streams.runtime.sealing import Keyring
from streams.runtime.span_export import TOPIC as SPANS_TOPIC
from streams.runtime.spec import Context, Headers, InputRecord, Outcome, Output, ProcessorSpec

log = logging.getLogger(__name__)
Encoder = Callable[[Any], bytes]


class Destination(Protocol):
    """Where a batch's records go: a transactional producer, or the harness's list."""

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> None:
        """Send one encoded record to ``topic`` (the physical name)."""


class MissingDeadLetterTopicError(ConfigurationError):
    """An input topic has no dead-letter topic in the catalog."""


class BatchPipeline:
    """Runs batches of one processor through its spec; the runner's Kafka-free core."""

    def __init__(
        self,
        spec: ProcessorSpec[Any, Any],
        ctx: Context[Any, Any],
        *,
        group_id: str,
        tracing_on: bool = False,
        rethrow: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.spec = spec
        self.ctx = ctx
        self.catalog: Catalog = ctx.catalog
        self.serde: AvroSerde = ctx.serde
        self.group_id = group_id
        self.tracing_on = tracing_on
        # Exceptions that mean "the batch cannot be processed now" besides TransientError
        # (the runner adds KafkaException): never isolated per record.
        self._rethrow: tuple[type[BaseException], ...] = (TransientError, *rethrow)
        self._tracer = trace.get_tracer("sluice.runner")
        self._encoders: dict[str, Encoder] = {}
        self.inputs = spec.inputs(self.catalog, ctx.config)
        self.outputs = spec.outputs(self.catalog, ctx.config)
        self.dlq_topics = {t: self._dlq_topic_of(t) for t in self.inputs}
        self.keyring = Keyring.from_settings(ctx.settings.dead_letters)
        self.signers = spec.signers(ctx.config) if spec.signers is not None else {}
        encrypted = sorted(
            dlq for dlq in self.dlq_topics.values() if dlq and self.catalog.topic(dlq).encrypted
        )
        if encrypted:
            # Fail at start-up, not on the first refused prompt hours later.
            self.keyring.require(
                f"{self.spec.name} may dead-letter records to {', '.join(encrypted)}, whose "
                "data class keeps payloads encrypted"
            )

    def check_output_schemas(self) -> None:
        """Fail now, not mid-stream, if an output topic's schema is not registered."""
        for topic in self.outputs:
            self._encoder(topic)

    def _dlq_topic_of(self, topic: str) -> str | None:
        if topic.endswith(DLQ_SUFFIX) and topic in self.catalog.topics:
            return None  # a dead-letter topic is read (by the sink), never dead-lettered
        spec = self.catalog.topics.get(topic)
        if spec is None or spec.dlq_topic is None:
            raise MissingDeadLetterTopicError(
                f"{self.spec.name}: input topic {topic!r} has no dead-letter topic in "
                "schemas/topics.yaml (set `dlq: true`)"
            )
        return spec.dlq_topic

    # -- one batch ---------------------------------------------------------------------
    def run(self, batch: Sequence[InputRecord], out: Destination) -> dict[tuple[str, str], int]:
        """Process ``batch`` and send its records to ``out``.

        Returns counts per (physical topic, dead-letter stage or ""), for metrics.
        """
        decoded = [self._decode(record) for record in batch]
        records = {i: r for i, r in enumerate(decoded) if isinstance(r, InputRecord)}
        # Spans are never traced themselves: the sink loading telemetry.spans would
        # otherwise write a span per span it loads, without end.
        spans = (
            {i: self._record_span(r) for i, r in records.items() if r.topic != SPANS_TOPIC}
            if self.tracing_on
            else {}
        )
        for index, span in spans.items():
            records[index] = dataclasses.replace(records[index], span=span)
        processed = dict(zip(records, self.process(list(records.values())), strict=True))
        counts: dict[tuple[str, str], int] = {}
        for index, source in enumerate(batch):
            first = decoded[index]
            outcome = first if isinstance(first, RecordError) else processed[index]
            for key in self._emit(source, outcome, spans.get(index), out):
                counts[key] = counts.get(key, 0) + 1
        for span in spans.values():
            span.end()
        return counts

    def rollback(self) -> None:
        """The batch in hand will not be committed: let the processor restore its state."""
        if self.spec.rollback is not None:
            self.spec.rollback(self.ctx)

    def process(self, records: Sequence[InputRecord]) -> Sequence[Outcome]:
        """Run the processor; if it raises, isolate the record that made it raise."""
        if not records:
            return []
        try:
            return self._call(records)
        except self._rethrow:
            raise
        except Exception as exc:
            if len(records) == 1:
                self.rollback()
                return [self._failed(records[0], exc)]
            # Where it was raised, not the message: messages may quote a record's values.
            log.warning(
                "%s raised on a batch of %d; processing it record by record\n%s",
                self.spec.name,
                len(records),
                value_free_traceback(exc),
            )
            return self._one_by_one(records)

    def _call(self, records: Sequence[InputRecord]) -> Sequence[Outcome]:
        outcomes = self.spec.process_batch(records, self.ctx)
        if len(outcomes) != len(records):
            raise RuntimeError(
                f"{self.spec.name}.process_batch returned {len(outcomes)} outcomes "
                f"for {len(records)} records"
            )
        return outcomes

    def _one_by_one(self, records: Sequence[InputRecord]) -> list[Outcome]:
        """Each record alone; a record that raises is dead-lettered, its neighbours go on.

        A stateful processor is rolled back to its last commit first, and again after
        each record that raises, followed by a re-run of the records that succeeded so
        far: its state then holds exactly the records that will be committed.
        """
        self.rollback()
        outcomes: list[Outcome] = []
        done: list[int] = []  # indexes of records whose outcome stands
        for index, record in enumerate(records):
            try:
                outcomes.append(self._call([record])[0])
                done.append(index)
            except self._rethrow:
                raise
            except Exception as exc:
                outcomes.append(self._failed(record, exc))
                if self.spec.rollback is not None:
                    self.rollback()
                    again = self._call([records[i] for i in done]) if done else []
                    for i, outcome in zip(done, again, strict=True):
                        outcomes[i] = outcome
        return outcomes

    def _failed(self, record: InputRecord, exc: Exception) -> ProcessingFailed:
        """What a record that makes the processor raise becomes (called inside ``except``)."""
        log.error(
            "%s raised on %s[%d]@%d; sending the record to the DLQ\n%s",
            self.spec.name,
            record.topic,
            record.partition,
            record.offset,
            value_free_traceback(exc),
        )
        kind = type(exc).__name__
        return ProcessingFailed(
            f"{self.spec.name} raised {value_free(exc)} on this record",
            details={"exception": kind},
        )

    # -- decode and encode -------------------------------------------------------------
    def _decode(self, record: InputRecord) -> InputRecord | RecordError:
        if not self.spec.decode_inputs:
            return record
        try:
            value = self.serde.decode(
                record.raw, self.catalog.value_schema(record.topic), topic=record.topic
            )
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
    ) -> tuple[bytes | None, bytes, Headers]:
        try:
            value = self._encoder(output.topic)(output.value)
        except RecordError:
            raise
        except Exception as exc:  # fastavro raises ValueError/TypeError/KeyError and friends
            raise OutputRejected(
                f"output for {output.topic} does not fit its schema: {value_free(exc)}",
                details={"exception": type(exc).__name__, "output_topic": output.topic},
            ) from exc
        key = output.key.encode("utf-8") if isinstance(output.key, str) else output.key
        if span is not None:
            headers = tracing.span_context_headers(span)
        else:
            headers = tracing.trace_headers(source.headers)
        signer = self.signers.get(output.topic)
        # Signed last, over the bytes just encoded: what the reader gets is what was signed.
        signature = signer.headers(output.topic, key, value) if signer is not None else []
        return key, value, [*headers, *output.headers, *signature]

    # -- emit --------------------------------------------------------------------------
    def _emit(
        self, source: InputRecord, outcome: Outcome, span: trace.Span | None, out: Destination
    ) -> list[tuple[str, str]]:
        """Produce one record's outputs, or its dead letter; returns (topic, stage) per record."""
        if not isinstance(outcome, RecordError):
            try:
                encoded = [self._encode(output, source, span) for output in outcome]
            except RecordError as error:
                outcome = error
            else:
                for output, (key, value, headers) in zip(outcome, encoded, strict=True):
                    out.produce(self.catalog.physical(output.topic), value, key, headers)
                return [(self.catalog.physical(output.topic), "") for output in outcome]
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, outcome.error_class))
        produced = [(self._dead_letter(source, outcome, out), outcome.stage)]
        if outcome.outputs:  # e.g. the error result a request is still owed
            produced += self._emit(source, outcome.outputs, span, out)
        return produced

    def _dead_letter(self, source: InputRecord, error: RecordError, out: Destination) -> str:
        dlq = self.dlq_topics[source.topic]
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
                max_message_chars=self.ctx.settings.runner.max_dlq_message_chars,
            ),
        )
        value = source.raw or b""
        if self.catalog.topic(dlq).encrypted:
            value, sealing = self.keyring.seal(value)
            headers = [*headers, *sealing]
        out.produce(topic, value, source.key, headers)
        return topic

    # -- tracing -----------------------------------------------------------------------
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
