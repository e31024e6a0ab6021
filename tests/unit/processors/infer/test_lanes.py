"""infer's lanes: each instance serves its lane's models and skips the rest, before anything else.

The shipped catalog declares ``embeddings: [minilm]``; textgen and unknown models are
the default lane's. Every request must be owed exactly one thing (a result, an error
result, a dead letter) by exactly one lane, so each test runs the same records through
the lanes that matter and looks at what each produced.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from processors.infer.lanes import in_lane, model_peek
from processors.infer.processor import (
    PROCESSOR,
    REQUESTS,
    RESPONSES,
    InferResources,
    check_verdict,
)
from processors.infer.settings import InferSettings, group_of
from streams.errors import ConfigurationError
from streams.llm.model_catalog import DEFAULT_LANE, load_models
from streams.runtime.runner import Runner
from streams.runtime.signing import Verifier
from streams.runtime.spec import Headers, InputRecord
from streams.runtime.testing import BatchResult, Harness
from streams.settings import Settings
from tests.unit.processors.infer.test_harness import PUBLIC, Answers, Words, request, signed

EMBEDDINGS = "embeddings"


class CountingVerifier:
    """guard's verifier, counting the records it was asked about."""

    def __init__(self) -> None:
        self.inner = Verifier.from_settings([PUBLIC], "SLUICE_INFER__VERDICT_PUBLIC_KEYS")
        self.asked: list[bytes | None] = []

    def verify(self, topic: str, key: bytes | None, raw: bytes | None, headers: Headers) -> str:
        self.asked.append(key)
        return self.inner.verify(topic, key, raw, headers)


@dataclass
class Lane:
    harness: Harness[InferSettings, Any]
    backend: Answers
    verifier: CountingVerifier

    def run(self, records: list[InputRecord]) -> BatchResult:
        return self.harness.run(records)


def _lane(name: str) -> Iterator[Lane]:
    backend, verifier = Answers(), CountingVerifier()
    resources = InferResources(
        catalog=load_models(),
        counter=Words(),  # type: ignore[arg-type]
        backend=backend,  # type: ignore[arg-type]
        device="cpu",
        verifier=verifier,  # type: ignore[arg-type]
    )
    config = InferSettings(device="cpu", verdict_public_keys=[PUBLIC], lane=name)
    with Harness(PROCESSOR, settings=Settings(), config=config, resources=resources) as harness:
        yield Lane(harness, backend, verifier)


@pytest.fixture
def default() -> Iterator[Lane]:
    yield from _lane(DEFAULT_LANE)


@pytest.fixture
def embeddings() -> Iterator[Lane]:
    yield from _lane(EMBEDDINGS)


def _keys(out: BatchResult) -> list[str]:
    """Request ids with a result, then those dead-lettered, as the lane produced them."""
    results = [r["request_id"] for r in out.values(RESPONSES)]
    letters = [d.key.decode() for d in out.dead_letters if d.key is not None]
    return results + letters


# -- groups ---------------------------------------------------------------------------------
def test_each_lane_has_its_own_group_and_transactional_ids() -> None:
    assert group_of(InferSettings()) == "infer"  # the default lane keeps infer's group
    assert group_of(InferSettings(lane=EMBEDDINGS)) == "infer-embeddings"
    for lane, group in ((DEFAULT_LANE, "sluice.infer"), (EMBEDDINGS, "sluice.infer-embeddings")):
        runner = Runner(PROCESSOR, Settings(), config=InferSettings(lane=lane))
        # The runner's transactional ids are <group>.<instance>: a lane's are its own too.
        assert runner.group_id == group
    assert PROCESSOR.group_name(InferSettings(lane=EMBEDDINGS)) == "infer-embeddings"


def test_a_lane_name_that_cannot_name_a_group_is_refused_by_the_settings() -> None:
    with pytest.raises(ValidationError, match="lane"):
        InferSettings(lane="Fast Lane")


def test_an_undeclared_lane_is_refused_at_start_with_what_to_do() -> None:
    config = InferSettings(device="cpu", verdict_public_keys=[PUBLIC], lane="generation")
    expected = r"lane 'generation' is not declared.*SLUICE_INFER__LANE"
    with pytest.raises(ConfigurationError, match=expected):
        Harness(PROCESSOR, settings=Settings(), config=config)


