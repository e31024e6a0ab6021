"""guard-stream: the model's streamed deltas, redacted before any caller sees them.

``inference.chunks.raw`` (infer: the raw deltas of a streamed generation) →
``inference.chunks`` (what the gateway relays as server-sent events). Each stream, one
per (request id, infer attempt), has its own ``StreamRedactor``: guard's own output
redaction with the tenant's policy, over a hold-back tail, so an entity split across
deltas is still found whole (``processors.guard.stream_redaction`` states the bound).

Delivery is at least once, as the contract of these topics says (the stored result
keeps going the exactly-once way, ``inference.responses`` → guard → ``inference.results``):
the runner flushes each batch's chunks, then commits its offsets (``at_least_once``).
Repeated chunks (the same (attempt, seq)) are dropped; the output of each stream is
numbered 0, 1, 2, ... under the input's attempt id, one output per input chunk that
released text, and one for the final chunk.

What this processor cannot redact correctly it does not release:

* a stream first seen past its first chunk (this replica restarted, or its partition
  moved here, mid-stream) is skipped whole: without its earlier text, an entity
  crossing the start could not be found; a stream whose chunks skip a seq is closed
  the same way. Its caller gets the rest of the text from the final result
  (the gateway completes a stream from ``inference.results``);
* at most ``stream_max_open`` streams are open per replica (the least recently active
  is dropped beyond it), and a stream idle for ``stream_idle_s`` is dropped.

Chunk text is never logged; a chunk of a tenant the registry does not hold (guard
cannot make its pseudonyms), or one that contradicts its stream, is dead-lettered.

Metrics (``sluice_guard_stream_*``, labels from fixed sets only, never a tenant): raw
chunks read by what became of them, deltas released, the characters each stream holds
back, the open streams, streams dropped by reason, streams withheld by reason, and the
entities redacted in released text by entity type.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from processors.guard.engine import GuardEngine
from processors.guard.policy import Entity
from processors.guard.processor import TEXT_LOGGERS
from processors.guard.settings import GuardSettings
from processors.guard.stream_redaction import (
    WITHHOLDING_REASONS,
    Analyse,
    StreamRedactor,
    engine_analysis,
)
from streams.contracts.records import InferenceChunk, utcnow
from streams.errors import InvalidChunk, RecordError, UnauthenticatedRequest
from streams.runtime.bounded import BoundedCache
from streams.runtime.metrics import bounded_label
from streams.runtime.spec import Context, InputRecord, Outcome, Output, ProcessorSpec
from streams.runtime.tenants import TenantRegistry

RAW_CHUNKS = "inference.chunks.raw"
CHUNKS = "inference.chunks"

log = logging.getLogger("sluice.guard-stream")

#: (request id, attempt): one stream.
StreamKey = tuple[str, str]

# What became of a raw chunk (``sluice_guard_stream_chunks_in_total{outcome}``).
STAGED = "staged"  # its stream's next: its text is redacted and released
REPEAT = "repeat"  # delivered again (at least once), or past its stream's final chunk
CLOSED = "closed"  # its stream had ended or was dropped
DROPPING = "dropped"  # it made guard-stream drop its stream (see the reasons below)
# Why a stream was dropped before its end (``sluice_guard_stream_dropped_total{reason}``).
FIRST_SEEN_MIDWAY = "first_seen_midway"  # begun before this replica had it
GAP = "gap"  # a seq is missing
IDLE = "idle"  # no chunk for ``idle_s``
EVICTED = "evicted"  # the least recently active beyond ``max_open``
_ENTITY_TYPES = frozenset(e.value for e in Entity)

CHUNKS_IN = Counter(
    "sluice_guard_stream_chunks_in_total",
    "Raw chunks guard-stream read, by what became of them: staged (redacted and released "
    "in order), repeat (delivered again), closed (its stream had ended or was dropped), "
    "dropped (it made guard-stream drop its stream).",
    ["outcome"],
)
DELTAS_RELEASED = Counter(
    "sluice_guard_stream_deltas_released_total",
    "Redacted deltas with text written to inference.chunks.",
)
HELD_BACK_CHARS = Histogram(
    "sluice_guard_stream_held_back_chars",
    "Characters a stream still holds back (received, not released) after each release, "
    "per stream and batch: the hold-back, or more while a run of text has no whitespace.",
    buckets=(0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
)
OPEN_STREAMS = Gauge("sluice_guard_stream_open_streams", "Streams open on this replica.")
STREAMS_DROPPED = Counter(
    "sluice_guard_stream_dropped_total",
    "Streams dropped before their end, by reason: first_seen_midway (begun before this "
    "replica had it), gap (a chunk is missing), idle (silent for stream_idle_s), evicted "
    "(beyond stream_max_open). Their callers get the rest from the stored result.",
    ["reason"],
)
STREAMS_WITHHELD = Counter(
    "sluice_guard_stream_withheld_total",
    "Streams whose rest guard-stream withheld because it could not analyse their text, by "
    "reason (analyzer_error, analyzer_timeout, input_too_long).",
    ["reason"],
)
ENTITIES_REDACTED = Counter(
    "sluice_guard_stream_entities_redacted_total",
    "Entities redacted in the text of streams guard-stream released, by entity type.",
    ["entity_type"],
)


def _count_entity(entity_type: str) -> None:
    ENTITIES_REDACTED.labels(bounded_label(entity_type, _ENTITY_TYPES)).inc()


@dataclass
class _OpenStream:
    tenant_id: str
    redactor: StreamRedactor
    next_in: int = 0  # the seq expected next from infer
    next_out: int = 0  # the seq of this stream's next redacted chunk
    last_seen: float = 0.0
    # What the batch at hand brought: its deltas, whether the last was final, and why.
    staged: list[str] = field(default_factory=list)
    staged_final: bool = False
    staged_model: str = ""
    finish_reason: str | None = None


class ChunkStreams:
    """The open streams of one replica, and what each chunk releases. Pure of Kafka.

    ``analysis_for(request_id, tenant_id)`` gives the window analysis of a stream (guard's
    redaction with the tenant's policy); ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        analysis_for: Callable[[str, str], Analyse],
        *,
        hold_back: int = 64,
        max_pending_chars: int = 4096,
        max_open: int = 10_000,
        idle_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._analysis_for = analysis_for
        self.hold_back = hold_back
        self.max_pending_chars = max_pending_chars
        self.max_open = max_open
        self.idle_s = idle_s
        self._clock = clock
        self._open: OrderedDict[StreamKey, _OpenStream] = OrderedDict()  # oldest activity first
        # Streams closed, dropped or skipped: their later (repeated) chunks open nothing.
        self._closed: BoundedCache[StreamKey, bool] = BoundedCache(max(4 * max_open, 1024))
        # Streams with text staged in the batch at hand, in the order they were staged.
        self._staged: dict[StreamKey, None] = {}
        self.dropped = 0

    @property
    def open_count(self) -> int:
        """How many streams are open now."""
        return len(self._open)

    def accept(self, chunk: InferenceChunk) -> list[InferenceChunk]:
        """The redacted chunk ``chunk`` releases (none when it releases nothing yet)."""
        self.stage(chunk)
        return self.release()

    def stage(self, chunk: InferenceChunk) -> bool:
        """Take ``chunk`` into its stream's text of this batch; False when it adds nothing.

        Staged text is analysed by ``release``, once per stream however many deltas of it
        the batch holds: a delta costs guard an analysis only when the batch has no later
        one of its stream, so a replica that falls behind catches up with bigger batches
        instead of analysing every token. Raises ``InvalidChunk`` for a chunk that
        contradicts its stream.
        """
        key = (chunk.request_id, chunk.attempt)
        if key in self._closed:
            CHUNKS_IN.labels(CLOSED).inc()
            return False
        stream = self._open.get(key)
        if stream is None:
            if chunk.seq != 0:
                self._drop(key, FIRST_SEEN_MIDWAY)  # skipped whole
                CHUNKS_IN.labels(DROPPING).inc()
                return False
            stream = self._start(key, chunk.tenant_id)
        elif chunk.tenant_id != stream.tenant_id:
            raise InvalidChunk(
                "a chunk names another tenant than its stream's first chunk; check the "
                "producer of inference.chunks.raw (only infer may write it)"
            )
        if chunk.seq < stream.next_in or stream.staged_final:
            CHUNKS_IN.labels(REPEAT).inc()
            return False  # delivered again
        if chunk.seq > stream.next_in:
            self._drop(key, GAP)  # a chunk is missing: the rest cannot be redacted in context
            CHUNKS_IN.labels(DROPPING).inc()
            return False
        CHUNKS_IN.labels(STAGED).inc()
        stream.next_in += 1
        stream.last_seen = self._clock()
        self._open.move_to_end(key)
        stream.staged.append(chunk.text)
        stream.staged_model = chunk.model
        if chunk.final:
            stream.staged_final = True
            stream.finish_reason = chunk.finish_reason
        self._staged[key] = None
        return True

    def release(self) -> list[InferenceChunk]:
        """One redacted chunk per stream with staged text that releases some (or ends)."""
        out: list[InferenceChunk] = []
        for key in self._staged:
            stream = self._open.get(key)
            if stream is None:
                continue  # dropped after its text was staged
            delta, final = "".join(stream.staged), stream.staged_final
            stream.staged.clear()
            was_withheld = stream.redactor.withheld
            text = stream.redactor.feed(delta, final=final)
            if stream.redactor.withheld is not None and was_withheld is None:
                reason = bounded_label(stream.redactor.withheld, WITHHOLDING_REASONS)
                STREAMS_WITHHELD.labels(reason).inc()
            if text:
                DELTAS_RELEASED.inc()
            if final:
                self._close(key)
            else:
                HELD_BACK_CHARS.observe(stream.redactor.pending_chars)
            if not text and not final:
                continue
            out.append(
                InferenceChunk(
                    request_id=key[0],
                    tenant_id=stream.tenant_id,
                    model=stream.staged_model,
                    attempt=key[1],
                    seq=stream.next_out,
                    text=text,
                    final=final,
                    created_at=utcnow(),
                    finish_reason=stream.finish_reason if final else None,
                )
            )
            stream.next_out += 1
        self._staged.clear()
        OPEN_STREAMS.set(len(self._open))
        return out

    def expire(self) -> int:
        """Drop the streams idle for ``idle_s``; how many were dropped."""
        horizon = self._clock() - self.idle_s
        expired = [key for key, stream in self._open.items() if stream.last_seen < horizon]
        for key in expired:
            self._drop(key, IDLE)
        OPEN_STREAMS.set(len(self._open))
        return len(expired)

    def _start(self, key: StreamKey, tenant_id: str) -> _OpenStream:
        while len(self._open) >= self.max_open:
            oldest = next(iter(self._open))
            self._drop(oldest, EVICTED)
        stream = _OpenStream(
            tenant_id,
            StreamRedactor(
                self._analysis_for(key[0], tenant_id),
                hold_back=self.hold_back,
                max_pending_chars=self.max_pending_chars,
                on_redacted=_count_entity,
            ),
            last_seen=self._clock(),
        )
        self._open[key] = stream
        return stream

    def _drop(self, key: StreamKey, reason: str) -> None:
        self.dropped += 1
        STREAMS_DROPPED.labels(reason).inc()
        self._close(key)

    def _close(self, key: StreamKey) -> None:
        self._open.pop(key, None)
        self._closed[key] = True


def redact_chunks(
    records: Sequence[InputRecord], streams: ChunkStreams, registry: TenantRegistry
) -> list[Outcome]:
    """Per raw chunk, its redacted chunk(s), nothing, or why it is dead-lettered."""
    streams.expire()
    outcomes: list[Outcome] = []
    last_of: dict[StreamKey, int] = {}  # a stream's last staged chunk: its record's index
    for index, record in enumerate(records):
        try:
            chunk = InferenceChunk.from_avro(record.value)
            if record.key != chunk.request_id.encode("utf-8"):
                raise InvalidChunk(
                    "a chunk's key is not its request id; inference.chunks.raw is keyed by "
                    "request id so that one stream stays in order"
                )
            if registry.entry(chunk.tenant_id) is None:
                raise UnauthenticatedRequest(
                    "a streamed chunk for a tenant the tenant registry does not hold "
                    "(retired, or not written by infer): register the tenant again and replay"
                )
            if streams.stage(chunk):
                last_of[(chunk.request_id, chunk.attempt)] = index
            outcomes.append([])
        except RecordError as error:
            outcomes.append(error)
    # Each stream's redacted text goes out with its last chunk of the batch.
    for released in streams.release():
        outcome = outcomes[last_of[(released.request_id, released.attempt)]]
        if isinstance(outcome, list):  # always: a staged chunk is never dead-lettered
            outcome.append(Output(CHUNKS, released.to_avro(), key=released.request_id))
    return outcomes


# -- the processor declaration --------------------------------------------------------
@dataclass
class StreamResources:
    """The engine (Presidio, the policy, the pseudonym keys), the registry, the open streams."""

    engine: GuardEngine
    registry: TenantRegistry
    streams: ChunkStreams


def _setup(ctx: Context[GuardSettings, None]) -> StreamResources:
    for name in TEXT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    settings = ctx.config
    registry = TenantRegistry.load(settings.tenants_path)  # before the engine starts a process
    # Outputs are redacted, never scored for injection: no embedder, so no Triton.
    engine = GuardEngine.from_settings(
        settings.model_copy(update={"embedder": "none"}),
        pseudonym_key_ids=registry.pseudonym_key_id,
    )
    streams = ChunkStreams(
        lambda request_id, tenant_id: engine_analysis(engine, request_id, tenant_id),
        hold_back=settings.stream_hold_back_chars,
        max_pending_chars=settings.stream_max_pending_chars,
        max_open=settings.stream_max_open,
        idle_s=settings.stream_idle_s,
    )
    return StreamResources(engine, registry, streams)


def _teardown(ctx: Context[GuardSettings, StreamResources]) -> None:
    ctx.resources.engine.close()


def _process_batch(
    records: Sequence[InputRecord], ctx: Context[GuardSettings, StreamResources]
) -> list[Outcome]:
    return redact_chunks(records, ctx.resources.streams, ctx.resources.registry)


PROCESSOR: ProcessorSpec[GuardSettings, StreamResources] = ProcessorSpec(
    name="guard-stream",
    description="Redact the deltas of streamed generations before the gateway relays them.",
    settings=GuardSettings,
    inputs=lambda catalog, settings: [RAW_CHUNKS],
    outputs=lambda catalog, settings: [CHUNKS],
    process_batch=_process_batch,
    setup=_setup,
    teardown=_teardown,
    batching=lambda settings: (
        settings.stream_max_records_per_poll,
        settings.stream_max_batch_latency_ms,
    ),
    at_least_once=True,
)

__all__ = ["CHUNKS", "PROCESSOR", "RAW_CHUNKS", "ChunkStreams", "redact_chunks"]
