"""infer run in process through the runner's real batch path.

Requests infer refuses before calling Triton (an unknown model, a request its model
cannot serve) need no server: each gets an error result and a dead letter. Requests
guard did not sign get neither a result nor a call. The served path is tested against
a real Triton in tests/integration/test_infer_flow.py; here a stand-in answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from processors.infer.chunks import CHUNKS, ChunkPublisher
from processors.infer.planning import Completion, Job
from processors.infer.processor import PROCESSOR, REQUESTS, RESPONSES, InferResources
from processors.infer.settings import InferSettings
from processors.infer.triton_calls import GenerationStream
from streams.errors import ConfigurationError
from streams.llm.model_catalog import ModelSpec, load_models
from streams.runtime.signing import Verifier, new_keypair
from streams.runtime.spec import InputRecord
from streams.runtime.testing import Harness
from streams.settings import Settings
from tests.support.verdicts import SAFE, signed_with, unit_keypair

PRIVATE, PUBLIC = unit_keypair()
OTHER_PRIVATE, _ = new_keypair()  # a key infer does not know


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness[InferSettings, Any]]:
    config = InferSettings(device="cpu", verdict_public_keys=[PUBLIC])
    with Harness(PROCESSOR, settings=Settings(), config=config) as harness:
        yield harness


def request(
    request_id: str, model: str, text: str | None = None, action: str | None = "pass"
) -> dict[str, Any]:
    """A request as guard passes it; its text, unless given, is its own (no cache hits)."""
    verdict = (
        None
        if action is None
        else {
            "policy_version": "1",
            "action": action,
            "redacted": False,
            "checked_at": 1_700_000_000_500,
        }
    )
    return {
        "request_id": request_id,
        "tenant_id": "acme",
        "model": model,
        "input_text": f"hello {request_id}" if text is None else text,
        "created_at": 1_700_000_000_000,
        "guard": verdict,
    }


def signed(
    harness: Harness[InferSettings, Any],
    value: dict[str, Any],
    *,
    private: str = PRIVATE,
    key: str | None = None,
) -> InputRecord:
    """A record as guard writes it: signed over its bytes, key and topic."""
    raw = harness.encode(REQUESTS, value)
    key = value["request_id"] if key is None else key
    return harness.record(REQUESTS, raw, key=key, headers=signed_with(private, SAFE, key, raw))


def test_an_unknown_model_gets_an_error_result_and_a_dead_letter(
    harness: Harness[InferSettings, Any],
) -> None:
    records = [signed(harness, request("r1", "no-such-model"))]
    out = harness.run(records)
    assert out.kinds() == ["UnknownModel"]
    letter = out.dead_letters[0]
    assert letter.raw == records[0].raw and letter.topic == "inference.requests.safe.dlq"
    # The model field is the producer's free text: named by the catalog, else "other".
    assert letter.info.details["model"] == "other"
    assert "no-such-model" not in letter.info.message
    [result] = out.values(RESPONSES)
    assert (result["request_id"], result["status"], result["error_code"]) == (
        "r1",
        "error",
        "unknown_model",
    )


def test_settings_reach_the_resources_once(harness: Harness[InferSettings, Any]) -> None:
    assert harness.ctx.resources.device == "cpu"
    assert harness.ctx.config.max_records_per_poll == 512
    assert PROCESSOR.batching is not None
    assert PROCESSOR.batching(harness.ctx.config) == (512, 5)


class Words:
    """A stand-in tokenizer: a token per word."""

    def count(self, _model: ModelSpec, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]


class Answers:
    """A stand-in Triton that embeds every request, and remembers whom it served."""

    url = "stand-in:8001"

    def __init__(self) -> None:
        self.served: list[str] = []

    def run(self, batches: Sequence[list[Job]], _streams: object = None) -> dict[int, Completion]:
        done = {}
        for batch in batches:
            for job in batch:
                self.served.append(job.request.request_id)
                done[job.index] = Completion(embedding=[0.5] * 4, batch_size=len(batch))
        return done

    def model_version(self, _model: str) -> str:
        return "1"

    def close(self) -> None:
        pass


@pytest.fixture
def served() -> Iterator[tuple[Harness[InferSettings, Any], Answers]]:
    backend = Answers()
    resources = InferResources(
        catalog=load_models(),
        counter=Words(),  # type: ignore[arg-type]
        backend=backend,  # type: ignore[arg-type]
        device="cpu",
        verifier=Verifier.from_settings([PUBLIC], "SLUICE_INFER__VERDICT_PUBLIC_KEYS"),
    )
    # minilm is the embeddings lane's (infra/triton/models.yaml): tests/.../test_lanes.py.
    config = InferSettings(device="cpu", verdict_public_keys=[PUBLIC], lane="embeddings")
    with Harness(PROCESSOR, settings=Settings(), config=config, resources=resources) as harness:
        yield harness, backend


def test_only_what_guard_signed_and_passed_reaches_the_model(
    served: tuple[Harness[InferSettings, Any], Answers],
) -> None:
    harness, backend = served
    ok = signed(harness, request("ok", "minilm"))
    flagged = signed(harness, request("flagged", "minilm", action="flag"))
    unsigned = harness.record(REQUESTS, request("unsigned", "minilm"), key="unsigned")
    other_key = signed(harness, request("other-key", "minilm"), private=OTHER_PRIVATE)
    blocked = signed(harness, request("blocked", "minilm", action="block"))
    no_verdict = signed(harness, request("no-verdict", "minilm", action=None))
    # guard's signature over one request, put on another request's bytes.
    tampered_raw = harness.encode(REQUESTS, request("tampered", "minilm", text="other words"))
    tampered = harness.record(REQUESTS, tampered_raw, key="tampered", headers=ok.headers)
    rekeyed = signed(harness, request("rekeyed", "minilm"), key="rekeyed")
    rekeyed = harness.record(REQUESTS, rekeyed.raw, key="someone-else", headers=rekeyed.headers)
    out = harness.run([ok, unsigned, other_key, flagged, blocked, no_verdict, tampered, rekeyed])
    assert backend.served == ["ok", "flagged"]
    assert [r["request_id"] for r in out.values(RESPONSES)] == ["ok", "flagged"]
    assert all(r["status"] == "ok" for r in out.values(RESPONSES))
    assert out.kinds() == ["UnverifiedVerdict"] * 6
    reasons = [d.info.message for d in out.dead_letters]
    assert "no sluice.guard.signature header" in reasons[0]
    assert "unknown key" in reasons[1]
    assert "verdict is block" in reasons[2]
    assert "no guard verdict" in reasons[3]
    assert "does not verify" in reasons[4] and "does not verify" in reasons[5]
    for letter, record in zip(out.dead_letters, [unsigned, other_key, blocked], strict=False):
        assert letter.raw == record.raw and letter.topic == "inference.requests.safe.dlq"
        assert letter.info.stage == "infer"
    assert not any("other words" in m or "someone-else" in m for m in reasons)


def test_infer_refuses_to_start_without_guards_public_keys() -> None:
    with pytest.raises(ConfigurationError, match="SLUICE_INFER__VERDICT_PUBLIC_KEYS"):
        Harness(PROCESSOR, settings=Settings(), config=InferSettings(device="cpu"))


class Generations:
    """A stand-in Triton that answers every generation " a b c", in deltas where streamed."""

    url = "stand-in:8001"

    def __init__(self) -> None:
        self.streamed: list[str] = []

    def run(
        self, batches: Sequence[list[Job]], streams: Mapping[int, GenerationStream] | None = None
    ) -> dict[int, Completion]:
        done = {}
        for batch in batches:
            for job in batch:
                answer = Completion(output_text=" a b c", output_tokens=3, batch_size=1)
                stream = (streams or {}).get(job.index)
                if stream is not None:
                    self.streamed.append(job.request.request_id)
                    for delta in [" a", " b", " c"]:
                        stream.delta(delta)
                    stream.end(answer)
                done[job.index] = answer
        return done

    def model_version(self, _model: str) -> str:
        return "1"

    def close(self) -> None:
        pass


class Produced:
    """The chunk producer's stand-in: what it was given, by topic and key."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, str]] = []

    def produce(self, topic: str, *, value: bytes, key: str, on_delivery: Any) -> None:
        self.records.append((topic, value, key))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_streamed_requests_send_their_deltas_as_chunks_and_get_the_same_result() -> None:
    backend, producer = Generations(), Produced()
    config = InferSettings(device="cpu", verdict_public_keys=[PUBLIC])  # the default lane
    with Harness(PROCESSOR, settings=Settings(), config=config) as harness:
        resources = InferResources(
            catalog=load_models(),
            counter=Words(),  # type: ignore[arg-type]
            backend=backend,  # type: ignore[arg-type]
            device="cpu",
            verifier=Verifier.from_settings([PUBLIC], "SLUICE_INFER__VERDICT_PUBLIC_KEYS"),
            chunks=ChunkPublisher(lambda: (producer, harness.serde.encoder(CHUNKS), CHUNKS)),
        )
        harness.ctx = dataclasses.replace(harness.ctx, resources=resources)
        harness.pipeline.ctx = harness.ctx
        records = [
            signed(harness, {**request("s1", "textgen"), "stream": True}),
            signed(harness, request("whole", "textgen")),
            signed(harness, {**request("refused", "textgen"), "stream": True, "max_tokens": 9999}),
        ]
        out = harness.run(records)
        chunks = [harness.serde.decode_as_written(v, topic=CHUNKS) for _, v, _ in producer.records]
    assert backend.streamed == ["s1"]  # a request that is not served is not streamed
    results = {r["request_id"]: r for r in out.values(RESPONSES)}
    assert results["s1"]["output_text"] == results["whole"]["output_text"] == " a b c"
    assert {(topic, key) for topic, _, key in producer.records} == {(CHUNKS, "s1")}
    assert [(c["seq"], c["text"], c["final"]) for c in chunks] == [
        (0, " a", False),
        (1, " b", False),
        (2, " c", False),
        (3, "", True),
    ]
    assert "".join(c["text"] for c in chunks) == results["s1"]["output_text"]
    assert chunks[-1]["finish_reason"] == "stop"  # 3 tokens of the 64 allowed
    assert out.on(CHUNKS) == []  # never through the transaction
