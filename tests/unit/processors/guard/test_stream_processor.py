"""guard-stream: its streams (repeats, gaps, bounds) and the whole processor in process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from processors.guard.settings import GuardSettings
from processors.guard.stream_processor import CHUNKS, PROCESSOR, RAW_CHUNKS, ChunkStreams
from processors.guard.stream_redaction import Analyse, WindowAnalysis
from streams.contracts.records import InferenceChunk
from streams.errors import InvalidChunk
from streams.runtime.testing import Harness
from streams.settings import Settings
from tests.support.tenants import UnitTenants

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EMAIL = "maria.garcia@example.com"
DIGITS = re.compile(r"\d+")


def _digits(_request_id: str, _tenant: str) -> Analyse:
    def analyse(window: str) -> WindowAnalysis:
        spans = tuple((m.start(), m.end()) for m in DIGITS.finditer(window))

        def render(start: int, end: int) -> str:
            return DIGITS.sub("<N>", window[start:end])

        return WindowAnalysis(spans, render)

    return analyse


def _chunk(seq: int, text: str, *, final: bool = False, **fields: Any) -> InferenceChunk:
    values: dict[str, Any] = {
        "request_id": "r1",
        "tenant_id": "acme",
        "model": "textgen",
        "attempt": "a1",
        "seq": seq,
        "text": text,
        "final": final,
        "created_at": NOW,
        "finish_reason": "stop" if final else None,
    }
    return InferenceChunk(**(values | fields))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _streams(**kwargs: Any) -> ChunkStreams:
    return ChunkStreams(_digits, **({"hold_back": 8, "max_pending_chars": 64} | kwargs))


def test_a_stream_is_released_renumbered_and_closed_by_its_final_chunk() -> None:
    streams = _streams()
    out = [
        *streams.accept(_chunk(0, "call me at ")),
        *streams.accept(_chunk(1, "555 0100 after ")),
        *streams.accept(_chunk(2, "lunch today please")),
        *streams.accept(_chunk(3, "", final=True)),
    ]
    assert "".join(c.text for c in out) == "call me at <N> <N> after lunch today please"
    assert [c.seq for c in out] == list(range(len(out)))
    assert [c.final for c in out] == [False] * (len(out) - 1) + [True]
    assert out[-1].finish_reason == "stop"
    assert {(c.request_id, c.attempt, c.tenant_id) for c in out} == {("r1", "a1", "acme")}
    assert streams.open_count == 0
    assert streams.accept(_chunk(3, "", final=True)) == [], "a repeated final opens nothing"


def test_a_streams_deltas_in_one_batch_are_analysed_once_and_released_together() -> None:
    windows: list[str] = []

    def counting(request_id: str, tenant: str) -> Analyse:
        analyse = _digits(request_id, tenant)

        def record(window: str) -> WindowAnalysis:
            windows.append(window)
            return analyse(window)

        return record

    streams = ChunkStreams(counting, hold_back=8, max_pending_chars=64)
    other = {"request_id": "r2", "attempt": "b1"}
    staged = [
        streams.stage(_chunk(0, "call me at ")),
        streams.stage(_chunk(0, "no digits here, ", **other)),
        streams.stage(_chunk(1, "555 0100 after ")),
        streams.stage(_chunk(2, "lunch today please")),
        streams.stage(_chunk(1, "", final=True, **other)),
    ]
    assert staged == [True] * 5 and windows == [], "nothing is analysed while staging"
    released = streams.release()
    # One analysis per stream, not per delta; one output each, in staging order.
    assert len(windows) == 2
    assert [(c.request_id, c.seq, c.final) for c in released] == [("r1", 0, False), ("r2", 0, True)]
    assert released[0].text == "call me at <N> <N> after lunch "  # back to a space
    rest = streams.accept(_chunk(3, "", final=True))
    assert "".join(c.text for c in [released[0], *rest]) == (
        "call me at <N> <N> after lunch today please"
    )
    assert streams.stage(_chunk(1, "", final=True, **other)) is False, "closed: a repeat"


def test_repeated_chunks_are_dropped_and_attempts_are_streams_of_their_own() -> None:
    streams = _streams()
    first = streams.accept(_chunk(0, "one two three four five "))
    assert streams.accept(_chunk(0, "one two three four five ")) == []
    other = streams.accept(_chunk(0, "uno dos tres cuatro cinco ", attempt="a2"))
    assert first and other
    assert first[0].seq == other[0].seq == 0
    assert streams.open_count == 2


def test_a_stream_first_seen_mid_way_or_with_a_gap_is_not_released() -> None:
    streams = _streams()
    assert streams.accept(_chunk(3, "the middle of something long enough ")) == []
    assert streams.accept(_chunk(4, "more of it, long enough again ")) == []
    streams.accept(_chunk(0, "a beginning ", request_id="r2"))
    assert streams.accept(_chunk(2, "a gap, long enough to release ", request_id="r2")) == []
    assert streams.accept(_chunk(3, "and after it, long enough ", request_id="r2")) == []
    assert streams.open_count == 0
    assert streams.dropped == 2


def test_open_streams_are_bounded_and_idle_ones_expire() -> None:
    clock = Clock()
    streams = _streams(max_open=2, idle_s=10, clock=clock)
    for request_id in ("r1", "r2", "r3"):
        streams.accept(_chunk(0, "hi", request_id=request_id))
        clock.now += 1
    assert streams.open_count == 2
    assert streams.accept(_chunk(1, "r1 was evicted, this is dropped ", request_id="r1")) == []
    clock.now += 30
    assert streams.expire() == 2
    assert streams.open_count == 0


def test_a_chunk_of_another_tenant_in_a_stream_is_refused() -> None:
    streams = _streams()
    streams.accept(_chunk(0, "hi"))
    with pytest.raises(InvalidChunk):
        streams.accept(_chunk(1, "there", tenant_id="globex"))


# -- metrics ---------------------------------------------------------------------------
def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Moved:
    """How far each named sample moved since this was made."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self._before = {(n, tuple(sorted(ls.items()))): _sample(n, **ls) for n, ls in samples}

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return _sample(name, **labels) - self._before[key]