# -- who serves what ----------------------------------------------------------------------------
def test_each_lane_serves_only_its_models_and_skips_the_rest(
    default: Lane, embeddings: Lane
) -> None:
    records = [
        signed(default.harness, request("e1", "minilm")),
        signed(default.harness, request("g1", "textgen")),
        signed(default.harness, request("e2", "minilm")),
    ]
    fast = embeddings.run(records)
    assert embeddings.backend.served == ["e1", "e2"]
    assert _keys(fast) == ["e1", "e2"] and not fast.dead_letters
    slow = default.run(records)
    assert default.backend.served == ["g1"]
    assert _keys(slow) == ["g1"] and not slow.dead_letters


def test_another_lanes_record_is_not_verdict_checked_so_it_is_dead_lettered_once(
    default: Lane, embeddings: Lane
) -> None:
    unsigned_embedding = default.harness.record(REQUESTS, request("bad-e", "minilm"), key="bad-e")
    unsigned_generation = default.harness.record(REQUESTS, request("bad-g", "textgen"), key="bad-g")
    records = [unsigned_embedding, unsigned_generation]
    fast, slow = embeddings.run(records), default.run(records)
    assert embeddings.verifier.asked == [b"bad-e"]
    assert default.verifier.asked == [b"bad-g"]
    assert (fast.kinds(), _keys(fast)) == (["UnverifiedVerdict"], ["bad-e"])
    assert (slow.kinds(), _keys(slow)) == (["UnverifiedVerdict"], ["bad-g"])
    assert not fast.values(RESPONSES) and not slow.values(RESPONSES)


def test_an_unknown_model_is_refused_by_the_default_lane_only(
    default: Lane, embeddings: Lane
) -> None:
    records = [
        signed(default.harness, request("u1", "gpt-9")),
        default.harness.record(REQUESTS, request("u2", "gpt-9"), key="u2"),  # unsigned
    ]
    fast = embeddings.run(records)
    assert not fast.produced and not fast.dead_letters and not embeddings.verifier.asked
    slow = default.run(records)
    assert slow.kinds() == ["UnknownModel", "UnverifiedVerdict"]
    [result] = slow.values(RESPONSES)
    assert (result["request_id"], result["error_code"]) == ("u1", "unknown_model")


@pytest.mark.parametrize("raw", [b"\x00\x00\x00\x00\x07garbage", b"not avro at all", b""])
def test_a_record_that_does_not_decode_is_dead_lettered_by_the_default_lane_only(
    default: Lane, embeddings: Lane, raw: bytes
) -> None:
    record = default.harness.record(REQUESTS, raw, key="junk")
    fast = embeddings.run([record])
    assert not fast.produced and not fast.dead_letters
    slow = default.run([record])
    assert len(slow.dead_letters) == 1 and slow.dead_letters[0].raw == raw
    assert not slow.values(RESPONSES)


def test_together_the_lanes_owe_every_request_exactly_one_thing(
    default: Lane, embeddings: Lane
) -> None:
    h = default.harness
    records = [
        signed(h, request("e-ok", "minilm")),
        signed(h, request("g-ok", "textgen")),
        signed(h, request("e-flag", "minilm", action="flag")),
        signed(h, request("e-block", "minilm", action="block")),
        signed(h, request("g-block", "textgen", action="block")),
        signed(h, request("unknown", "no-such-model")),
        h.record(REQUESTS, request("e-unsigned", "minilm"), key="e-unsigned"),
        h.record(REQUESTS, request("g-unsigned", "textgen"), key="g-unsigned"),
        signed(h, request("e-long", "minilm", text="word " * 300)),
        h.record(REQUESTS, b"junk", key="junk"),
    ]
    owed = Counter(_keys(embeddings.run(records)) + _keys(default.run(records)))
    # An error result and its dead letter are one refusal: count requests, not records.
    refused_with_result = {"unknown", "e-long"}
    expected = {r.key.decode(): 1 for r in records if r.key is not None}
    assert {k: n - (k in refused_with_result) for k, n in owed.items()} == expected


# -- reading the model name -------------------------------------------------------------------
def test_the_model_is_read_from_the_bytes_as_the_full_decode_reads_it(embeddings: Lane) -> None:
    h, peek = embeddings.harness, model_peek()
    for model in ("minilm", "textgen", "", "ünïcode-model", "x" * 300):
        value = request("r", model, text="a prompt " * 50) | {"user_id": "u-1"}
        raw = h.encode(REQUESTS, value)
        schema_id, writer = h.serde.check_writer(raw, topic=REQUESTS)
        assert peek.value_of(raw, schema_id, writer) == model


