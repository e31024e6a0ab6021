"""One request, one trace: SDK → guard → infer (with the Triton call) → guard(output),
exported to telemetry.spans; span attributes carry no personal data."""

from __future__ import annotations

from collections import defaultdict

import pytest

from streams import kafka
from streams.client import SluiceClient
from streams.records import InferenceRequest
from streams.serde import AvroSerde
from streams.settings import Settings, TelemetrySettings
from tests.integration.helpers import World, make_world, read_all, running_all

EMAIL = "maria.garcia@example.com"
TRACED = {"SLUICE_TELEMETRY__EXPORTER": "kafka", "SLUICE_TELEMETRY__ROOT_SAMPLE_RATIO": "1.0"}
GUARD = {"SLUICE_GUARD__HASH_SECRET": "trace-test-secret-0123456789abcdef"}


@pytest.fixture
def world(triton: Settings, tmp_path) -> World:
    return make_world(triton, tmp_path)


def spans_by_trace(world: World, expect: int) -> dict[str, list[dict]]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.schemas["sluice.v1.Span"]
    traces: dict[str, list[dict]] = defaultdict(list)
    for message in read_all(world.settings, world.topic("telemetry.spans"), expect, settle=3):
        span = serde.decode(message.value(), schema)
        traces[span["trace_id"]].append(span)
        assert EMAIL.encode() not in message.value(), "personal data in a span"
    return traces


def test_one_request_one_connected_trace(world: World):
    traced = world.settings.model_copy(update={"telemetry": TelemetrySettings(exporter="kafka")})
    request = InferenceRequest.new(
        "globex", "textgen", f"Please reply to {EMAIL} today", max_tokens=4, temperature=0.0
    )
    with running_all(world, ["guard", "infer"], **TRACED, **GUARD):
        with SluiceClient(traced, world.catalog, source="trace-test") as client:
            client.send_request(request)
        read_all(world.settings, world.topic("inference.results"), 1, timeout=300, settle=0.5)
        # Spans are exported in batches (every 5 s by default) and at shutdown.
    traces = spans_by_trace(world, 5)
    [trace] = [
        spans
        for spans in traces.values()
        if any(s["attributes"].get("sluice.request_id") == request.request_id for s in spans)
    ]
    services = {s["service_name"] for s in trace}
    assert {"sluice-sdk", "sluice-guard", "sluice-infer"} <= services
    by_id = {s["span_id"]: s for s in trace}
    roots = [s for s in trace if not s["parent_span_id"]]
    assert len(roots) == 1 and roots[0]["service_name"] == "sluice-sdk"
    for span in trace:
        if span["parent_span_id"]:
            assert span["parent_span_id"] in by_id, f"{span['name']} hangs off the trace"
    triton_call = next(s for s in trace if s["kind"] == "SPAN_KIND_CLIENT")
    assert triton_call["name"] == "text_completion textgen"
    assert by_id[triton_call["parent_span_id"]]["service_name"] == "sluice-infer"
    infer_span = by_id[triton_call["parent_span_id"]]
    attrs = infer_span["attributes"]
    assert attrs["gen_ai.request.model"] == "textgen"
    assert attrs["gen_ai.operation.name"] == "text_completion"
    assert int(attrs["gen_ai.usage.output_tokens"]) == 4
    assert int(attrs["gen_ai.usage.input_tokens"]) > 0
    assert attrs["messaging.system"] == "kafka"
    assert attrs["messaging.consumer.group.name"].endswith(".infer")
    guard_spans = [s for s in trace if s["service_name"] == "sluice-guard"]
    assert {s["attributes"]["sluice.guard.field"] for s in guard_spans} == {
        "input_text",
        "output_text",
    }, "guard's input and output passes are both in the trace"
    assert any(s["attributes"]["sluice.guard.entities"] == "EMAIL_ADDRESS:1" for s in guard_spans)
