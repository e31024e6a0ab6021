"""Streamed generations' chunks: numbering, the final chunk, and their separate producer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from processors.infer.chunks import CHUNKS, ChunkPublisher, ChunkStream, finish_reason
from processors.infer.planning import Completion, Job
from streams.contracts.catalog import load_catalog
from streams.contracts.records import InferenceChunk, InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.llm.model_catalog import load_models
from streams.runtime.testing import MemoryRegistry
from streams.settings import PROJECT_ROOT

TEXTGEN = load_models().get("textgen")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "my card is 4111 1111 1111 1111"


def job(request_id: str = "r1", max_tokens: int = 8) -> Job:
    request = InferenceRequest(request_id, "acme", "textgen", "hi", T0, stream=True)
    return Job(0, request, TEXTGEN, 3, max_tokens, 0)


def test_deltas_are_numbered_from_zero_and_end_with_one_final_chunk() -> None:
    sent: list[InferenceChunk] = []
    stream = ChunkStream(job(), sent.append)
    for text in [" hello", "", " world", "."]:
        stream.delta(text)
    stream.end(Completion(output_text=" hello world.", output_tokens=8))
    stream.delta(" late")  # nothing after the final chunk
    stream.end(None)
    assert [c.seq for c in sent] == [0, 1, 2, 3]
    assert [c.text for c in sent] == [" hello", " world", ".", ""]  # empty deltas skipped
    assert [c.final for c in sent] == [False, False, False, True]
    assert [c.finish_reason for c in sent] == [None, None, None, "length"]
    assert {(c.request_id, c.tenant_id, c.model, c.attempt) for c in sent} == {
        ("r1", "acme", "textgen", stream.attempt)
    }
    assert len(stream.attempt) == 32 and int(stream.attempt, 16) >= 0  # uuid4 hex


def test_every_triton_call_is_a_new_attempt() -> None:
    first, second = ChunkStream(job(), print), ChunkStream(job(), print)
    assert first.attempt != second.attempt


def test_a_failed_call_ends_with_an_empty_error_chunk() -> None:
    sent: list[InferenceChunk] = []
    stream = ChunkStream(job(), sent.append)
    stream.delta(" partial")
    stream.end(None)
    assert [(c.seq, c.text, c.final, c.finish_reason) for c in sent] == [
        (0, " partial", False, None),
        (1, "", True, "error"),
    ]


@pytest.mark.parametrize(
    ("done", "max_tokens", "reason"),
    [
        (Completion(output_tokens=8), 8, "length"),
        (Completion(output_tokens=3), 8, "stop"),
        (Completion(output_tokens=None), 8, "stop"),  # a model that does not count
        (None, 8, "error"),
    ],
)
def test_finish_reasons(done: Completion | None, max_tokens: int, reason: str) -> None:
    assert finish_reason(done, max_tokens) == reason


class FakeProducer:
    """confluent-kafka's Producer as chunks use it, recording what it is given."""

    def __init__(self, full: int = 0, refuse: bool = False) -> None:
        self.records: list[tuple[str, bytes, str]] = []
        self.callbacks: list[Any] = []
        self.full = full  # produce calls that find the queue full
        self.refuse = refuse
        self.polls: list[float] = []

    def produce(self, topic: str, *, value: bytes, key: str, on_delivery: Any) -> None:
        if self.refuse:
            raise RuntimeError(f"refused {value!r}")
        if self.full:
            self.full -= 1
            raise BufferError
        self.records.append((topic, value, key))
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float) -> int:
        self.polls.append(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    catalog = load_catalog(PROJECT_ROOT / "schemas")
    return AvroSerde(MemoryRegistry.for_catalog(catalog), catalog)  # type: ignore[arg-type]


def publisher(producer: FakeProducer, serde: AvroSerde) -> ChunkPublisher:
    def connect() -> tuple[FakeProducer, Any, str]:
        return producer, serde.encoder(CHUNKS), "prefix." + CHUNKS

    return ChunkPublisher(connect)


def test_chunks_are_produced_in_the_wire_format_keyed_by_request_id(serde: AvroSerde) -> None:
    producer = FakeProducer()
    stream = publisher(producer, serde).open(job("req-7"))
    stream.delta(" one")
    stream.end(Completion(output_tokens=1))
    assert [(t, k) for t, _, k in producer.records] == [("prefix." + CHUNKS, "req-7")] * 2
    decoded: list[Mapping[str, Any]] = [
        serde.decode_as_written(value, topic=CHUNKS) for _, value, _ in producer.records
    ]
    assert [(d["seq"], d["text"], d["final"], d["finish_reason"]) for d in decoded] == [
        (0, " one", False, None),
        (1, "", True, "stop"),
    ]
    assert decoded[0]["attempt"] == stream.attempt and decoded[0]["tenant_id"] == "acme"


def test_a_full_queue_waits_once_then_drops_the_chunk_and_counts_it(serde: AvroSerde) -> None:
    producer = FakeProducer(full=1)
    stream = publisher(producer, serde).open(job())
    stream.delta(" waited")  # the queue is full once: served, then sent
    assert len(producer.records) == 1 and 0.05 in producer.polls
    producer.full = 2
    stream.delta(" dropped")
    assert len(producer.records) == 1
    stream.end(None)
    # The dropped chunk's seq stays used: a consumer sees the gap, not a wrong text.
    seqs = [serde.decode_as_written(v, topic=CHUNKS)["seq"] for _, v, _ in producer.records]
    assert seqs == [0, 2]


def test_failures_are_logged_without_the_text(
    serde: AvroSerde, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sluice.infer")
    refusing = publisher(FakeProducer(refuse=True), serde).open(job())
    refusing.delta(SECRET)
    producer = FakeProducer()
    stream = publisher(producer, serde).open(job())
    stream.delta(SECRET)
    producer.callbacks[0]("Local: Message timed out", None)  # the delivery report
    assert "refused by the producer (RuntimeError)" in caplog.text
    assert "not delivered to inference.chunks.raw: Local: Message timed out" in caplog.text
    assert "4111" not in caplog.text


def test_no_producer_costs_the_chunks_not_the_generation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []

    def connect() -> Any:
        attempts.append(1)
        raise RuntimeError("schema of inference.chunks.raw is not registered")

    chunks = ChunkPublisher(connect)
    stream = chunks.open(job())
    stream.delta(" a")
    stream.delta(" b")
    stream.end(None)
    assert attempts == [1]  # not retried for every chunk
    assert "sluice schemas apply" in caplog.text
