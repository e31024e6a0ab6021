"""OpenTelemetry tracing over Kafka headers (W3C ``traceparent``/``tracestate``).

The producer of a request starts its trace and writes ``traceparent`` into the
record's headers. Each processor continues it: one span per input record
(child of the record's context) whose context goes into the headers of every
output of that record, plus one span per batch that links to them. With the
parent-based sampler a record from an unsampled trace costs a non-recording
span only, and with the exporter ``none`` the runner copies the header through
without creating spans at all.

A record's ``traceparent`` is whatever its producer wrote, ``sampled`` flag
included, so that flag is a request, not an order: ``sampler()`` follows it for
a random share of records (``SLUICE_TELEMETRY__REMOTE_SAMPLE_RATIO``) and for at
most ``SLUICE_TELEMETRY__REMOTE_SPANS_PER_SECOND`` spans a second per process. A
flood of records claiming sampled traces costs a bounded number of spans; the
records over the budget continue their trace unsampled.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from streams.runtime.spec import Headers
from streams.settings import Settings, TelemetrySettings

log = logging.getLogger(__name__)
TRACE_HEADERS = ("traceparent", "tracestate")
_PROPAGATOR = TraceContextTextMapPropagator()


class _HeaderGetter(Getter[Sequence[tuple[str, bytes | None]]]):
    def get(self, carrier: Sequence[tuple[str, bytes | None]], key: str) -> list[str] | None:
        values = [v.decode("ascii", "replace") for k, v in carrier if k == key and v is not None]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes | None]]) -> list[str]:
        return [k for k, _ in carrier]


class _HeaderSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode("ascii")))


GETTER = _HeaderGetter()
SETTER = _HeaderSetter()


def setup_tracing(
    service_name: str,
    settings: Settings,
    extra_processors: Iterable[SpanProcessor] = (),
) -> TracerProvider | None:
    """Install the process-wide tracer provider; returns None when tracing is off.

    A process that already has an SDK provider (an application embedding the
    SDK client, say) keeps it: Sluice adds nothing on top.
    """
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    processors = list(extra_processors)
    exporter = _exporter(settings)
    if exporter is not None:
        processors.append(BatchSpanProcessor(exporter))
    if not processors:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=sampler(settings.telemetry),
    )
    for processor in processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def sampler(settings: TelemetrySettings) -> Sampler:
    """Parent-based sampling that bounds what a producer's ``sampled`` flag can cost.

    Traces Sluice starts (no parent) are sampled at ``root_sample_ratio``; a child of
    a span of this process follows it; a record whose producer's context is not sampled
    gets no span; one whose context says sampled gets one within the budget of
    ``RemoteParentBudget``.
    """
    return ParentBased(
        root=TraceIdRatioBased(settings.root_sample_ratio),
        remote_parent_sampled=RemoteParentBudget(
            settings.remote_sample_ratio, settings.remote_spans_per_second
        ),
    )


class RemoteParentBudget(Sampler):
    """Follows a remote parent's ``sampled`` flag for a share of spans, within a rate budget.

    The share is drawn at random, not from the trace id, which the producer chooses
    (a ``TraceIdRatioBased`` ratio would sample every trace id below its bound). The
    budget is a token bucket of ``per_second`` tokens refilled at ``per_second`` a
    second: over any ``t`` seconds at most ``per_second * (t + 1)`` spans are sampled,
    however many records claim a sampled parent.
    """

    def __init__(
        self,
        ratio: float,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] | None = None,
    ) -> None:
        self._ratio = ratio
        self._per_second = per_second
        self._capacity = max(per_second, 1.0)
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()
        # Sampling, not secrecy: the producer cannot see this generator's draws.
        self._draw = draw or random.Random().random  # noqa: S311
        self._lock = threading.Lock()

    def should_sample(  # noqa: PLR0917 (OpenTelemetry's Sampler signature)
        self,
        parent_context: OtelContext | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Sample while the ratio draws it and the budget has a token; drop otherwise."""
        parent_state = trace.get_current_span(parent_context).get_span_context().trace_state
        if self._ratio < 1.0 and self._draw() >= self._ratio:
            return SamplingResult(Decision.DROP, None, parent_state)
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(self._capacity, self._tokens + elapsed * self._per_second)
            if self._tokens < 1.0:
                return SamplingResult(Decision.DROP, None, parent_state)
            self._tokens -= 1.0
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_state)

    def get_description(self) -> str:
        """The sampler and its limits, as OpenTelemetry describes samplers."""
        return f"RemoteParentBudget{{ratio={self._ratio}, per_second={self._per_second}}}"


def _exporter(all_settings: Settings) -> SpanExporter | None:
    settings = all_settings.telemetry
    if settings.exporter == "kafka":
        from streams.runtime.span_export import KafkaSpanExporter  # noqa: PLC0415 (imports the catalog)

        return KafkaSpanExporter(all_settings)
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    if settings.exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                "SLUICE_TELEMETRY__EXPORTER=otlp needs the OTLP exporter: "
                "pip install 'sluice[otlp]'"
            ) from exc
        exporter: SpanExporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)
        return exporter
    return None


def extract(headers: Sequence[tuple[str, bytes | None]] | None) -> OtelContext:
    """Trace context carried by a record's headers (empty context when none)."""
    return _PROPAGATOR.extract(headers or [], getter=GETTER)


def inject(headers: Headers, context: OtelContext | None = None) -> None:
    """Write the current (or given) span context into ``headers``."""
    _PROPAGATOR.inject(headers, context=context, setter=SETTER)


def trace_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> Headers:
    """Only the trace-context headers of a record, for copying them through unchanged."""
    return [(k, v) for k, v in (headers or ()) if k in TRACE_HEADERS and v is not None]


def span_context_headers(span: trace.Span) -> Headers:
    """Headers that make ``span`` the parent of whatever consumes the record."""
    headers: Headers = []
    inject(headers, trace.set_span_in_context(span))
    return headers


def kafka_attributes(
    *, operation: str, destination: str, group: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Span attributes of the OpenTelemetry messaging semantic conventions for Kafka."""
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.destination.name": destination,
    }
    if group:
        attributes["messaging.consumer.group.name"] = group
    attributes.update(extra)
    return attributes