CHUNKS_IN = "sluice_guard_stream_chunks_in_total"
DROPPED = "sluice_guard_stream_dropped_total"


def test_chunks_are_counted_by_outcome_and_dropped_streams_by_reason() -> None:
    outcomes = ["staged", "repeat", "closed", "dropped"]
    reasons = ["first_seen_midway", "gap", "idle", "evicted"]
    moved = Moved(
        *[(CHUNKS_IN, {"outcome": o}) for o in outcomes],
        *[(DROPPED, {"reason": r}) for r in reasons],
    )
    clock = Clock()
    streams = _streams(max_open=2, idle_s=10, clock=clock)
    streams.accept(_chunk(3, "mid-way ", request_id="m"))  # first seen past seq 0
    streams.accept(_chunk(4, "more ", request_id="m"))  # its stream is closed
    streams.accept(_chunk(0, "a beginning ", request_id="g"))
    streams.accept(_chunk(0, "a beginning ", request_id="g"))  # again
    streams.accept(_chunk(2, "past a gap ", request_id="g"))
    streams.accept(_chunk(0, "one ", request_id="e1"))
    streams.accept(_chunk(0, "two ", request_id="e2"))
    streams.accept(_chunk(0, "three ", request_id="e3"))  # e1 is evicted
    clock.now += 30
    streams.expire()  # e2 and e3 idle
    assert [moved(CHUNKS_IN, outcome=o) for o in outcomes] == [4, 1, 1, 2]
    assert [moved(DROPPED, reason=r) for r in reasons] == [1, 1, 2, 1]
    assert streams.dropped == 5


def test_released_deltas_held_back_text_and_open_streams_are_measured() -> None:
    held = "sluice_guard_stream_held_back_chars"
    moved = Moved(
        ("sluice_guard_stream_deltas_released_total", {}),
        (f"{held}_count", {}),
        (f"{held}_sum", {}),
    )
    streams = _streams()
    streams.accept(_chunk(0, "short"))  # held back whole: 5 characters
    assert _sample("sluice_guard_stream_open_streams") == 1
    streams.accept(_chunk(1, " text and then some more words"))
    streams.accept(_chunk(2, "", final=True))
    assert moved("sluice_guard_stream_deltas_released_total") == 2
    assert moved(f"{held}_count") == 2, "observed after each release but the final one"
    # 5 ("short"), then 10: the release stops at the last space before the 8-character
    # hold-back, so "more words" stays behind.
    assert moved(f"{held}_sum") == 5 + len("more words")
    assert _sample("sluice_guard_stream_open_streams") == 0


