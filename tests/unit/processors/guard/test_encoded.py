"""PII and secrets inside base64 and hex tokens: the whole token is the finding."""

from __future__ import annotations

import base64

import pytest

from processors.guard.encoded import MAX_TOKEN_CHARS, decode
from processors.guard.engine import GuardItem
from processors.guard.pii import PresidioAnalyzer
from processors.guard.policy import Entity
from tests.support.guard import EngineFactory, make_policy


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def found(analyzer: PresidioAnalyzer, text: str) -> list[tuple[str, str]]:
    [detections] = analyzer.analyze_batch([text], set(Entity), 0.4)
    return [(d.entity_type, text[d.start : d.end]) for d in detections]


@pytest.mark.parametrize(
    ("plain", "encode", "entity"),
    [
        ("card 4111 1111 1111 1111", b64, "CREDIT_CARD"),
        ("ana.silva@example.com", b64, "EMAIL_ADDRESS"),
        ("ana.silva@example.com", lambda t: t.encode().hex(), "EMAIL_ADDRESS"),
        (
            "ssn 219-09-9999 on file",
            lambda t: base64.urlsafe_b64encode(t.encode()).decode(),
            "US_SSN",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE", lambda t: b64(t).rstrip("="), "API_KEY"),
        ("709-03-4198", b64, "US_SSN"),  # 16 characters, the shortest token read
        ("my name is Maria Gonzalez, thanks", b64, "PERSON"),
    ],
)
def test_the_whole_encoded_token_is_reported(
    analyzer: PresidioAnalyzer, plain: str, encode: object, entity: str
) -> None:
    token = encode(plain)  # type: ignore[operator]
    text = f"payload {token} end"
    assert (entity, token) in found(analyzer, text)


@pytest.mark.parametrize(
    "token",
    [
        "3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39",  # a commit hash
        "123e4567e89b12d3a456426614174000",  # a UUID without dashes
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # sha256
        b64("hello world, this is a perfectly harmless sentence"),
        b64("release notes for version 2.4.1 of the app"),
        "internationalization-and-localization",
        "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
    ],
)
def test_benign_tokens_are_not_flagged(analyzer: PresidioAnalyzer, token: str) -> None:
    text = f"value {token} here"
    assert [f for f in found(analyzer, text) if f[1] == token] == []


def test_only_mostly_printable_text_is_decoded() -> None:
    assert decode(b64("ana.silva@example.com")) == "ana.silva@example.com"
    assert decode(base64.b64encode(bytes(range(256))).decode()) is None
    assert decode("not base64 at all!!") is None


def test_a_long_token_is_judged_on_its_bounded_start() -> None:
    long_text = "email ana.silva@example.com " + "x" * (MAX_TOKEN_CHARS * 2)
    decoded = decode(b64(long_text))
    assert decoded is not None and decoded.startswith("email ana.silva@example.com")
    assert len(decoded) <= MAX_TOKEN_CHARS


def test_base64_of_base64_is_not_unwrapped(analyzer: PresidioAnalyzer) -> None:
    # One level deep, by design (docs/explanation/guard.md, "Encoded tokens").
    token = b64(b64("card 4111 1111 1111 1111"))
    assert [f for f in found(analyzer, f"x {token} y") if f[1] == token] == []


def test_an_encoded_card_is_redacted_whole_by_the_engine(
    analyzer: PresidioAnalyzer, make_engine: EngineFactory
) -> None:
    engine = make_engine(analyzer, make_policy(CREDIT_CARD="block"))
    token = b64("card 4111 1111 1111 1111")
    [result] = engine.inspect_batch([GuardItem("r", "t", f"decode {token} please")])
    assert result.blocked
    assert result.text == "decode <CREDIT_CARD> please"
