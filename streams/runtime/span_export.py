"""An OpenTelemetry span exporter that writes finished spans to ``telemetry.spans``.

Traces travel the way the data does: through Kafka, in Avro, into ClickHouse
(the sink loads ``telemetry.spans`` into ``otel_traces``, the OpenTelemetry
Collector ClickHouse exporter's layout), so no collector is needed locally and
existing trace dashboards work. Telemetry must never stop a processor: spans
that cannot be exported are counted and dropped with a warning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from streams.contracts.catalog import catalog_for
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.settings import Settings

log = logging.getLogger(__name__)
TOPIC = "telemetry.spans"

_KINDS = {
    SpanKind.INTERNAL: "SPAN_KIND_INTERNAL",
    SpanKind.SERVER: "SPAN_KIND_SERVER",
    SpanKind.CLIENT: "SPAN_KIND_CLIENT",
    SpanKind.PRODUCER: "SPAN_KIND_PRODUCER",
    SpanKind.CONSUMER: "SPAN_KIND_CONSUMER",
}
_STATUS = {
    StatusCode.UNSET: "STATUS_CODE_UNSET",
    StatusCode.OK: "STATUS_CODE_OK",
    StatusCode.ERROR: "STATUS_CODE_ERROR",
}


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """The sluice.v1.Span Avro record of a finished span."""
    context = span.context
    parent = span.parent
    start = span.start_time or 0
    end = span.end_time or start
    resource = span.resource.attributes if span.resource else {}
    scope = span.instrumentation_scope
    return {
        "trace_id": f"{context.trace_id:032x}" if context else "",
        "span_id": f"{context.span_id:016x}" if context else "",
        "parent_span_id": f"{parent.span_id:016x}" if parent else "",
        "trace_state": context.trace_state.to_header() if context else "",
        "name": span.name,
        "kind": _KINDS.get(span.kind, "SPAN_KIND_UNSPECIFIED"),
        "service_name": str(resource.get("service.name", "")),
        "start_time_unix_nano": start,
        "duration_nano": max(0, end - start),
        "status_code": _STATUS.get(span.status.status_code, "STATUS_CODE_UNSET"),
        "status_message": span.status.description or "",
        "attributes": _strings(span.attributes),
        "resource_attributes": _strings(resource),
        "scope_name": scope.name if scope else "",
        "scope_version": (scope.version or "") if scope else "",
        "events": [
            {"time_unix_nano": e.timestamp, "name": e.name, "attributes": _strings(e.attributes)}
            for e in span.events
        ],
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "trace_state": link.context.trace_state.to_header(),
                "attributes": _strings(link.attributes),
            }
            for link in span.links
        ],
    }


def _strings(attributes: Any) -> dict[str, str]:
    if not attributes:
        return {}
    return {
        str(k): ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
        for k, v in attributes.items()
    }


class KafkaSpanExporter(SpanExporter):
    """Exports spans to ``telemetry.spans`` (Avro), with its own idempotent producer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._encode: Any = None
        self._producer: Any = None
        self._topic = ""
        self.dropped = 0

    def _ready(self) -> bool:
        if self._encode is not None:
            return True
        try:
            catalog = catalog_for(self.settings)
            self._encode = AvroSerde(kafka.registry(self.settings), catalog).encoder(TOPIC)
            self._topic = catalog.physical(TOPIC)
            self._producer = kafka.producer(self.settings, **{"linger.ms": 100})
        except Exception as exc:  # no topic or schema yet: telemetry waits, processing goes on
            log.warning("span export to %s is off: %s", TOPIC, exc)
            return False
        return True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode and produce a batch of finished spans (asynchronously)."""
        with self._lock:
            if not self._ready():
                self.dropped += len(spans)
                return SpanExportResult.FAILURE
            for span in spans:
                record = span_record(span)
                try:
                    self._producer.produce(
                        self._topic, value=self._encode(record), key=record["trace_id"]
                    )
                except BufferError:
                    self._producer.poll(0.1)
                    self.dropped += 1
                except Exception as exc:
                    log.warning("a span could not be exported: %s", exc)
                    self.dropped += 1
            self._producer.poll(0)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait for produced spans to be acknowledged."""
        if self._producer is None:
            return True
        return bool(self._producer.flush(timeout_millis / 1000) == 0)

    def shutdown(self) -> None:
        """Flush what is left, then let the producer go (it would keep its connections)."""
        self.force_flush()
        with self._lock:
            self._producer = None
            self._encode = None
