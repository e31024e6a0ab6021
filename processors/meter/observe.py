"""meter's metrics and spans: what the runner gives its processors, for a faust app.

Metrics: the runner's record counters (``processor="meter"``), tokens and cost
metered per model (tokens/s and cost/s are their rates), and the consumer lag
of meter's group, refreshed in the background from the broker (faust keeps no
lag gauge of its own). Spans: one per result priced, child of the result's
``traceparent``, with the GenAI usage attributes; its context goes into the
usage event's headers, so the sink's span for that event continues the trace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from decimal import Decimal

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from processors.meter.usage import Usage
from streams.runtime import kafka, metrics, tracing
from streams.settings import Settings

log = logging.getLogger("sluice.meter")

TOKENS = Counter(
    "sluice_meter_tokens_total", "Tokens metered, by model and type.", ["model", "type"]
)
COST = Counter(
    "sluice_meter_cost_usd_total",
    "Cost metered in USD, by model (a float for rates; exact sums are in ClickHouse).",
    ["model"],
)
DUPLICATES = Counter("sluice_meter_duplicates_total", "Usage events recognised as already counted.")

_tracer = trace.get_tracer("sluice.meter")


def count_usage(usage: Usage, known_models: Collection[str]) -> None:
    """Add one metered request to the token and cost counters.

    The ``model`` label is one of ``known_models`` (the price table's) or ``other``.
    """
    model = metrics.bounded_label(usage.model, known_models)
    fresh = usage.input_tokens - usage.cached_input_tokens
    TOKENS.labels(model, "input").inc(fresh)
    TOKENS.labels(model, "cached_input").inc(usage.cached_input_tokens)
    TOKENS.labels(model, "output").inc(usage.output_tokens)
    COST.labels(model).inc(float(usage.cost or Decimal(0)))


def price_span(
    headers: Sequence[tuple[str, bytes | None]] | None, topic: str, group: str, partition: int
) -> trace.Span:
    """The span of pricing one result, continuing the result's trace."""
    return _tracer.start_span(
        f"meter {topic}",
        context=tracing.extract(headers),
        kind=SpanKind.CONSUMER,
        attributes=tracing.kafka_attributes(
            operation="process",
            destination=topic,
            group=group,
            **{"messaging.destination.partition.id": str(partition), "sluice.processor": "meter"},
        ),
    )


def describe_usage(span: trace.Span, usage: Usage) -> None:
    """GenAI usage attributes on the span: model, tokens, cost; never text."""
    span.set_attributes(
        {
            "gen_ai.request.model": usage.model,
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "sluice.tenant_id": usage.tenant_id,
            "sluice.request_id": usage.request_id,
            "sluice.cost_usd": str(usage.cost),
        }
    )


def headers_of(span: trace.Span) -> list[tuple[str, bytes]]:
    """Trace-context headers carrying ``span`` to the next hop."""
    headers: list[tuple[str, bytes]] = []
    tracing.inject(headers, trace.set_span_in_context(span))
    return headers


class LagReporter:
    """Refreshes ``sluice_consumer_lag`` for meter's group every ``interval`` seconds."""

    def __init__(
        self, settings: Settings, group: str, topics: list[str], interval: float = 10.0
    ) -> None:
        self._settings, self._group, self._topics = settings, group, topics
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter-lag", daemon=True)

    def start(self) -> LagReporter:
        """Start reporting in a daemon thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop reporting."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                for topic in self._topics:
                    lag = kafka.group_lag(self._settings, self._group, [topic])
                    metrics.CONSUMER_LAG.labels("meter", topic, "all").set(lag)
            except Exception as exc:  # the broker may be restarting; report next time
                log.debug("meter lag not refreshed: %s", exc)
