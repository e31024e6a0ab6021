"""Streamed generations: each delta as an ``InferenceChunk`` on ``inference.chunks.raw``.

A request with ``stream: true`` for a model with the ``stream`` input
(infra/triton/models.yaml) has its deltas produced here as Triton sends them, so a
caller sees the text while it is generated. They are a live preview, delivered at
least once, and do not wait for infer's transaction: a producer of their own,
idempotent and NOT transactional, sends them with a small linger. The request's
one result still goes through the transaction, unchanged by streaming.

Per Triton call (an *attempt*, a uuid4 hex): chunks ``seq`` 0, 1, 2, ... with the
non-empty deltas in order, then one ``final`` chunk with the finish reason
("length", "stop", or "error" with no text when the call failed). A request the
runner retries (Triton unreachable, a crash) streams again under a new attempt;
consumers keep the first attempt they see. A chunk that cannot be sent is counted
and logged, never retried out of order: its ``seq`` stays used, so the gap shows.

Chunk text is model output about a tenant's prompt: it is never logged.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from prometheus_client import Counter

from processors.infer.planning import Completion, Job
from streams.contracts.records import InferenceChunk, utcnow

log = logging.getLogger("sluice.infer")

CHUNKS = "inference.chunks.raw"
#: How long a chunk waits for room in a full producer queue before it is dropped.
_QUEUE_WAIT_S = 0.05
#: After the producer could not be built (registry down, schema not applied), how long
#: streamed requests go without chunks before it is tried again.
_RETRY_CONNECT_S = 30.0

CHUNKS_SENT = Counter(
    "sluice_infer_chunks_total",
    "Chunks of streamed generations handed to the chunk producer, by model.",
    ["model"],
)
CHUNK_FAILURES = Counter(
    "sluice_infer_chunk_failures_total",
    "Chunks of streamed generations lost, by stage: connect (no producer or schema), "
    "produce (refused or queue full) or delivery (not acknowledged by Kafka).",
    ["stage"],
)


class ChunkProducer(Protocol):
    """What chunks need of confluent-kafka's Producer."""

    def produce(self, topic: str, *, value: bytes, key: str, on_delivery: Any) -> None:
        """Queue one record."""

    def poll(self, timeout: float) -> int:
        """Serve delivery callbacks."""

    def flush(self, timeout: float) -> int:
        """Wait for queued records; how many are left."""


#: Builds (producer, value encoder, the topic's name on the cluster), on first use.
Connect = Callable[[], tuple[ChunkProducer, Callable[[Mapping[str, Any]], bytes], str]]


def finish_reason(done: Completion | None, max_tokens: int | None) -> str:
    """Why a generation ended: the token limit, the model's own stop, or a failure.

    A model that does not count its output tokens is taken to have stopped by itself;
    the result on inference.results has the counted tokens either way.
    """
    if done is None:
        return "error"
    if max_tokens is not None and done.output_tokens is not None:
        return "length" if done.output_tokens >= max_tokens else "stop"
    return "stop"


class ChunkStream:
    """One attempt's chunks: the ``GenerationStream`` of one streamed Triton call."""

    def __init__(self, job: Job, send: Callable[[InferenceChunk], None]) -> None:
        self._request = job.request
        self._max_tokens = job.max_tokens
        self._send = send
        self.attempt = uuid.uuid4().hex
        self._seq = 0
        self._ended = False
        self._lock = threading.Lock()  # deltas and the end come from a Triton worker thread

    def delta(self, text: str) -> None:
        """Send one delta (empty ones carry nothing and are skipped)."""
        if text:
            self._emit(text, final=False, reason=None)

    def end(self, done: Completion | None) -> None:
        """Send the final chunk: after it, this attempt sends nothing more."""
        self._emit("", final=True, reason=finish_reason(done, self._max_tokens))

    def _emit(self, text: str, *, final: bool, reason: str | None) -> None:
        with self._lock:
            if self._ended:
                return
            chunk = InferenceChunk(
                request_id=self._request.request_id,
                tenant_id=self._request.tenant_id,
                model=self._request.model,
                attempt=self.attempt,
                seq=self._seq,
                text=text,
                final=final,
                finish_reason=reason,
                created_at=utcnow(),
            )
            self._seq += 1
            self._ended = final
            self._send(chunk)


class ChunkPublisher:
    """The chunk producer: separate from the runner's transactional one, built on first use.

    Built lazily so an infer that never serves a streamed request never connects it,
    and so a registry outage at start costs the previews, not the results.
    """

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._ready: tuple[ChunkProducer, Callable[[Mapping[str, Any]], bytes], str] | None = None
        self._retry_at = 0.0

    def open(self, job: Job) -> ChunkStream:
        """A stream for one Triton call of ``job`` (a new attempt)."""
        model = job.model.name
        return ChunkStream(job, lambda chunk: self._publish(chunk, model))

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait (a bounded time) for chunks still queued."""
        if self._ready is not None:
            left = self._ready[0].flush(timeout_s)
            if left:
                CHUNK_FAILURES.labels("delivery").inc(left)
                log.warning("%d chunk(s) of streamed generations were not delivered", left)

    def _publish(self, chunk: InferenceChunk, model: str) -> None:
        ready = self._producer()
        if ready is None:
            CHUNK_FAILURES.labels("connect").inc()
            return
        producer, encode, topic = ready
        try:
            value = encode(chunk.to_avro())
        except Exception as exc:  # the message could quote the value: name the class only
            CHUNK_FAILURES.labels("produce").inc()
            log.warning("a chunk could not be encoded for %s (%s)", CHUNKS, type(exc).__name__)
            return
        for waited in (False, True):
            try:
                producer.produce(topic, value=value, key=chunk.request_id, on_delivery=_delivered)
                break
            except BufferError:
                if waited:  # a preview is not worth stalling the generation for
                    CHUNK_FAILURES.labels("produce").inc()
                    log.warning("the chunk producer's queue is full: a chunk was dropped")
                    return
                producer.poll(_QUEUE_WAIT_S)
            except Exception as exc:
                CHUNK_FAILURES.labels("produce").inc()
                log.warning("a chunk was refused by the producer (%s)", type(exc).__name__)
                return
        CHUNKS_SENT.labels(model).inc()
        producer.poll(0)

    def _producer(self) -> tuple[ChunkProducer, Callable[[Mapping[str, Any]], bytes], str] | None:
        if self._ready is not None:
            return self._ready
        with self._lock:
            if self._ready is None and time.monotonic() >= self._retry_at:
                try:
                    self._ready = self._connect()
                except Exception as exc:
                    self._retry_at = time.monotonic() + _RETRY_CONNECT_S
                    log.warning(
                        "streamed requests get no chunks for %.0fs: the producer for %s "
                        "could not be built (%s). Run `sluice schemas apply` if its schema is "
                        "not registered.",
                        _RETRY_CONNECT_S,
                        CHUNKS,
                        exc,
                    )
        return self._ready


def _delivered(error: Any, _message: Any) -> None:
    """Delivery report: a lost chunk is counted and logged, without its text."""
    if error is not None:
        CHUNK_FAILURES.labels("delivery").inc()
        log.warning("a chunk was not delivered to %s: %s", CHUNKS, error)
