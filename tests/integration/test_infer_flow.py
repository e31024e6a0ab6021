"""infer against the real Triton and Kafka: one result per request, true counts, real vectors."""

from __future__ import annotations

import dataclasses
import signal
from collections import Counter

import numpy as np
import pytest

from streams.contracts.records import InferenceRequest, InferenceResult
from streams.contracts.serde import AvroSerde
from streams.llm.model_catalog import load_models
from streams.llm.tokenizing import TokenCounter, search_paths
from streams.runtime import kafka
from streams.runtime.sealing import Keyring, sealed_key_id
from streams.settings import DeadLetterSettings, Settings
from streams.stack import Stack
from streams.stack.secrets import local_dead_letter_key
from tests.support.verdicts import SAFE, passed, signed_headers
from tests.support.world import (
    World,
    infer_groups,
    make_world,
    produce,
    read_all,
    reference,
    running,
    start_infer,
    stop_all,
    wait_for,
)

SENTENCES = [
    "Where is my parcel? It was due on Monday.",
    "The invoice shows VAT twice.",
    "Ünïcödé tëxt ☃ and emoji 🎉",
    "Reset my password please",
]


@pytest.fixture
def world(triton: Settings, tmp_path) -> World:
    return make_world(triton, tmp_path)


def send(world: World, requests: list[InferenceRequest], *, sign: bool = True) -> None:
    """Straight to the safe topic, as guard writes it: with a passing verdict, signed with
    the stack's key (these requests are clean by construction); ``sign=False``: as a
    producer that bypasses guard would."""
    encode = AvroSerde(kafka.registry(world.settings), world.catalog).encoder(SAFE)
    values = [encode((passed(r) if r.guard is None else r).to_avro()) for r in requests]
    keys = [r.request_id.encode() for r in requests]
    headers = [
        signed_headers(world.settings, SAFE, key, value) if sign else []
        for key, value in zip(keys, values, strict=True)
    ]
    produce(world.settings, world.topic(SAFE), values, keys, headers)


def results(world: World, expect: int, timeout: float = 300) -> dict[str, InferenceResult]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.schemas["sluice.v1.InferenceResult"]
    messages = read_all(world.settings, world.topic("inference.responses"), expect, timeout=timeout)
    decoded = [InferenceResult.from_avro(serde.decode(m.value(), schema)) for m in messages]
    counts = Counter(r.request_id for r in decoded)
    assert max(counts.values()) == 1, "a request got two results"
    return {r.request_id: r for r in decoded}


def test_mixed_models_one_result_each_with_true_counts(world: World, tmp_path):
    catalog = load_models()
    counter = TokenCounter(catalog.path.parent, search_paths(world.settings))
    embeds = [InferenceRequest.new("acme", "minilm", s) for s in SENTENCES * 10]
    gens = [
        InferenceRequest.new("globex", "textgen", s, max_tokens=n, temperature=0.0)
        for s, n in zip(SENTENCES, (1, 5, 9, 16), strict=True)
    ]
    unknown = InferenceRequest.new("acme", "gpt-9", "hello")
    too_long = InferenceRequest.new("acme", "minilm", "word " * 400)
    bad_tokens = InferenceRequest.new("acme", "textgen", "hi", max_tokens=100_000)
    everything = [*embeds, *gens, unknown, too_long, bad_tokens]
    send(world, everything)
    lanes = start_infer(world)  # minilm is the embeddings lane's, the rest the default's
    try:
        got = results(world, len(everything))
        dead = read_all(world.settings, world.topic("inference.requests.safe.dlq"), 3, settle=1)
    finally:
        stop_all(world)
    assert all(lane.returncode in (0, -signal.SIGTERM) for lane in lanes)
    assert set(got) == {r.request_id for r in everything}

    vectors = reference(SENTENCES)
    expected_counts = counter.count(catalog.get("minilm"), [r.input_text for r in embeds])
    for request, tokens in zip(embeds, expected_counts, strict=True):
        result = got[request.request_id]
        assert result.status == "ok", result.error_message
        assert result.input_tokens == tokens
        row = SENTENCES.index(request.input_text)
        assert np.allclose(result.embedding, vectors["embeddings"][row], atol=1e-4)
        assert result.operation == "embeddings" and result.model_version == "1"
        if result.cache_hit:  # a repeat of a sentence: answered without a Triton call
            assert (result.batch_size, result.inference_ms) == (0, 0.0)
            assert result.cached_input_tokens == result.input_tokens
        else:
            assert 1 <= result.batch_size <= 64
            assert result.e2e_ms >= result.inference_ms > 0
    # Each sentence was sent to Triton once at most; its nine repeats were cache hits.
    misses = [r for r in embeds if not got[r.request_id].cache_hit]
    assert len(misses) == len(SENTENCES)
    assert max(got[r.request_id].batch_size for r in embeds) > 1, "requests were batched"

    for request in gens:
        result = got[request.request_id]
        assert result.status == "ok", result.error_message
        assert result.output_tokens == request.max_tokens
        [tokens] = counter.count(catalog.get("textgen"), [request.input_text])
        assert result.input_tokens == tokens
        assert result.output_text and result.operation == "text_completion"

    for request, code in (
        (unknown, "unknown_model"),
        (too_long, "input_too_long"),
        (bad_tokens, "invalid_request"),
    ):
        result = got[request.request_id]
        assert (result.status, result.error_code) == ("error", code)
        assert result.error_message
    assert {m.key().decode() for m in dead} == {
        unknown.request_id,
        too_long.request_id,
        bad_tokens.request_id,
    }
    # Dead letters of prompts are encrypted with the key `sluice up` made (handed to infer
    # by `sluice run`), and open to the original bytes.
    [key] = local_dead_letter_key(world.settings).values()
    keys = Keyring.from_settings(DeadLetterSettings.model_validate({"encryption_key": key}))
    for message in dead:
        headers = message.headers() or []
        assert sealed_key_id(headers) is not None
        assert b"word word" not in message.value()
        original = keys.open(message.value(), headers)
        if message.key().decode() == too_long.request_id:
            assert b"word word" in original


