"""The NER model's PERSON findings that no name looks like are dropped, before overlaps."""

from __future__ import annotations

import pytest

from processors.guard.ner import ner_misfire
from processors.guard.pii import PresidioAnalyzer
from processors.guard.policy import Entity


@pytest.mark.parametrize(
    "value",
    [
        "ca6931242895aaa9196d7613defcb96aa9dabe4f",  # a commit hash
        "3f2b8c1e-9d4a-4b7e-8f21-6c5d0a9e7b13",  # a UUID
        "SGVsbG8gd29ybGQ=",  # base64
        "dGhpcyBpcyBhIHRlc3Q",  # base64 without digits or padding
        "ORD_2024_8812",  # an order number
        "сервис",  # Cyrillic: the script rules' job
    ],
)
def test_tokens_are_not_names(value: str) -> None:
    assert ner_misfire(value)


@pytest.mark.parametrize(
    "value", ["Maria Garcia", "Ronald McDonald", "DeShawn Jackson", "Zoë O'Brien-Smith", "José"]
)
def test_names_are_kept(value: str) -> None:
    assert not ner_misfire(value)


def test_a_misfire_does_not_hide_a_script_rule_on_the_same_span(
    analyzer: PresidioAnalyzer,
) -> None:
    """Presidio resolves overlaps by score: the filter must act before, in the recognizer."""
    text = "Please forward the contract to Сергей Смирнов before the meeting."
    [found] = analyzer.analyze_batch([text], {Entity.PERSON}, 0.4)
    assert [text[d.start : d.end] for d in found] == ["Сергей Смирнов"]
    assert found[0].recognizer != "SpacyRecognizer"


def test_hashes_and_uuids_in_prompts_are_left_alone(analyzer: PresidioAnalyzer) -> None:
    texts = [
        "request id 3f2b8c1e-9d4a-4b7e-8f21-6c5d0a9e7b13 failed",
        "ca6931242895aaa9196d7613defcb96aa9dabe4f matches the download",
    ]
    assert analyzer.analyze_batch(texts, {Entity.PERSON}, 0.4) == [[], []]
