"""The recognizers guard runs: Presidio's own for the standard entities, plus secrets.

Guard builds its recognizer registry by hand instead of loading Presidio's
predefined set. Only the entities a policy can name are ever asked for, which
is what keeps Presidio's known false positives out (an e-mail's domain
reported as a URL, a card number as a bank or licence number, a date as NRP):
the recognizers that produce them are simply not there.

Nothing here reaches the network. Presidio's e-mail recognizer validates
domains with ``tldextract``, whose default extractor fetches the public
suffix list over HTTP the first time it runs; guard's e-mail recognizer uses
the snapshot bundled with ``tldextract`` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import phonenumbers.phonenumbermatcher
import tldextract
from presidio_analyzer import (
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

from processors.guard.encoded import EncodedTokenRecognizer
from processors.guard.evasion import evasion_recognizers
from processors.guard.names import GIVEN_NAMES
from processors.guard.ner import NameShapedSpacyRecognizer
from processors.guard.person_scripts import (
    FoldedNameRecognizer,
    LowerCaseNameRecognizer,
    ScriptNameRecognizer,
)
from processors.guard.policy import Entity
from processors.guard.secrets import (
    DetectSecretsRecognizer,
    PemBlockRecognizer,
    StatedSecretRecognizer,
)
from processors.guard.text_recognizer import LANGUAGE, TextRecognizer
from streams.contracts.linear_regex import compile_linear

# Offline public-suffix lookups: no cache directory, no suffix-list download, the
# snapshot shipped inside the tldextract wheel.
_OFFLINE_TLD = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, validating domains without any network access."""

    def validate_result(self, pattern_text: str) -> bool:
        """Accept a match only when its domain ends in a known public suffix."""
        return _OFFLINE_TLD(pattern_text).fqdn != ""


# phonenumbers' matcher looks for candidates with one region-independent pattern before
# it parses anything (PhoneNumberMatcher._find: no `_PATTERN.search` hit, no match, for
# every region). Checking it once lets a text without any candidate skip the eight
# per-region scans; a text with one is scanned exactly as before.
_PHONE_CANDIDATE: re.Pattern[str] | None = getattr(
    phonenumbers.phonenumbermatcher, "_PATTERN", None
)


class PrefilteredPhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer, skipped on texts with no phone-number candidate."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Return Presidio's results, or none when no candidate exists at all."""
        if _PHONE_CANDIDATE is not None and _PHONE_CANDIDATE.search(text) is None:
            return []
        # Presidio annotates nlp_artifacts as required, but the phone recognizer never reads it.
        results: list[RecognizerResult] = super().analyze(
            text,
            entities,
            nlp_artifacts,  # type: ignore[arg-type]
        )
        return results


# -- secrets ------------------------------------------------------------------------
# Vendor key formats are distinctive enough to score high on their own. They are
# matched case-sensitively (Presidio's default flags include IGNORECASE, which
# would let `akia...` or `GHP_...` through as keys and widen false positives).
_SECRET_FLAGS = re.DOTALL | re.MULTILINE