@pytest.mark.slow
def test_triton_killed_and_restarted_mid_run(world: World):
    requests = [
        InferenceRequest.new("acme", "minilm", f"{s} #{i}") for i in range(150) for s in SENTENCES
    ]
    send(world, requests)
    start_infer(
        world,
        SLUICE_INFER__MAX_RECORDS_PER_POLL="64",
        SLUICE_RUNNER__RETRY_BACKOFF_MAX_S="2",
    )
    inputs = [world.topic("inference.requests.safe")]

    def lag() -> int:  # the embeddings lane's, as the default lane skips every request here
        return max(kafka.group_lag(world.settings, g, inputs) for g in infer_groups(world))

    stack = Stack(world.settings, only=["triton"])
    try:
        wait_for(
            lambda: lag() < len(requests) - 64,
            300,
            "infer to commit a first batch",
        )
        triton = stack.components[0].process
        pid = triton.pid()
        assert pid is not None
        triton.stop(timeout=0)  # SIGTERM then straight to SIGKILL: Triton dies mid-batch
        assert lag() > 0, "the kill must land mid-run"
        stack.up(print)  # back; the paused partitions drain
        got = results(world, len(requests), timeout=600)
    finally:
        stop_all(world)
        stack.up(print)
    assert set(got) == {r.request_id for r in requests}
    assert {r.status for r in got.values()} == {"ok"}, "an outage is retried, never an error"


def test_only_what_guard_signed_is_served(world: World):
    """A request written straight to .safe without guard's signature gets no result."""
    signed = InferenceRequest.new("acme", "minilm", SENTENCES[0])
    unsigned = InferenceRequest.new("acme", "minilm", SENTENCES[1])
    blocked = passed(InferenceRequest.new("acme", "minilm", SENTENCES[3]), action="block")
    send(world, [unsigned], sign=False)
    send(world, [blocked])
    # guard's signature over one request, on another request's bytes (the key kept).
    encode = AvroSerde(kafka.registry(world.settings), world.catalog).encoder(SAFE)
    forged = InferenceRequest.new("acme", "minilm", SENTENCES[2])
    original = encode(passed(forged).to_avro())
    changed = encode(passed(dataclasses.replace(forged, tenant_id="globex")).to_avro())
    key = forged.request_id.encode()
    produce(
        world.settings,
        world.topic(SAFE),
        [changed],
        [key],
        [signed_headers(world.settings, SAFE, key, original)],
    )
    send(world, [signed])
    with running(world, "infer"):
        # In order: by the signed request's result, the three before it are dead letters.
        got = results(world, 1)
        dead = read_all(world.settings, world.topic(f"{SAFE}.dlq"), 3, settle=3)
    assert set(got) == {signed.request_id} and got[signed.request_id].status == "ok"
    reasons = {
        m.key().decode(): (
            dict(m.headers() or [])["sluice.error.class"],
            dict(m.headers() or [])["sluice.error.message"].decode(),
        )
        for m in dead
    }
    assert reasons[unsigned.request_id][0] == b"UnverifiedVerdict"
    assert "no sluice.guard.signature header" in reasons[unsigned.request_id][1]
    assert "does not verify" in reasons[forged.request_id][1]
    assert "verdict is block" in reasons[blocked.request_id][1]
    assert len(dead) == 3
