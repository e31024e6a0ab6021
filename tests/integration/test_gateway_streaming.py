"""Token-by-token streaming on the real stack: infer → guard-stream → gateway → OpenAI's client.

guard, guard-stream, infer (Triton serving textgen) and `sluice run gateway` run as
child processes in a sandbox of their own. The test model's output is gibberish, so
redaction inside a stream is tested on guard-stream directly: raw chunks that split an
e-mail address are produced to ``inference.chunks.raw`` and read back, redacted, from
``inference.chunks``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.contracts.records import InferenceChunk
from streams.contracts.serde import AvroSerde
from streams.gateway.key_store import KeyStore
from streams.runtime import kafka
from streams.settings import Settings
from tests.integration.test_gateway import GUARD_ENV, Served, _start_gateway
from tests.support.world import make_world, read_all, running_all

openai = pytest.importorskip("openai", reason="the gateway is tested with OpenAI's client")
pytest.importorskip("starlette", reason="the gateway's HTTP stack: pip install 'sluice[gateway]'")
pytest.importorskip("uvicorn", reason="the gateway's HTTP stack: pip install 'sluice[gateway]'")

EMAIL = "maria.garcia@example.com"
STREAM_TENANT = "telemetry"


@pytest.fixture(scope="module")
def served(triton: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    world = make_world(triton, tmp_path_factory.mktemp("gateway-streaming"))
    # A tenant the stack registered, whose policy finds entities by their patterns only
    # (PERSON off, schemas/guard/policy.yaml): what a pattern matches does not depend on
    # the text around it, so the redacted stream must equal the stored result. Where the
    # name model runs, a name can be judged differently in a window than in the whole
    # text (docs/explanation/gateway.md, Streaming).
    tenant = STREAM_TENANT
    store = KeyStore(world.settings.stack.root / "secrets")
    created = store.create(tenant, {tenant}, user="integration-suite", name="streaming test")
    with running_all(world, ["guard", "guard-stream", "infer"], **GUARD_ENV):
        base = _start_gateway(world)
        yield Served(world, base, tenant, created.key_id, created.key)


def _decoded(served: Served, logical: str, request_id: str, expect: int = 1) -> list[Any]:
    """(message, record) of ``request_id`` on a topic, in offset order, after a settle."""
    world = served.world
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.value_schema(logical)
    messages = read_all(world.settings, world.topic(logical), expect, timeout=60, settle=2)
    pairs = [(message, serde.decode(message.value(), schema)) for message in messages]
    return [(msg, rec) for msg, rec in pairs if rec["request_id"] == request_id]


def test_a_streamed_chat_completion_arrives_delta_by_delta_and_equals_the_stored_result(
    served: Served,
) -> None:
    stream = served.client().chat.completions.create(
        model="textgen",
        messages=[{"role": "user", "content": "Tell me a long story about Kafka"}],
        max_tokens=200,  # about 2 s of the test model: deltas have time to arrive first
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[tuple[float, str]] = []
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append((time.time(), chunk.choices[0].delta.content))
    assert len(deltas) > 1, "the text came in more than one delta"
    assert deltas[0][0] < deltas[-1][0]
    request_id = chunks[0].id.removeprefix("chatcmpl-")
    [(result_message, result)] = _decoded(served, "inference.results", request_id)
    # The first delta reached the client before the whole result was even stored.
    _kind, stored_at_ms = result_message.timestamp()
    assert deltas[0][0] * 1000 < stored_at_ms
    assert "".join(text for _, text in deltas) == result["output_text"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in {"stop", "length"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 200
    # What the gateway relayed came from guard-stream, numbered from 0 without a gap.
    relayed = [record for _, record in _decoded(served, "inference.chunks", request_id)]
    first_attempt = relayed[0]["attempt"]
    assert sorted(r["seq"] for r in relayed if r["attempt"] == first_attempt) == list(
        range(len([r for r in relayed if r["attempt"] == first_attempt]))
    )


def test_a_streamed_completion_arrives_delta_by_delta_and_equals_the_stored_result(
    served: Served,
) -> None:
    stream = served.client().completions.create(
        model="textgen",
        prompt="Once upon a time, in a land of message brokers,",
        max_tokens=200,  # about 2 s of the test model: deltas have time to arrive first
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[tuple[float, str]] = []
    events = []
    for event in stream:
        events.append(event)
        if event.choices and event.choices[0].text:
            deltas.append((time.time(), event.choices[0].text))
    assert len(deltas) > 1, "the text came in more than one delta"
    assert deltas[0][0] < deltas[-1][0]
    assert {e.object for e in events} == {"text_completion"}
    request_id = events[0].id.removeprefix("cmpl-")
    [(result_message, result)] = _decoded(served, "inference.results", request_id)
    # The first delta reached the client before the whole result was even stored.
    _kind, stored_at_ms = result_message.timestamp()
    assert deltas[0][0] * 1000 < stored_at_ms
    assert "".join(text for _, text in deltas) == result["output_text"]
    assert [e.choices[0].finish_reason for e in events if e.choices][-1] in {"stop", "length"}
    assert events[-1].usage is not None and events[-1].usage.completion_tokens <= 200
    relayed = [record for _, record in _decoded(served, "inference.chunks", request_id)]
    assert relayed, "the deltas came from guard-stream's inference.chunks"


def test_guard_stream_redacts_an_email_split_across_two_raw_chunks(served: Served) -> None:
    world = served.world
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    encode = serde.encoder("inference.chunks.raw")
    request_id = str(uuid.uuid4())
    cut = EMAIL.index("@") + 3
    texts = [f"You can write to {EMAIL[:cut]}", f"{EMAIL[cut:]} whenever you like, she answers."]
    now = datetime.now(UTC)
    raw = [
        InferenceChunk(
            request_id=request_id,
            tenant_id=served.tenant,
            model="textgen",
            attempt="attempt-1",
            seq=seq,
            text=text,
            final=final,
            created_at=now,
            finish_reason="stop" if final else None,
        )
        for seq, (text, final) in enumerate([(texts[0], False), (texts[1], False), ("", True)])
    ]
    producer = kafka.producer(world.settings)
    for chunk in raw:
        producer.produce(
            world.topic("inference.chunks.raw"),
            value=encode(chunk.to_avro()),
            key=request_id.encode(),
        )
    assert producer.flush(30) == 0

    out = [record for _, record in _decoded(served, "inference.chunks", request_id, expect=1)]
    assert out, "guard-stream wrote the redacted chunks"
    assert out[-1]["final"] and out[-1]["finish_reason"] == "stop"
    text = "".join(r["text"] for r in out)
    assert EMAIL not in text and EMAIL[:cut] not in text and EMAIL[cut:] not in text
    assert "EMAIL_ADDRESS" in text  # tagged or hashed, as the shipped policy says
    assert text.endswith("whenever you like, she answers.")
    assert [r["seq"] for r in out] == list(range(len(out)))
    assert {r["attempt"] for r in out} == {"attempt-1"}