@pytest.mark.parametrize("cut", [5, 6, 8, 12])
def test_bytes_cut_before_the_model_name_make_the_record_the_default_lanes(
    default: Lane, embeddings: Lane, cut: int
) -> None:
    h = default.harness
    raw = h.encode(REQUESTS, request("r1", "minilm"))[:cut]  # request_id, tenant_id, model
    record = h.record(REQUESTS, raw, key="r1")
    assert model_peek().value_of(raw, *h.serde.check_writer(raw, topic=REQUESTS)) is None
    fast, slow = embeddings.run([record]), default.run([record])
    assert not fast.produced and not fast.dead_letters
    assert slow.kinds() == ["CorruptAvro"]


def test_a_body_corrupt_after_the_model_name_is_dead_lettered_by_the_models_lane(
    default: Lane, embeddings: Lane
) -> None:
    raw = default.harness.encode(REQUESTS, request("r1", "minilm"))
    record = default.harness.record(REQUESTS, raw + b"\x01trailing", key="r1")
    fast, slow = embeddings.run([record]), default.run([record])
    assert fast.kinds() == ["CorruptAvro"]
    assert not slow.produced and not slow.dead_letters


def test_a_writer_schema_without_a_plain_model_string_is_read_in_full_by_the_default_lane() -> None:
    peek = model_peek()
    union_first = {"fields": [{"name": "a", "type": ["null", "string"]}, {"name": "model"}]}
    no_model = {"fields": [{"name": "a", "type": "string"}]}
    union_model = {"fields": [{"name": "model", "type": ["null", "string"]}]}
    raw = b"\x00\x00\x00\x00\x01" + b"\x02a\x02b"
    for schema_id, writer in enumerate((union_first, no_model, union_model, "string")):
        assert peek.value_of(raw, schema_id, writer) is None


# -- the cost of skipping ------------------------------------------------------------------------
def test_skipping_another_lanes_record_costs_less_than_checking_its_verdict(
    embeddings: Lane,
) -> None:
    """A micro-benchmark: every lane reads every record, so a skip must stay cheap.

    The skip reads the framing and the model name (the prompt is never decoded); the
    verdict check that serving a record starts with is an Ed25519 verification.
    Measured in the same run, best of five, so a busy machine slows all alike.
    """
    h = embeddings.harness
    prompt = "Summarise this support ticket for the agent: " + "the printer is on fire " * 40
    records = [signed(h, request(f"g{i}", "textgen", text=prompt)) for i in range(500)]
    models, topics, serde = h.ctx.resources.catalog, h.catalog, h.serde
    verifier, peek = embeddings.verifier.inner, model_peek()

    def skip_all() -> None:
        for record in records:
            skipped = in_lane(
                record, lane=EMBEDDINGS, models=models, topics=topics, serde=serde, peek=peek
            )
            assert skipped == []

    def verify_all() -> None:
        for record in records:
            check_verdict(record, verifier)  # type: ignore[arg-type]

    def decode_all() -> None:
        for record in records:
            serde.decode(record.raw, topics.value_schema(REQUESTS), topic=REQUESTS)

    skip_s, verify_s = _best_of(5, skip_all), _best_of(5, verify_all)
    decode_s = _best_of(5, decode_all)
    per_record_us = {k: v / len(records) * 1e6 for k, v in (("skip", skip_s), ("decode", decode_s))}
    print(
        f"per record: skip {per_record_us['skip']:.1f} µs, full decode "
        f"{per_record_us['decode']:.1f} µs, verdict check {verify_s / len(records) * 1e6:.1f} µs"
    )
    assert skip_s < verify_s / 2, f"skipping costs {per_record_us['skip']:.1f} µs per record"
    assert skip_s < decode_s, "the skip must not decode the prompt"


def _best_of(runs: int, work: Any) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


class Span:
    """Records the attributes set on a record's span."""

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self.attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


def test_each_lanes_span_says_whether_it_served_or_skipped_the_request(
    embeddings: Lane,
) -> None:
    h = embeddings.harness
    served, skipped = Span(), Span()
    records = [
        dataclasses.replace(signed(h, request("e1", "minilm")), span=served),
        dataclasses.replace(signed(h, request("g1", "textgen")), span=skipped),
    ]
    embeddings.run(records)
    assert served.attributes["sluice.infer.lane"] == EMBEDDINGS
    assert served.attributes["sluice.infer.skipped"] is False
    assert skipped.attributes == {"sluice.infer.lane": EMBEDDINGS, "sluice.infer.skipped": True}