def test_withheld_streams_are_counted_by_reason() -> None:
    def failing(_request_id: str, _tenant: str) -> Analyse:
        return lambda _window: WindowAnalysis((), lambda _s, _e: "", withheld="analyzer_timeout")

    name = "sluice_guard_stream_withheld_total"
    moved = Moved((name, {"reason": "analyzer_timeout"}))
    streams = ChunkStreams(failing, hold_back=4, max_pending_chars=64)
    streams.accept(_chunk(0, "some text that guard cannot read "))
    streams.accept(_chunk(1, "and more of it "))
    assert moved(name, reason="analyzer_timeout") == 1, "once per stream"


def test_entities_redacted_in_streams_are_counted_by_bounded_entity_type() -> None:
    def typed(request_id: str, tenant: str) -> Analyse:
        digits = _digits(request_id, tenant)

        def analyse(window: str) -> WindowAnalysis:
            plain = digits(window)
            types = tuple(
                "US_SSN" if window[a:b] == "0100" else "SOMETHING_ELSE" for a, b in plain.spans
            )
            return WindowAnalysis(plain.spans, plain.render, entity_types=types)

        return analyse

    name = "sluice_guard_stream_entities_redacted_total"
    moved = Moved((name, {"entity_type": "US_SSN"}), (name, {"entity_type": "other"}))
    streams = ChunkStreams(typed, hold_back=8, max_pending_chars=64)
    streams.accept(_chunk(0, "call 555 or 0100 "))
    streams.accept(_chunk(1, "or 42 then ", final=False))
    streams.accept(_chunk(2, "", final=True))
    assert moved(name, entity_type="other") == 2  # 555 and 42: a type guard does not know
    assert moved(name, entity_type="US_SSN") == 1  # 0100


# -- the processor, in process, with guard's real engine ---------------------------------
@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> UnitTenants:
    return UnitTenants(tmp_path_factory.mktemp("tenants")).add("acme")


@pytest.fixture(scope="module")
def harness(tenants: UnitTenants) -> Iterator[Harness[GuardSettings, Any]]:
    config = GuardSettings(
        embedder="none",
        hash_secret=SecretStr("s" * 32),
        tenants_path=tenants.path,
        stream_hold_back_chars=32,
    )
    with Harness(PROCESSOR, settings=Settings(), config=config) as harness:
        yield harness


def test_an_email_split_across_chunks_reaches_inference_chunks_redacted(
    harness: Harness[GuardSettings, Any],
) -> None:
    cut = EMAIL.index("@") + 3
    texts = [f"Sure, write to {EMAIL[:cut]}", f"{EMAIL[cut:]} and she will answer you soon."]
    records = [
        harness.record(RAW_CHUNKS, _chunk(i, t).to_avro(), key="r1") for i, t in enumerate(texts)
    ]
    records.append(harness.record(RAW_CHUNKS, _chunk(2, "", final=True).to_avro(), key="r1"))
    records.append(harness.record(RAW_CHUNKS, _chunk(1, texts[1]).to_avro(), key="r1"))  # again
    name = "sluice_guard_stream_entities_redacted_total"
    moved = Moved((name, {"entity_type": "EMAIL_ADDRESS"}))
    out = harness.run(records)
    assert moved(name, entity_type="EMAIL_ADDRESS") == 1
    chunks = out.values(CHUNKS)
    text = "".join(c["text"] for c in chunks)
    assert EMAIL not in text and EMAIL[:cut] not in text and EMAIL[cut:] not in text
    assert "<EMAIL_ADDRESS>" in text
    assert text.endswith("she will answer you soon.")
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert chunks[-1]["final"] and chunks[-1]["finish_reason"] == "stop"
    assert out.dead_letters == []


def test_bad_bytes_unknown_tenants_and_wrong_keys_are_dead_lettered(
    harness: Harness[GuardSettings, Any],
) -> None:
    out = harness.run(
        [
            harness.record(RAW_CHUNKS, b"\x00not avro", key="r9"),
            harness.record(
                RAW_CHUNKS, _chunk(0, "hi", request_id="r8", tenant_id="nobody").to_avro(), key="r8"
            ),
            harness.record(RAW_CHUNKS, _chunk(0, "hi", request_id="r7").to_avro(), key="r6"),
        ]
    )
    assert out.values(CHUNKS) == []
    assert {d.info.topic for d in out.dead_letters} == {RAW_CHUNKS}
    assert out.kinds()[1:] == ["UnauthenticatedRequest", "InvalidChunk"]
    assert len(out.dead_letters) == 3
