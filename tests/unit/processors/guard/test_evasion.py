"""PII written to evade detection is redacted end to end; look-alike benign text is not."""

from __future__ import annotations

import re

import pytest

from processors.guard.engine import GuardEngine, GuardItem
from processors.guard.evasion import card_prefix, iban_valid, luhn_valid, ssn_plausible
from processors.guard.hashing import TenantHasher
from processors.guard.normalize import is_invisible, normalize
from processors.guard.pii import PresidioAnalyzer
from processors.guard.policy import Entity
from tests.support.guard import SECRET, EngineFactory, make_policy, unit_key_ids

ZW = "\u200b"  # zero-width space
ZWNJ, ZWJ, WJ, SHY, BOM = "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff"


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFF10 - ord("0")) if c.isdigit() else c for c in text)


def arabic_indic(text: str) -> str:
    return "".join(chr(0x0660 + int(c)) if c.isdigit() else c for c in text)


def devanagari(text: str) -> str:
    return "".join(chr(0x0966 + int(c)) if c.isdigit() else c for c in text)


CARD = "4111111111111111"
SSN = "219099999"
IBAN = "DE89370400440532013000"
EMAIL = "maria.garcia@example.com"

# (entity, the value as written, the characters that must not survive in sequence)
TRICKS = [
    (Entity.CREDIT_CARD, f"4111{ZW}1111{ZW}1111{ZW}1111", CARD),
    (Entity.CREDIT_CARD, f"4{ZWJ}1{ZWNJ}1{WJ}1 1{SHY}111 1111 11{BOM}11", CARD),
    (Entity.CREDIT_CARD, full_width("4111 1111 1111 1111"), CARD),
    (Entity.CREDIT_CARD, arabic_indic("4111 1111 1111 1111"), CARD),
    (Entity.CREDIT_CARD, devanagari("4111-1111-1111-1111"), CARD),
    (Entity.CREDIT_CARD, "4111.1111.1111.1111", CARD),
    (Entity.CREDIT_CARD, "4111/1111/1111/1111", CARD),
    (Entity.CREDIT_CARD, "4111  1111   1111  1111", CARD),
    (Entity.CREDIT_CARD, "4111\u00b71111\u00b71111\u00b71111", CARD),
    (Entity.US_SSN, f"219-0{ZW}9-99{ZW}99", SSN),
    (Entity.US_SSN, full_width("219-09-9999"), SSN),
    (Entity.US_SSN, arabic_indic("219-09-9999"), SSN),
    (Entity.US_SSN, "219.09.9999", SSN),
    (Entity.US_SSN, "219/09/9999", SSN),
    (Entity.US_SSN, "219  09  9999", SSN),
    (Entity.US_SSN, "219\u201309\u20139999", SSN),
    (Entity.US_SSN, "219.09 9999", SSN),
    (Entity.US_SSN, "219/09  9999", SSN),
    (Entity.IBAN_CODE, f"DE89 37{ZW}04 0044 05{SHY}32 0130 00", IBAN),
    (Entity.IBAN_CODE, "de89 3704 0044 0532 0130 00", IBAN),
    (Entity.IBAN_CODE, "de89370400440532013000", IBAN),
    (Entity.IBAN_CODE, "DE89 370 400 440 532 013 000", IBAN),
    (Entity.IBAN_CODE, "De89-3704-0044-0532-0130-00", IBAN),
    (Entity.IBAN_CODE, full_width("DE89 3704 0044 0532 0130 00"), IBAN),
    (Entity.IP_ADDRESS, f"203.0{ZW}.113{WJ}.7", "2030113"),
    (Entity.IP_ADDRESS, full_width("203.0.113.7"), "2030113"),
    (Entity.IP_ADDRESS, "203[.]0[.]113[.]7", "2030113"),
    (Entity.IP_ADDRESS, "203 dot 0 dot 113 dot 7", "2030113"),
    (Entity.EMAIL_ADDRESS, f"maria.gar{ZW}cia@exam{ZWJ}ple.com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria.garcia\uff20example.com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria.garcia\uff20example\uff0ecom", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria dot garcia at example dot com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria.garcia[at]example[dot]com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria.garcia(at)example(dot)com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria.garcia {at} example {dot} com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria.garcia AT example DOT com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria.garcia [at] example.com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria.garcia @ example.com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria.garcia at example.com", EMAIL),
    (Entity.EMAIL_ADDRESS, "maria dot garcia@example dot com", EMAIL),
    (Entity.PHONE_NUMBER, f"+1 415{ZW}-555-01{ZW}32", "4155550132"),
    (Entity.PHONE_NUMBER, full_width("+1 415 555 0132"), "4155550132"),
]


def _compact(text: str) -> str:
    """The letters and digits of the analysis text of ``text``, lower case."""
    return re.sub(r"[^0-9a-z]", "", normalize(text).text.lower())


@pytest.fixture(scope="module")
def engine(analyzer: PresidioAnalyzer, make_engine: EngineFactory) -> GuardEngine:
    return make_engine(analyzer, make_policy(PERSON="off"))


@pytest.mark.parametrize(("entity", "value", "secret"), TRICKS)
def test_evasive_values_are_redacted(
    engine: GuardEngine, entity: Entity, value: str, secret: str
) -> None:
    # Separated SSNs count near an SSN context word, as Presidio's weak SSN patterns do.
    template = (
        "Hello, my SSN is {} for the refund."
        if entity is Entity.US_SSN
        else "Hello, please use {} for the refund."
    )
    text = template.format(value)
    [result] = engine.redact_batch([GuardItem("r1", "acme", text)])
    assert value not in result.text
    assert not any(is_invisible(c) for c in result.text)
    assert secret.lower() not in _compact(result.text)
    assert result.text == template.format(f"<{entity.value}>")
    [finding] = result.findings
    assert (finding.entity_type, text[finding.start : finding.end]) == (entity.value, value)


@pytest.mark.parametrize(
    "text",
    [
        "Please look at the data before lunch.",
        "Let's meet at noon dot com is not a site.",
        "I work at example.com and live at 12 Main Street.",
        "See you at 5 dot 30 tomorrow.",
        "The years 2020/2021/2022/2023 were busy.",
        "Order 4111.1111.1111.1112 is not a card (Luhn fails).",
        "Version 1.2.3 of the tool, build 2024.11.30.",
        "Dates 2024/01/15 and 15.01.2024, ratio 1/2, total 12.345.678",
        "Part number de12 3456 7890 in stock.",
        "Code 123/45/6789 is all in order? 000/12/3456 is not an SSN.",
        "Tracking code 924/23/6014, parcel 476  52  4411.",
        "Temperature \uff10\u2103 to \uff13\uff10\u2103 and \u0663 apples.",
        "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 and cafe\u0301 decomposed.",
        "Rate him 4 out of 5 at the office; call at 9.",
        "Use the [at] sign in templates, or (at) least try.",
        "Sections 1 . 2 . 3 . 4 of the contract.",
        "Read more at example.com, or sign up at docs.example.org today.",
        "the list mlopez at example.net has no context word",
    ],
)
def test_benign_lookalikes_are_left_unchanged(engine: GuardEngine, text: str) -> None:
    [result] = engine.redact_batch([GuardItem("r1", "acme", text)])
    assert result.findings == ()
    assert result.text == text


def test_mask_drops_invisible_characters_and_hash_ignores_them(
    analyzer: PresidioAnalyzer, make_engine: EngineFactory
) -> None:
    engine = make_engine(analyzer, make_policy(CREDIT_CARD="mask", EMAIL_ADDRESS="hash"))
    text = f"card 4111{ZW}1111{ZW}1111{ZW}1111, mail maria\uff20exa{ZW}mple.com"
    [result] = engine.redact_batch([GuardItem("r1", "acme", text)])
    token = TenantHasher(SECRET, unit_key_ids).token("acme", "EMAIL_ADDRESS", "maria@example.com")
    assert result.text == f"card ************1111, mail {token}"


def test_several_tricks_in_one_text(engine: GuardEngine) -> None:
    text = (
        f"SSN 219/09/9999, card {full_width('4111 1111 1111 1111')}, "
        f"iban de89 3704 0044 0532 0130 00, mail maria[at]example[dot]com, "
        f"ip 203[.]0[.]113[.]7, backup 4111{ZW}1111{ZW}1111{ZW}1111"
    )
    [result] = engine.redact_batch([GuardItem("r1", "acme", text)])
    assert result.text == (
        "SSN <US_SSN>, card <CREDIT_CARD>, iban <IBAN_CODE>, mail <EMAIL_ADDRESS>, "
        "ip <IP_ADDRESS>, backup <CREDIT_CARD>"
    )


def test_values_presidio_finds_keep_their_recognizer(analyzer: PresidioAnalyzer) -> None:
    texts = [
        "Card 4111 1111 1111 1111.",
        "IBAN DE89 3704 0044 0532 0130 00.",
        "SSN 219-09-9999.",
        "mail maria@example.com",
    ]
    found = analyzer.analyze_batch(texts, frozenset(Entity), 0.4)
    assert [[d.recognizer for d in f] for f in found] == [
        ["CreditCardRecognizer"],
        ["IbanRecognizer"],
        ["UsSsnRecognizer"],
        ["OfflineEmailRecognizer"],
    ]


def test_a_card_behind_other_numbers_is_still_found(analyzer: PresidioAnalyzer) -> None:
    text = "ref 100 200 300 4111.1111.1111.1111 end"
    [found] = analyzer.analyze_batch([text], {Entity.CREDIT_CARD}, 0.4)
    assert [text[d.start : d.end] for d in found] == ["4111.1111.1111.1111"]


def test_spelled_email_stops_at_the_last_known_suffix(analyzer: PresidioAnalyzer) -> None:
    text = "write maria at example dot com dot and then wait"
    [found] = analyzer.analyze_batch([text], {Entity.EMAIL_ADDRESS}, 0.4)
    assert [text[d.start : d.end] for d in found] == ["maria at example dot com"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("write to me at maria dot garcia@mail dot example dot com", "maria dot garcia@"),
        ("contact me at maria.garcia [at] example [dot] com.", "maria.garcia [at]"),
        ("reach me at MARIA DOT GARCIA85 AT EU DOT EXAMPLE DOT ORG now", "MARIA DOT GARCIA85"),
        ("you can reach me at nathan.martinez25 at eu.example.org", "nathan.martinez25 at"),
        # Letters only before a plain "at": found because "email"/"reach" is near.
        ("my email is mlopez at example.net", "mlopez at example.net"),
        ("Reach out via mlopez at mail.example.com, daily.", "mlopez at mail.example.com"),
    ],
)
def test_an_address_after_a_plain_at_is_found_whole(
    analyzer: PresidioAnalyzer, text: str, value: str
) -> None:
    """A first match from "me at ..." is refused; the address right after it is found."""
    [found] = analyzer.analyze_batch([text], {Entity.EMAIL_ADDRESS}, 0.4)
    assert len(found) == 1
    assert text[found[0].start :].startswith(value)


def test_validators() -> None:
    assert luhn_valid(CARD) and not luhn_valid("4111111111111112")
    assert card_prefix("4111") and card_prefix("2221") and not card_prefix("2020")
    assert iban_valid(IBAN) and not iban_valid("DE89370400440532013001")
    assert not iban_valid("XX89370400440532013000")
    assert ssn_plausible(SSN)
    assert not any(map(ssn_plausible, ["000123456", "219009999", "219090000", "666123456"]))
