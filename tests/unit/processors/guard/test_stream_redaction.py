"""Streamed redaction: what is released never depends on where the model split its output."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable

import pytest

from processors.guard.engine import GuardEngine, GuardItem, withheld
from processors.guard.pii import PresidioAnalyzer
from processors.guard.stream_redaction import (
    StreamClosedError,
    StreamRedactor,
    WindowAnalysis,
    engine_analysis,
)
from tests.support.guard import EngineFactory, ExplodingAnalyzer, make_policy

HOLD_BACK = 64
TENANT = "acme"

TEXTS = [
    "Sure. Write to maria.g@example.com or call +1 415-555-0132 before Friday, thanks.",
    "The card on file is 4111 1111 1111 1111 and the backup is jo.doe@example.org today.",
    "Hello, I'm Maria Gonzalez and my colleague is John Smith; reach me at bo@example.net.",
]
VALUES = [
    "maria.g@example.com",
    "415-555-0132",
    "4111 1111 1111 1111",
    "jo.doe@example.org",
    "bo@example.net",
    "Maria Gonzalez",
    "John Smith",
]


def _run(redactor: StreamRedactor, chunks: Iterable[str]) -> str:
    released = [redactor.feed(chunk) for chunk in chunks]
    return "".join(released) + redactor.finish()


def _splits(text: str, cuts: Iterable[int]) -> list[str]:
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


# -- the release logic, over a recognizer of digit runs (fast enough for every split) ----
DIGITS = re.compile(r"\d[\d -]*\d")


def _digit_tagger(window: str) -> WindowAnalysis:
    spans = tuple((m.start(), m.end()) for m in DIGITS.finditer(window))

    def render(start: int, end: int) -> str:
        out, at = [], start
        for s, e in spans:
            lo, hi = max(s, start), min(e, end)
            if lo < hi:
                out += [window[at:lo], "<N>"]
                at = hi
        return "".join([*out, window[at:end]])

    return WindowAnalysis(spans, render)


def _whole(text: str) -> str:
    return _digit_tagger(text).render(0, len(text))


LOGIC_TEXT = (
    "Order 123 456 789 was shipped to 22 Baker Street; call 555-0100 or 555 0199 "
    "if the parcel, worth 1200, has not arrived by 2026-12-24. Thanks again."
)


def test_every_two_chunk_split_releases_what_redacting_the_whole_text_does() -> None:
    expected = _whole(LOGIC_TEXT)
    for cut in range(len(LOGIC_TEXT) + 1):
        redactor = StreamRedactor(_digit_tagger, hold_back=16, max_pending_chars=256)
        assert _run(redactor, _splits(LOGIC_TEXT, [cut])) == expected, cut


def test_random_splits_into_many_chunks_release_what_redacting_the_whole_text_does() -> None:
    expected = _whole(LOGIC_TEXT)
    rng = random.Random(7)
    for _ in range(300):
        cuts = rng.sample(range(1, len(LOGIC_TEXT)), rng.randint(2, 40))
        redactor = StreamRedactor(_digit_tagger, hold_back=16, max_pending_chars=256)
        assert _run(redactor, _splits(LOGIC_TEXT, cuts)) == expected, cuts


def test_text_is_released_before_the_end_and_the_hold_back_is_kept() -> None:
    redactor = StreamRedactor(_digit_tagger, hold_back=16, max_pending_chars=256)
    released = ""
    for char in LOGIC_TEXT:
        released += redactor.feed(char)
        assert redactor.pending_chars <= 16 + len("Thanks again.") + 32
    assert released, "nothing was released before finish"
    assert len(released) < len(_whole(LOGIC_TEXT))
    assert released.endswith(" ")  # released up to whitespace
    assert released + redactor.finish() == _whole(LOGIC_TEXT)


def test_an_unbroken_run_is_held_until_the_cap_then_released_redacted() -> None:
    text = "x" * 50 + "4111111111111111" + "y" * 300
    redactor = StreamRedactor(_digit_tagger, hold_back=16, max_pending_chars=100)
    released = [redactor.feed(char) for char in text]
    assert max(len(r) for r in released) > 0, "the cap forces a release"
    assert redactor.pending_chars <= 101
    assert "4111" not in "".join(released) + redactor.finish()


def test_a_final_chunk_releases_everything_and_closes_the_stream() -> None:
    redactor = StreamRedactor(_digit_tagger, hold_back=16, max_pending_chars=256)
    first = redactor.feed("Call 555-0100 now")
    assert first == ""
    assert first + redactor.feed(" please.", final=True) == "Call <N> now please."
    assert redactor.finished
    with pytest.raises(StreamClosedError):
        redactor.feed("more")
    assert redactor.finish() == ""


def test_a_window_guard_cannot_analyse_withholds_the_rest_of_the_stream() -> None:
    def failing(_window: str) -> WindowAnalysis:
        return WindowAnalysis((), lambda _s, _e: "", withheld="analyzer_error")

    redactor = StreamRedactor(failing, hold_back=4, max_pending_chars=64)
    assert redactor.feed("ab") == ""
    assert redactor.feed("cdef gh") == withheld("analyzer_error")
    assert redactor.feed("more text") == ""
    assert redactor.finish() == ""


def _typed_digit_tagger(window: str) -> WindowAnalysis:
    plain = _digit_tagger(window)
    return WindowAnalysis(plain.spans, plain.render, entity_types=("NUMBER",) * len(plain.spans))


@pytest.mark.parametrize("cuts", [[], [7], [3, 9, 20, 40], list(range(1, len(LOGIC_TEXT)))])
def test_each_entity_released_is_told_once_however_the_stream_is_split(cuts: list[int]) -> None:
    told: list[str] = []
    redactor = StreamRedactor(
        _typed_digit_tagger, hold_back=16, max_pending_chars=256, on_redacted=told.append
    )
    _run(redactor, _splits(LOGIC_TEXT, cuts))
    # Released text is seen again as context; its entities must not be told again.
    assert told == ["NUMBER"] * len(_digit_tagger(LOGIC_TEXT).spans)


def test_an_entity_cut_in_an_unbroken_run_is_told_once() -> None:
    text = "x" * 50 + " " + "1" * 200 + " done"
    told: list[str] = []
    redactor = StreamRedactor(
        _typed_digit_tagger, hold_back=16, max_pending_chars=100, on_redacted=told.append
    )
    released = "".join(redactor.feed(char) for char in text) + redactor.finish()
    assert released.count("<N>") > 1, "the run was released in pieces"
    assert told == ["NUMBER"]


def test_a_withheld_stream_tells_of_no_entity() -> None:
    told: list[str] = []

    def failing(_window: str) -> WindowAnalysis:
        return WindowAnalysis(((0, 3),), lambda _s, _e: "", withheld="analyzer_error")

    redactor = StreamRedactor(failing, hold_back=4, max_pending_chars=64, on_redacted=told.append)
    _run(redactor, ["123 456 789 ", "and more"])
    assert told == []


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="hold_back"):
        StreamRedactor(_digit_tagger, hold_back=64, max_pending_chars=64)


# -- with guard's own engine (Presidio, the tenant policy) -------------------------------
@pytest.fixture(scope="module")
def engine(analyzer: PresidioAnalyzer, make_engine: EngineFactory) -> GuardEngine:
    return make_engine(
        analyzer, make_policy(PERSON="hash", EMAIL_ADDRESS="tag", CREDIT_CARD="mask")
    )


def _redacted_whole(engine: GuardEngine, text: str) -> str:
    [inspection] = engine.redact_batch([GuardItem("r", TENANT, text, "output_text")])
    return inspection.text


def _stream(engine: GuardEngine, chunks: Iterable[str]) -> str:
    redactor = StreamRedactor(
        engine_analysis(engine, "r", TENANT), hold_back=HOLD_BACK, max_pending_chars=1024
    )
    return _run(redactor, chunks)


@pytest.mark.parametrize("text", TEXTS)
def test_guard_redacts_a_stream_split_anywhere_in_two_as_the_whole_text(
    engine: GuardEngine, text: str
) -> None:
    expected = _redacted_whole(engine, text)
    assert not [v for v in VALUES if v in expected], "the whole text is redacted"
    for cut in range(len(text) + 1):
        released = _stream(engine, _splits(text, [cut]))
        assert not [v for v in VALUES if v in released], cut
        assert released == expected, cut


@pytest.mark.parametrize("text", TEXTS)
def test_guard_redacts_a_stream_split_at_random_into_many_as_the_whole_text(
    engine: GuardEngine, text: str
) -> None:
    expected = _redacted_whole(engine, text)
    rng = random.Random(text)
    for _ in range(15):
        cuts = rng.sample(range(1, len(text)), rng.randint(3, 30))
        assert _stream(engine, _splits(text, cuts)) == expected, cuts


def test_a_stream_longer_than_the_hold_back_releases_before_it_ends(engine: GuardEngine) -> None:
    text = " ".join(TEXTS)
    redactor = StreamRedactor(
        engine_analysis(engine, "r", TENANT), hold_back=HOLD_BACK, max_pending_chars=1024
    )
    early = "".join(redactor.feed(word + " ") for word in text.split(" "))
    assert early, "text was released before the stream finished"
    assert not [v for v in VALUES if v in early]
    assert (early + redactor.finish()).rstrip() == _redacted_whole(engine, text)


def test_guards_entity_types_are_told_for_what_a_stream_releases(engine: GuardEngine) -> None:
    told: list[str] = []
    redactor = StreamRedactor(
        engine_analysis(engine, "r", TENANT),
        hold_back=HOLD_BACK,
        max_pending_chars=1024,
        on_redacted=told.append,
    )
    _run(redactor, _splits(TEXTS[0], [20, 30, 50]))
    assert sorted(told) == ["EMAIL_ADDRESS", "PHONE_NUMBER"]


def test_an_analyzer_failure_withholds_the_stream(make_engine: EngineFactory) -> None:
    engine = make_engine(ExplodingAnalyzer())
    redactor = StreamRedactor(
        engine_analysis(engine, "r", TENANT), hold_back=8, max_pending_chars=64
    )
    released = redactor.feed("mail maria.g@example.com now, please")
    assert released.startswith("<WITHHELD:")
    assert redactor.feed(" and more") == ""
    assert redactor.finish() == ""
