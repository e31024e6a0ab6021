"""A producer's ``sampled`` flag is a request: a flood of them buys a bounded number of spans."""

from __future__ import annotations

import secrets
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision

from streams.runtime.tracing import RemoteParentBudget, extract, sampler
from streams.settings import TelemetrySettings


def sampled_traceparent(trace_id: int | None = None) -> list[tuple[str, bytes]]:
    """What a hostile producer writes: a fresh (or chosen) trace id, flag 01."""
    trace_hex = f"{trace_id:032x}" if trace_id is not None else secrets.token_hex(16)
    return [("traceparent", f"00-{trace_hex}-{secrets.token_hex(8)}-01".encode())]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def decide(budget: RemoteParentBudget, headers: list[tuple[str, bytes]]) -> bool:
    context = extract(headers)
    span_context = trace.get_current_span(context).get_span_context()
    result = budget.should_sample(context, span_context.trace_id, "process raw.t")
    return result.decision is Decision.RECORD_AND_SAMPLE


def test_a_flood_of_sampled_traceparents_is_bounded_by_the_budget():
    clock = Clock()
    budget = RemoteParentBudget(1.0, 50, clock=clock)
    sampled = 0
    for tick in range(10_000):  # 10,000 records over 10 simulated seconds
        clock.now = tick / 1000
        sampled += decide(budget, sampled_traceparent())
    assert sampled <= 50 * (10 + 1)
    assert sampled >= 50 * 10, "within the budget, every sampled parent is followed"


def test_the_budget_refills_over_time_and_never_saves_more_than_a_second():
    clock = Clock()
    budget = RemoteParentBudget(1.0, 10, clock=clock)
    assert sum(decide(budget, sampled_traceparent()) for _ in range(100)) == 10
    clock.now = 0.5
    assert sum(decide(budget, sampled_traceparent()) for _ in range(100)) == 5
    clock.now = 3600.0  # an idle hour buys one second's burst, no more
    assert sum(decide(budget, sampled_traceparent()) for _ in range(100)) == 10


def test_the_ratio_is_drawn_not_read_from_the_producers_trace_id():
    draws = iter([0.05, 0.5, 0.95, 0.05])
    budget = RemoteParentBudget(0.1, 1000, clock=Clock(), draw=lambda: next(draws))
    low_trace_id = sampled_traceparent(trace_id=1)  # TraceIdRatioBased would always sample it
    assert [decide(budget, low_trace_id) for _ in range(4)] == [True, False, False, True]


def test_the_decision_keeps_the_parents_trace_state():
    headers = [*sampled_traceparent(), ("tracestate", b"vendor=abc")]
    context = extract(headers)
    span_context = trace.get_current_span(context).get_span_context()
    budget = RemoteParentBudget(1.0, 1, clock=Clock())
    kept = budget.should_sample(context, span_context.trace_id, "x")
    dropped = budget.should_sample(context, span_context.trace_id, "x")
    assert kept.decision is Decision.RECORD_AND_SAMPLE
    assert dropped.decision is Decision.DROP
    assert kept.trace_state.get("vendor") == dropped.trace_state.get("vendor") == "abc"


@pytest.fixture
def traced():
    """A tracer provider with Sluice's sampler and an in-memory exporter."""

    def make(**settings: float) -> tuple[trace.Tracer, InMemorySpanExporter]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler(TelemetrySettings(**settings)))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider.get_tracer("test"), exporter

    return make


def test_spans_per_record_under_a_hostile_flood_are_bounded_by_the_setting(traced):
    tracer, exporter = traced(remote_spans_per_second=100)
    started = time.monotonic()
    for _ in range(5000):
        parent = extract(sampled_traceparent())
        with (
            tracer.start_as_current_span("process raw.t", context=parent),
            tracer.start_as_current_span("child"),  # a child follows its parent
        ):
            pass
    elapsed = time.monotonic() - started
    spans = exporter.get_finished_spans()
    records = [s for s in spans if s.name == "process raw.t"]
    assert 100 <= len(records) <= 100 * (elapsed + 1)
    assert len(spans) == 2 * len(records), "children of recorded spans are recorded"


def test_unsampled_parents_get_no_span_and_sluices_own_traces_follow_the_root_ratio(traced):
    tracer, exporter = traced(remote_spans_per_second=1, root_sample_ratio=1.0)
    unsampled = [("traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00".encode())]
    for _ in range(10):
        with tracer.start_as_current_span("remote unsampled", context=extract(unsampled)):
            pass
        with tracer.start_as_current_span("batch"):  # a root: not counted in the budget
            pass
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("remote unsampled") == 0
    assert names.count("batch") == 10


def test_the_remote_ratio_zero_follows_no_producer(traced):
    tracer, exporter = traced(remote_sample_ratio=0.0)
    for _ in range(100):
        with tracer.start_as_current_span("process", context=extract(sampled_traceparent())):
            pass
    assert exporter.get_finished_spans() == ()


def test_defaults_follow_sluices_own_producers_within_a_generous_budget():
    settings = TelemetrySettings()
    assert settings.remote_sample_ratio == 1.0
    assert settings.remote_spans_per_second == 1000.0
    description = sampler(settings).get_description()
    assert "RemoteParentBudget{ratio=1.0, per_second=1000.0}" in description
