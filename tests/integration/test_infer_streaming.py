"""infer streams generations on the real stack: textgen's deltas on inference.chunks.raw.

A request with ``stream: true`` for a model with the ``stream`` input (textgen) has its
deltas produced as InferenceChunk records while Triton generates; its result on
inference.responses is the one it would get unstreamed, and the chunks concatenate to
it. Requests that are not streamed, and streamed requests for a model without the
input (minilm), produce no chunk.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from typing import Any

import pytest

from processors.infer.chunks import CHUNKS
from streams.contracts.records import InferenceChunk, InferenceRequest, InferenceResult
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.settings import Settings
from tests.support.verdicts import SAFE, passed, signed_headers
from tests.support.world import World, make_world, produce, read_all, start_infer, stop_all

PROMPT = "Where is my parcel? It was due on Monday."


@pytest.fixture
def world(triton: Settings, tmp_path: Any) -> World:
    return make_world(triton, tmp_path)


def send(world: World, requests: list[InferenceRequest]) -> None:
    """Straight to the safe topic, as guard writes it: passed and signed with the stack's key."""
    encode = AvroSerde(kafka.registry(world.settings), world.catalog).encoder(SAFE)
    values = [encode(passed(r).to_avro()) for r in requests]
    keys = [r.request_id.encode() for r in requests]
    headers = [
        signed_headers(world.settings, SAFE, k, v) for k, v in zip(keys, values, strict=True)
    ]
    produce(world.settings, world.topic(SAFE), values, keys, headers)


def results(world: World, expect: int) -> dict[str, InferenceResult]:
    """Every result on the world's inference.responses, by request id (one each)."""
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.schemas["sluice.v1.InferenceResult"]
    messages = read_all(world.settings, world.topic("inference.responses"), expect, timeout=300)
    decoded = [InferenceResult.from_avro(serde.decode(m.value(), schema)) for m in messages]
    assert len({r.request_id for r in decoded}) == len(decoded), "a request got two results"
    return {r.request_id: r for r in decoded}


def chunks_of(world: World, expect: int) -> dict[str, list[InferenceChunk]]:
    """Every chunk on the world's inference.chunks.raw, by request id, in topic order."""
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.schemas["sluice.v1.InferenceChunk"]
    messages = read_all(world.settings, world.topic(CHUNKS), expect, settle=5)
    by_request: dict[str, list[InferenceChunk]] = defaultdict(list)
    for message in messages:
        chunk = InferenceChunk.from_avro(serde.decode(message.value(), schema))
        assert message.key() == chunk.request_id.encode(), "chunks are keyed by request id"
        by_request[chunk.request_id].append(chunk)
    return by_request


def test_streamed_requests_get_contiguous_chunks_that_concatenate_to_their_result(
    world: World,
) -> None:
    streamed = [
        InferenceRequest.new(
            "acme", "textgen", PROMPT, max_tokens=24, temperature=0.0, stream=True
        ),
        InferenceRequest.new("globex", "textgen", "Reset my password", max_tokens=1, stream=True),
    ]
    # The same prompt unstreamed: greedy decoding, so the same text is owed.
    whole = InferenceRequest.new("acme", "textgen", PROMPT, max_tokens=24, temperature=0.0)
    # minilm has no `stream` input: answered whole, no chunk.
    embedded = InferenceRequest.new("acme", "minilm", PROMPT, stream=True)
    everything = [*streamed, whole, embedded]
    send(world, everything)
    # The cache off: `whole` repeats streamed[0] (same tenant, prompt, greedy), and an
    # answer from infer's response cache would have no deltas to compare.
    lanes = start_infer(world, SLUICE_INFER__CACHE_MAX_ENTRIES="0")
    try:
        got: dict[str, InferenceResult] = results(world, len(everything))
        # At least a delta and the final chunk for each streamed request.
        chunks = chunks_of(world, expect=2 * len(streamed))
    finally:
        stop_all(world)
    assert all(lane.returncode in (0, -signal.SIGTERM) for lane in lanes)
    assert all(r.status == "ok" for r in got.values()), [r.error_message for r in got.values()]

    assert set(chunks) == {r.request_id for r in streamed}, "only streamed textgen requests"
    for request in streamed:
        result, stream = got[request.request_id], chunks[request.request_id]
        assert {c.attempt for c in stream} == {stream[0].attempt}, "one attempt, no crash"
        assert [c.seq for c in stream] == list(range(len(stream)))
        assert [c.final for c in stream] == [False] * (len(stream) - 1) + [True]
        final = stream[-1]
        assert (final.text, final.finish_reason) == ("", "length")  # textgen has no end token
        assert all(c.text for c in stream[:-1]), "no empty deltas"
        assert "".join(c.text for c in stream) == result.output_text
        assert {(c.tenant_id, c.model) for c in stream} == {(request.tenant_id, "textgen")}
        assert result.output_tokens == request.max_tokens
    # Streaming changes nothing in the result.
    assert got[streamed[0].request_id].output_text == got[whole.request_id].output_text
    assert len(chunks[streamed[0].request_id]) > 2, "24 tokens come as several deltas"
