"""OpenTelemetry tracing over Kafka headers (W3C ``traceparent``/``tracestate``).

The producer of a request starts its trace and writes ``traceparent`` into the
record's headers. Each processor continues it: one span per input record
(child of the record's context) whose context goes into the headers of every
output of that record, plus one span per batch that links to them. With the
parent-based sampler a record from an unsampled trace costs a non-recording
span only, and with the exporter ``none`` the runner copies the header through
without creating spans at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
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
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from streams.runtime.spec import Headers
from streams.settings import Settings

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
        sampler=ParentBased(TraceIdRatioBased(settings.telemetry.root_sample_ratio)),
    )
    for processor in processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


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
