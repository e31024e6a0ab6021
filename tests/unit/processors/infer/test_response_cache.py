"""infer's response cache: what is cached, under which key, how it is bounded, what a hit is."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from processors.infer.planning import Completion, Job
from processors.infer.processor import PROCESSOR, RESPONSES, InferResources
from processors.infer.response_cache import (
    FLOAT_BYTES,
    ResponseCache,
    cache_key,
    payload_bytes,
)
from processors.infer.settings import InferSettings
from processors.infer.triton_calls import BackendRejectedError
from streams.contracts.records import InferenceRequest
from streams.llm.model_catalog import load_models
from streams.runtime.signing import Verifier
from streams.runtime.testing import Harness
from streams.settings import Settings
from tests.unit.processors.infer.test_harness import PUBLIC, Words, request, signed

CATALOG = load_models()
CREATED = datetime(2026, 3, 5, 12, tzinfo=UTC)


def job(
    text: str = "hello",
    *,
    tenant: str = "acme",
    model: str = "minilm",
    temperature: float | None = None,
    max_tokens: int | None = None,
    index: int = 0,
) -> Job:
    spec = CATALOG.get(model)
    req = InferenceRequest(
        request_id=f"r{index}",
        tenant_id=tenant,
        model=model,
        input_text=text,
        created_at=CREATED,
        temperature=temperature,
        max_tokens=max_tokens,
    )
    limit = None if spec.task == "embeddings" else (max_tokens or spec.default_max_tokens)
    return Job(index, req, spec, len(text.split()), limit, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the key -------------------------------------------------------------------------------
def test_the_key_is_stable_and_covers_every_field_that_changes_the_answer() -> None:
    base = cache_key(job(), "1")
    assert base is not None and len(base) == 64
    assert cache_key(job(), "1") == base  # same request, another time: same key
    assert cache_key(job(index=7), "1") == base  # the request id is not part of it
    changed = [
        cache_key(job(tenant="globex"), "1"),
        cache_key(job("hello!"), "1"),
        cache_key(job(), "2"),
        cache_key(job(model="textgen", temperature=0.0), "1"),
        cache_key(job(model="textgen", temperature=0.0, max_tokens=5), "1"),
    ]
    assert len({base, *changed}) == 1 + len(changed)


def test_fields_are_delimited_so_shifted_text_does_not_collide() -> None:
    assert cache_key(job("b", tenant="a"), "1") != cache_key(job("", tenant="ab"), "1")


def test_only_deterministic_requests_are_cacheable() -> None:
    assert cache_key(job(model="textgen", temperature=0.0), "1") is not None
    assert cache_key(job(model="textgen", temperature=0.7), "1") is None
    # No temperature: the model's default, which may sample.
    assert cache_key(job(model="textgen"), "1") is None


# -- bounds --------------------------------------------------------------------------------
def fill(cache: ResponseCache, key: str, done: Completion) -> None:
    cache.put(key, "minilm", done)
    cache.commit()


def test_least_recently_used_entries_go_first_past_the_entry_bound() -> None:
    cache = ResponseCache(max_entries=2, max_bytes=10_000, ttl_s=60)
    fill(cache, "a", Completion(embedding=[1.0]))
    fill(cache, "b", Completion(embedding=[2.0]))
    assert cache.get("a") is not None  # a is now the most recently used
    fill(cache, "c", Completion(embedding=[3.0]))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2


def test_the_byte_bound_counts_text_and_embedding_values() -> None:
    text = Completion(output_text="héllo")  # 6 bytes in UTF-8
    vector = Completion(embedding=[0.0] * 10)
    assert payload_bytes(text) == 6 and payload_bytes(vector) == 10 * FLOAT_BYTES
    cache = ResponseCache(max_entries=100, max_bytes=100, ttl_s=60)
    fill(cache, "v1", vector)
    fill(cache, "t", text)
    assert cache.bytes == 86
    fill(cache, "v2", vector)  # 166 bytes: the oldest goes until it fits
    assert cache.get("v1") is None and cache.get("t") is not None
    assert cache.bytes == 86
    fill(cache, "huge", Completion(embedding=[0.0] * 13))  # larger than the cache: not kept
    assert cache.get("huge") is None and cache.bytes == 86


def test_an_entry_expires_after_its_ttl() -> None:
    clock = Clock()
    cache = ResponseCache(max_entries=10, max_bytes=1000, ttl_s=30, clock=clock)
    fill(cache, "k", Completion(embedding=[1.0]))
    clock.now += 29.9
    assert cache.get("k") is not None
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0 and cache.bytes == 0


def test_answers_are_seen_only_after_their_batch_commits() -> None:
    cache = ResponseCache(max_entries=10, max_bytes=1000, ttl_s=30)
    cache.put("k", "minilm", Completion(embedding=[1.0]))
    assert cache.get("k") is None
    cache.rollback()
    cache.commit()
    assert cache.get("k") is None  # an aborted batch's answers are gone
    fill(cache, "k", Completion(embedding=[1.0]))
    assert cache.get("k") is not None


@pytest.mark.parametrize("settings", [(0, 1000, 30), (10, 0, 30), (10, 1000, 0)])
def test_zero_disables_the_cache(settings: tuple[int, int, float]) -> None:
    cache = ResponseCache(*settings)
    lookup = cache.lookup([job(index=0), job(index=1)], {"minilm": "1"})
    assert [j.index for j in lookup.to_send] == [0, 1]  # even a repeat is sent


# -- through infer ------------------------------------------------------------------------
class Embedder:
    """A stand-in Triton: a vector from the text, and a record of what it was sent."""

    url = "stand-in:8001"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.reject: set[str] = set()

    def run(
        self, batches: Sequence[list[Job]], _streams: object = None
    ) -> dict[int, Completion | BackendRejectedError]:
        done: dict[int, Completion | BackendRejectedError] = {}
        for batch in batches:
            for j in batch:
                self.sent.append(j.request.request_id)
                if j.request.input_text in self.reject:
                    done[j.index] = BackendRejectedError("refused")
                    continue
                vector = [float(len(j.request.input_text)), 0.25, -1.5]
                done[j.index] = Completion(
                    embedding=vector, started_ms=1.0, inference_ms=7.0, batch_size=len(batch)
                )
        return done

    def model_version(self, _model: str) -> str:
        return "3"

    def close(self) -> None:
        pass


@pytest.fixture
def served() -> Iterator[tuple[Harness[InferSettings, Any], Embedder]]:
    backend = Embedder()
    resources = InferResources(
        catalog=CATALOG,
        counter=Words(),  # type: ignore[arg-type]
        backend=backend,  # type: ignore[arg-type]
        device="cpu",
        verifier=Verifier.from_settings([PUBLIC], "SLUICE_INFER__VERDICT_PUBLIC_KEYS"),
        cache=ResponseCache(max_entries=100, max_bytes=100_000, ttl_s=60),
    )
    config = InferSettings(device="cpu", verdict_public_keys=[PUBLIC], lane="embeddings")
    with Harness(PROCESSOR, settings=Settings(), config=config, resources=resources) as harness:
        yield harness, backend


def embed(request_id: str, text: str, tenant: str = "acme") -> dict[str, Any]:
    return request(request_id, "minilm", text) | {"tenant_id": tenant}


def test_a_repeat_after_a_committed_batch_is_a_hit_without_a_triton_call(
    served: tuple[Harness[InferSettings, Any], Embedder],
) -> None:
    harness, backend = served
    [first] = harness.run([signed(harness, embed("r1", "two words"))]).values(RESPONSES)
    [again] = harness.run([signed(harness, embed("r2", "two words"))]).values(RESPONSES)
    assert backend.sent == ["r1"]
    assert first["cache_hit"] is False and first["cached_input_tokens"] == 0
    assert first["batch_size"] == 1 and first["inference_ms"] == 7.0
    assert again["request_id"] == "r2" and again["cache_hit"] is True
    assert again["embedding"] == first["embedding"]
    assert again["model_version"] == "3"
    assert (again["input_tokens"], again["output_tokens"]) == (2, 0)
    assert again["cached_input_tokens"] == again["input_tokens"] == first["input_tokens"]
    assert (again["inference_ms"], again["batch_size"]) == (0.0, 0)


def test_another_tenants_identical_request_is_never_served_from_the_cache(
    served: tuple[Harness[InferSettings, Any], Embedder],
) -> None:
    harness, backend = served
    harness.run([signed(harness, embed("r1", "same text"))])
    [other] = harness.run([signed(harness, embed("r2", "same text", "globex"))]).values(RESPONSES)
    assert backend.sent == ["r1", "r2"] and other["cache_hit"] is False


def test_repeats_within_one_batch_wait_for_the_first(
    served: tuple[Harness[InferSettings, Any], Embedder],
) -> None:
    harness, backend = served
    backend.reject.add("bad text")
    records = [
        signed(harness, embed("a1", "text a")),
        signed(harness, embed("a2", "text a")),
        signed(harness, embed("b1", "bad text")),
        signed(harness, embed("b2", "bad text")),
    ]
    out = harness.run(records)
    assert backend.sent == ["a1", "b1"]
    by_id = {r["request_id"]: r for r in out.values(RESPONSES)}
    assert (by_id["a1"]["cache_hit"], by_id["a2"]["cache_hit"]) == (False, True)
    assert by_id["a2"]["embedding"] == by_id["a1"]["embedding"]
    # The first was refused: so is its repeat, and neither is a hit.
    assert by_id["b1"]["status"] == by_id["b2"]["status"] == "error"
    assert not by_id["b2"]["cache_hit"]
    assert out.kinds() == ["BackendRejected", "BackendRejected"]


def test_an_aborted_batch_fills_nothing(
    served: tuple[Harness[InferSettings, Any], Embedder],
) -> None:
    harness, backend = served
    harness.run_aborted([signed(harness, embed("r1", "aborted text"))])
    harness.abort()
    [retry] = harness.run([signed(harness, embed("r1", "aborted text"))]).values(RESPONSES)
    assert backend.sent == ["r1", "r1"] and retry["cache_hit"] is False