SECRET_PATTERNS: tuple[Pattern, ...] = (
    Pattern("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", 0.95),
    Pattern("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}", 0.95),
    Pattern("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b", 0.95),
    Pattern("github_token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b", 0.95),
    Pattern("github_fine_grained_pat", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b", 0.95),
    Pattern("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 0.9),
    Pattern("stripe_key", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b", 0.95),
    Pattern("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0.9),
    Pattern("private_key_block", r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----", 0.95),
)


class VendorSecretRecognizer(PatternRecognizer):
    """API keys and tokens in the formats their vendors document."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity=Entity.API_KEY.value,
            patterns=list(SECRET_PATTERNS),
            name="VendorSecretRecognizer",
            supported_language=LANGUAGE,
            global_regex_flags=_SECRET_FLAGS,
        )


# `api_key = "..."`, `password: ...`, `Authorization: Bearer ...`: the value after a
# name that says it is secret. Only the value is reported, so the redacted text keeps
# the name (`api_key=<API_KEY>`) and a reader still understands the prompt.
# RE2 (linear time): a keyword followed by thousands of spaces cannot stall guard.
_ASSIGNED_SECRET = compile_linear(
    r"\b(?:api[_-]?key|apikey|x-api-key|secret(?:[_-]?key)?|client[_-]?secret|access[_-]?token"
    r"|auth[_-]?token|refresh[_-]?token|token|password|passwd|pwd|aws_secret_access_key"
    r"|private[_-]?key|bearer)"
    r"[\"']?\s*(?:[:=]|=>|\s)\s*[\"']?"
    r"(?P<value>[A-Za-z0-9_\-./+=~]{12,256})",
    ignore_case=True,
)
_VALUE = _ASSIGNED_SECRET.groupindex["value"]
_HAS_DIGIT = compile_linear(r"\d")
_HAS_ALPHA = compile_linear(r"[A-Za-z]")


class AssignedSecretRecognizer(TextRecognizer):
    """A value assigned to a name such as ``api_key`` or ``password``.

    The value must mix letters and digits and be at least 12 characters, so
    that ``password: please-reset`` or ``token expired`` stay readable.
    """

    SCORE = 0.8
    ENTITY = Entity.API_KEY
    NAME = "AssignedSecretRecognizer"

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report the value part of each ``name = value`` whose name says it is secret."""
        results = []
        for match in _ASSIGNED_SECRET.finditer(text):
            start, end = match.span(_VALUE)
            value = text[start:end]
            if not (_HAS_DIGIT.search(value) and _HAS_ALPHA.search(value)):
                continue
            results.append(self.result(start, end))
        return results


# -- people named by a cue ---------------------------------------------------------------
# The small spaCy model misses many names outside its training data (it finds about
# seven in ten of the test corpus's names from many cultures). Prompts name people after
# a few very common cues, so a capitalised name right after one of them is reported
# too: greetings and sign-offs, "my name is", honorifics, and role nouns such as
# "customer" or "applicant". The cue itself is never part of the finding.
NAME_PARTICLES = r"(?:de|del|della|der|den|van|von|da|di|du|la|le|al|el|bin|ibn|ben)"
# Literal characters, not \u escapes: RE2 reads neither \u00e0 nor Unicode \b.
_LOWER = "a-z\u00e0-\u00ff'\u2019"
_LETTER = "A-Za-z\u00e0-\u00ff"
NAME_TOKEN = rf"[A-Z][{_LOWER}]*(?:[A-Z][{_LOWER}]+)*(?:-[{_LETTER}]+)*"
PERSON_NAME = rf"{NAME_TOKEN}(?:[ ]+(?:{NAME_PARTICLES}[ ]+)?{NAME_TOKEN}){{0,3}}"
_PERSON_CUE = compile_linear(
    r"(?:"
    r"\b(?i:my\s+name\s+is|my\s+name's|i\s+am|i'm|name\s*:|signed\s*:?)\s+"
    r"|\b(?i:dear|hi|hello|hey|regards|thanks|thank\s+you|best|cheers|sincerely)\s*,?\s+"
    r"|\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam)\.?\s+"
    r"|\b(?i:customer|client|applicant|employee|patient|candidate|colleague|caller|sender"
    r"|recipient|passenger|guest|tenant|contact|ask|invite|call\s+back|cc)\s+"
    r")"
    rf"(?P<name>{PERSON_NAME})"
    # Python's Unicode \b after the name: RE2's \b is ASCII-only ("Jos|é").
    r"(?:$|[^\pL\pN_])"
)
_NAME = _PERSON_CUE.groupindex["name"]
# Capitalised words that follow those cues without being names.
NOT_NAMES = frozenset(
    {
        "I",
        "I'm",
        "I've",
        "I'd",
        "I'll",
        "I\u2019m",
        "A",
        "An",
        "The",
        "This",
        "That",
        "These",
        "Those",
        "It",
        "We",
        "You",
        "They",
        "He",
        "She",
        "Team",
        "All",
        "Everyone",
        "Sir",
        "Madam",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
        "Support",
        "Sales",
        "Customer",
        "Please",
        "Thanks",
        "Thank",
        "Regards",
        "Best",
        "Hi",
        "Hello",
        "Dear",
        "Yes",
        "No",
        "Ok",
        "OK",
        "Python",
        "Java",
        "Spanish",
        "English",
        "French",
        "German",
        "Chinese",
        "Japanese",
        "Google",
        "Microsoft",
        "Amazon",
        "Apple",
        "Linux",
        "Windows",
    }
)


class PersonCueRecognizer(TextRecognizer):
    """A capitalised name after a cue that introduces a person ("Dear", "my name is", ...).

    Scored below the NER model (0.6 against 0.85) so that where both find the same
    name, the two spans are merged and the NER one leads.
    """

    SCORE = 0.6
    ENTITY = Entity.PERSON
    NAME = "PersonCueRecognizer"

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report each cue-introduced name, without the cue."""
        results = []
        for match in _PERSON_CUE.finditer(text):
            start, end = match.span(_NAME)
            words = text[start:end].split()
            while words and words[0] in NOT_NAMES:
                start += len(words.pop(0)) + 1
                start = _skip_spaces(text, start)
            while words and words[-1] in NOT_NAMES:
                end = _trim_right(text, start, end - len(words.pop()))
            if not words or start >= end:
                continue
            results.append(self.result(start, end))
        return results


def _skip_spaces(text: str, index: int) -> int:
    while index < len(text) and text[index] == " ":
        index += 1
    return index


def _trim_right(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1] == " ":
        end -= 1
    return end


# A run of capitalised words (with name particles between them): where given names are
# looked for.
_NAME_RUN = compile_linear(rf"{NAME_TOKEN}(?:[ ]+(?:{NAME_PARTICLES}[ ]+)?{NAME_TOKEN})+")
_RUN_WORD = compile_linear(rf"{NAME_TOKEN}|{NAME_PARTICLES}")


class GivenNameRecognizer(TextRecognizer):
    """A common given name followed by a capitalised surname, e.g. "Ananya Iyer".

    Complements the NER model where it is weakest: names from outside its
    training data. A lone given name is not reported (too often a word).
    """

    SCORE = 0.5
    ENTITY = Entity.PERSON
    NAME = "GivenNameRecognizer"
    MAX_WORDS = 3

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report given name + surname(s) inside each run of capitalised words."""
        results = []
        for run in _NAME_RUN.finditer(text):
            words = [
                (m.start() + run.start(), m.end() + run.start(), m.group(0))
                for m in _RUN_WORD.finditer(run.group(0))
            ]
            span = _given_name_span(words, self.MAX_WORDS)
            if span is None:
                continue
            results.append(self.result(span[0], span[1]))
        return results


def _given_name_span(words: list[tuple[int, int, str]], limit: int) -> tuple[int, int] | None:
    """From the first given name, up to ``limit`` name words; None without a surname."""
    for index, (start, _, word) in enumerate(words):
        if word not in GIVEN_NAMES:
            continue
        tail = []
        for later in words[index + 1 : index + limit]:
            if later[2] in NOT_NAMES:
                break
            tail.append(later)
        while tail and not tail[-1][2][:1].isupper():  # do not end on a particle
            tail.pop()
        if tail:
            return start, tail[-1][1]
        return None
    return None


# -- the registry -------------------------------------------------------------------
@dataclass(frozen=True)
class RecognizerSet:
    """The registry plus the entity names it was built for."""

    registry: RecognizerRegistry
    entities: tuple[str, ...]


def build_registry(ner_strength: float = 0.85) -> RecognizerSet:
    """Build a registry with exactly one recognizer (or family) per policy entity type.

    The PERSON recognizer reads the NER model's entities from the NLP artifacts;
    every other recognizer works on the text alone.
    """
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    # Every recognizer that reads the text alone also reads inside encoded tokens.
    text_only: list[EntityRecognizer] = [
        PersonCueRecognizer(),
        GivenNameRecognizer(),
        LowerCaseNameRecognizer(),
        FoldedNameRecognizer(),
        ScriptNameRecognizer(),
        OfflineEmailRecognizer(supported_language=LANGUAGE),
        PrefilteredPhoneRecognizer(supported_language=LANGUAGE),
        CreditCardRecognizer(supported_language=LANGUAGE),
        IbanRecognizer(supported_language=LANGUAGE),
        UsSsnRecognizer(supported_language=LANGUAGE),
        IpRecognizer(supported_language=LANGUAGE),
        VendorSecretRecognizer(),
        AssignedSecretRecognizer(),
        DetectSecretsRecognizer(),
        StatedSecretRecognizer(),
        PemBlockRecognizer(),
    ]
    recognizers: list[EntityRecognizer] = [
        NameShapedSpacyRecognizer(
            supported_language=LANGUAGE,
            supported_entities=[Entity.PERSON.value],
            ner_strength=ner_strength,
            name="SpacyRecognizer",
        ),
        *text_only,
        EncodedTokenRecognizer(text_only),
    ]
    # Separators, spellings and case Presidio's patterns miss (see evasion.py).
    recognizers += evasion_recognizers(lambda address: _OFFLINE_TLD(address).fqdn != "")
    for recognizer in recognizers:
        registry.add_recognizer(recognizer)
    return RecognizerSet(registry=registry, entities=tuple(e.value for e in Entity))


def recognizer_name(result: RecognizerResult) -> str:
    """Return the name of the recognizer that produced ``result`` (for the finding)."""
    metadata: dict[str, Any] = result.recognition_metadata or {}
    return str(metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY, "unknown"))
