"""infer's pure half: routing, limits, micro-batches, and the results it builds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processors.infer.planning import (
    INPUT_TOO_LONG,
    INVALID_REQUEST,
    UNKNOWN_MODEL,
    Completion,
    Job,
    Refusal,
    error_result,
    micro_batches,
    plan,
    result_of,
)
from streams.contracts.records import GuardVerdict, InferenceRequest
from streams.llm.model_catalog import load_models

CATALOG = load_models()
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def words(_model, texts):  # a stand-in tokenizer: [CLS] + words + [SEP]
    return [len(t.split()) + 2 for t in texts]


def request(model: str, text: str = "hello world", **kw) -> InferenceRequest:
    return InferenceRequest("r-" + text[:8], "acme", model, text, T0, **kw)


def test_routing_and_limits():
    planned = plan(
        [
            (request("minilm"), 0),
            (request("gpt-9"), 0),
            (request("minilm", "word " * 300), 0),
            (request("textgen", max_tokens=10_000), 0),
            (request("textgen", temperature=3.0), 0),
            (request("textgen"), 0),
        ],
        CATALOG,
        words,
    )
    kinds = [p.code if isinstance(p, Refusal) else "job" for p in planned]
    assert kinds == ["job", UNKNOWN_MODEL, INPUT_TOO_LONG, INVALID_REQUEST, INVALID_REQUEST, "job"]
    assert [p.index for p in planned] == list(range(6))
    too_long = planned[2]
    assert "302 tokens" in too_long.message and "256" in too_long.message
    assert "known: minilm, textgen" in planned[1].message
    textgen = planned[5]
    assert isinstance(textgen, Job)
    assert textgen.max_tokens == CATALOG.get("textgen").default_max_tokens
    assert textgen.input_tokens == 4


def test_micro_batches_follow_the_model():
    jobs = [Job(i, request("minilm"), CATALOG.get("minilm"), 4, None, 0) for i in range(150)]
    jobs += [Job(200 + i, request("textgen"), CATALOG.get("textgen"), 4, 8, 0) for i in range(3)]
    sizes = [len(b) for b in micro_batches(jobs)]
    assert sizes == [64, 64, 22, 1, 1, 1], "minilm by 64, vLLM-style generation one by one"
    assert [len(b) for b in micro_batches(jobs[:150], 32)][:2] == [32, 32]
    assert max(len(b) for b in micro_batches(jobs[:150], 1000)) == 64, "never above the model"


def test_ok_result_carries_times_tokens_and_guard():
    verdict = GuardVerdict("p1", "pass", False, T0)
    req = request("minilm", guard=verdict, metadata={"feature": "search"})
    job = Job(0, req, CATALOG.get("minilm"), 4, None, arrived_ms=int(T0.timestamp() * 1000) + 100)
    done = Completion(
        embedding=[0.1] * 384,
        started_ms=T0.timestamp() * 1000 + 350,
        inference_ms=42.0,
        batch_size=17,
    )
    result = result_of(job, done, version="1", device="cpu", now=T0 + timedelta(milliseconds=500))
    assert result.status == "ok"
    assert result.queue_ms == pytest.approx(250)
    assert result.e2e_ms == pytest.approx(500)
    assert (result.inference_ms, result.batch_size, result.device) == (42.0, 17, "cpu")
    assert result.input_tokens == 4 and result.output_tokens == 0
    assert result.operation == "embeddings"
    assert result.input_guard == verdict
    assert result.metadata == {"feature": "search"}


def test_error_result():
    result = error_result(request("gpt-9"), UNKNOWN_MODEL, "no such model", now=T0)
    assert (result.status, result.error_code, result.error_message) == (
        "error",
        UNKNOWN_MODEL,
        "no such model",
    )
    assert result.embedding is None and result.output_text is None
