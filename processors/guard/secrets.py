"""Credentials found by detect-secrets' plugins, and private-key blocks redacted whole.

detect-secrets (Yelp) maintains detectors for credentials in many vendors' formats
(AWS, Azure storage, Artifactory, Discord, GitLab, npm, PyPI, SendGrid, Slack,
Square, Stripe, Telegram, Twilio, ...), for passwords in URLs (``https://user:pass@host``),
JWTs and for quoted values assigned to secret-sounding names. Guard runs those
detectors' own regular expressions rather than a list of its own, so a new release
of the library brings its new formats.

Plugins run on Python's ``re``, and some of their patterns backtrack. Each pattern
is compiled with RE2 when RE2 accepts it (linear time over the whole text); the ones
that need lookarounds or backreferences run on Python's ``re`` over bounded windows
of each line (``WINDOW`` characters, overlapping by ``OVERLAP``), so their cost is
at most linear in the text times a constant. Left out on purpose:

* ``IbmCloudIamDetector``: exponential on its own pattern (61 s on a 2,000-character
  line of ``=``), which no window size makes safe;
* ``IPPublicDetector``: IP addresses are guard's IP_ADDRESS entity, with its own policy;
* ``Base64HighEntropyString`` and ``HexHighEntropyString``: they flag any quoted random
  string (commit hashes, request ids, UUIDs), far too often in prompts; a secret-sounding
  name before a value is covered by ``KeywordDetector`` and guard's own
  ``AssignedSecretRecognizer``;
* ``PrivateKeyDetector``: only matches a header line; ``PemBlockRecognizer`` below
  reports the whole block.

Every finding is reported as API_KEY (guard's entity for any credential; its default
action is ``block``), on the secret value alone: ``https://user:<API_KEY>@host``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from detect_secrets.filters.heuristic import (
    is_not_alphanumeric_string,
    is_potential_uuid,
    is_sequential_string,
    is_templated_secret,
)
from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from processors.guard.policy import Entity
from processors.guard.text_recognizer import TextRecognizer
from streams.contracts.linear_regex import LinearPattern, LinearRegexError, compile_linear

PLUGINS: tuple[type[RegexBasedDetector], ...] = (
    ArtifactoryDetector,
    AWSKeyDetector,
    AzureStorageKeyDetector,
    BasicAuthDetector,
    CloudantDetector,
    DiscordBotTokenDetector,
    GitHubTokenDetector,
    GitLabTokenDetector,
    IbmCosHmacDetector,
    JwtTokenDetector,
    MailchimpDetector,
    NpmDetector,
    OpenAIDetector,
    PypiTokenDetector,
    SendGridDetector,
    SlackDetector,
    SoftlayerDetector,
    SquareOAuthDetector,
    StripeDetector,
    TelegramBotTokenDetector,
    TwilioKeyDetector,
)
KEYWORD_PLUGIN = "KeywordDetector"

#: Characters of a line one Python-``re`` pattern sees at a time, and the overlap between
#: consecutive windows (a keyword and its value are found when both fit in the overlap).
#: The slowest enabled pattern takes about a millisecond on a worst-case window.
WINDOW = 512
OVERLAP = 192

# Characters some plugins match around a value ("(?:\s|=|:|\"|^)AKC...(?:\s|\"|$)").
_EDGE = " \t\r\n=:\"'"
# detect-secrets' JWT pattern ends in a lazy `*?`, so it stops before the signature.
_JWT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.+/=")
_HAS_DIGIT = compile_linear(r"\d")


@dataclass(frozen=True)
class Detector:
    """One plugin pattern: RE2 over the whole text, or Python's ``re`` over windows."""

    plugin: str
    pattern: re.Pattern[str]
    linear: LinearPattern | None  # the RE2 twin of ``pattern`` when RE2 accepts it
    trigger: LinearPattern | None  # otherwise an RE2 pattern matching wherever ``pattern`` can
    group: int | None  # the value's group; None: see ``_value_span``

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """Each ``(start, end)`` of a secret value this pattern finds in ``text``."""
        if self.linear is not None:
            for match in self.linear.finditer(text):
                yield self._value_span(match, 0)
            return
        hits = [m.span() for m in self.trigger.finditer(text)] if self.trigger else None
        if hits == []:
            return
        seen: set[tuple[int, int]] = set()
        hit = 0
        for offset, window in windows(text):
            if hits is not None:
                # Only windows that touch a trigger match can hold a match.
                while hit < len(hits) and max(hits[hit][1], hits[hit][0] + 1) <= offset:
                    hit += 1
                if hit == len(hits):
                    return
                if hits[hit][0] >= offset + len(window):
                    continue
            for match in self.pattern.finditer(window):
                span = self._value_span(match, offset)
                if span not in seen:
                    seen.add(span)
                    yield span

    def _value_span(self, match: re.Match[str], offset: int) -> tuple[int, int]:
        if self.group is not None:
            start, end = match.span(self.group)
        else:
            # Plugins capture the value (`://user:(pass)@`), a vendor prefix
            # (`(ghp|gho)_...`, at the match's start) or a short infix (`glcbt-(ab_)?`):
            # the value is the first group past the start and longer than 3 characters.
            start, end = match.span(0)
            for index in range(1, self.pattern.groups + 1):
                first, last = match.span(index)
                if first > match.start(0) and last - first > 3:
                    start, end = first, last
                    break
        value = match.string[start:end]
        start += len(value) - len(value.lstrip(_EDGE))
        end -= len(value) - len(value.rstrip(_EDGE))
        return offset + start, offset + max(start, end)


def windows(text: str) -> Iterator[tuple[int, str]]:
    """``(offset, piece)`` covering each line in pieces of at most ``WINDOW`` characters."""
    line_start = 0
    for line in text.splitlines(keepends=True):
        step = WINDOW - OVERLAP
        position = 0
        while True:
            yield line_start + position, line[position : position + WINDOW]
            if position + WINDOW >= len(line):
                break
            position += step
        line_start += len(line)


# Lookarounds without nested groups, and backreferences (to an optional quote, in the
# plugins that use them).
_LOOKAROUND = re.compile(r"\(\?<?[=!](?:[^()\\]|\\.)*\)")
_BACKREFERENCE = re.compile(r"\\[1-9]")


def trigger_pattern(pattern: str) -> str:
    """A pattern RE2 can run that matches wherever ``pattern`` does, and more.

    Lookarounds only narrow a match, so dropping them widens it; a backreference to a
    quote group becomes "any one character, or none".
    """
    return _BACKREFERENCE.sub(".?", _LOOKAROUND.sub("", pattern))


def _linear(pattern: str, flags: int) -> LinearPattern | None:
    try:
        return compile_linear(pattern, ignore_case=bool(flags & re.IGNORECASE))
    except LinearRegexError:
        return None


def _detector(plugin: str, pattern: re.Pattern[str], group: int | None) -> Detector:
    linear = _linear(pattern.pattern, pattern.flags)
    # Lookarounds or backreferences: Python's re over windows, only where a trigger hits.
    trigger = None if linear else _linear(trigger_pattern(pattern.pattern), pattern.flags)
    return Detector(plugin=plugin, pattern=pattern, linear=linear, trigger=trigger, group=group)


def detectors() -> tuple[Detector, ...]:
    """Every enabled plugin pattern, each compiled once."""
    out = [
        _detector(plugin.__name__, pattern, None)
        for plugin in PLUGINS
        for pattern in plugin().denylist
    ]
    out += [
        _detector(KEYWORD_PLUGIN, pattern, group)
        for pattern, group in QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP.items()
    ]
    return tuple(out)


def plausible(plugin: str, value: str) -> bool:
    """detect-secrets' own false-positive heuristics, plus a digit for Artifactory's.

    Artifactory's ``AP[0-9A-F]...`` matches upper-case words ("APPLICATIONS"); its
    real keys always carry digits.
    """
    if len(value) < 4 or is_templated_secret(value) or is_potential_uuid(value):
        return False
    if is_sequential_string(value) or is_not_alphanumeric_string(value):
        return False
    if plugin == JwtTokenDetector.__name__:
        return bool(JwtTokenDetector.is_formally_valid(value))
    if plugin == ArtifactoryDetector.__name__:
        return _HAS_DIGIT.search(value) is not None
    return True


class DetectSecretsRecognizer(TextRecognizer):
    """A credential found by one of detect-secrets' plugins; the value's span only."""

    # Between guard's vendor formats (0.9-0.95) and its assigned-value rule (0.8): where
    # two report the same span, Presidio keeps one of equal scores by arrival order.
    SCORE = 0.85
    ENTITY = Entity.API_KEY
    NAME = "DetectSecretsRecognizer"

    def __init__(self) -> None:
        super().__init__()
        self.detectors = detectors()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report each plausible secret value once."""
        found: dict[tuple[int, int], None] = {}
        for detector in self.detectors:
            for start, value_end in detector.spans(text):
                end = value_end
                if detector.plugin == JwtTokenDetector.__name__:
                    end = _token_end(text, value_end)
                if start < end and plausible(detector.plugin, text[start:end]):
                    found.setdefault((start, end))
        return [self.result(start, end) for start, end in found]


def _token_end(text: str, start: int) -> int:
    """End of the run of JWT characters at ``start`` (a loop: RE2 with an offset copies)."""
    end = start
    while end < len(text) and text[end] in _JWT_CHARS:
        end += 1
    return end


# -- secrets stated in prose ----------------------------------------------------------
# "my password is xo#Fyv5z%?RFF?lj", "pwd=0fGeyg*!IA3vd": no quotes, symbols in the value;
# neither detect-secrets (quotes required in prose) nor AssignedSecretRecognizer (no
# symbols) reads all of it. The value must look generated, so "the password is expired" and
# "password is please-reset" stay readable.
_STATED_SECRET = compile_linear(
    r"(?i:\b(?:password|passwd|pwd|passphrase|passcode|secret|api\s+key|access\s+key"
    r"|secret\s+key|token)(?:\s+(?:is|was|would\s+be)\s+|\s*(?:=|:|->)\s*))"
    r"[\"'`]?(?P<value>[^\s\"'`]{8,128})"
)
_STATED_VALUE = _STATED_SECRET.groupindex["value"]
_TRAILING = ".,;:)]}>"
#: Character classes (lower, upper, digit, other) a stated value must mix, and the
#: Shannon entropy per character it must reach: generated passwords and keys do,
#: words and phrases do not.
MIN_CLASSES = 3
MIN_ENTROPY = 3.0


def looks_generated(value: str) -> bool:
    """True for a value that mixes character classes and has high entropy."""
    classes = (
        any(c.islower() for c in value),
        any(c.isupper() for c in value),
        any(c.isdigit() for c in value),
        any(not c.isalnum() for c in value),
    )
    if sum(classes) < MIN_CLASSES:
        return False
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return entropy >= MIN_ENTROPY


class StatedSecretRecognizer(TextRecognizer):
    """A generated-looking value after "password is", "token:", "api key =" in prose."""

    # Below AssignedSecretRecognizer's 0.8: both report `pwd=...` values of letters and
    # digits, and equal scores on one span would leave the pick to result order.
    SCORE = 0.75
    ENTITY = Entity.API_KEY
    NAME = "StatedSecretRecognizer"

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report each stated value that looks generated, without trailing punctuation."""
        results = []
        for match in _STATED_SECRET.finditer(text):
            value = match.group(_STATED_VALUE).rstrip(_TRAILING)
            if len(value) >= 8 and looks_generated(value):
                start = match.start(_STATED_VALUE)
                results.append(self.result(start, start + len(value)))
        return results


# -- private keys ---------------------------------------------------------------------
# From "-----BEGIN ... PRIVATE KEY-----" to its END line, or to the end of the text when
# the END line is missing (a truncated paste still holds key material).
_PEM_BEGIN = compile_linear(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")
_PEM_END = compile_linear(r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")


class PemBlockRecognizer(TextRecognizer):
    """A PEM private key, header, body and footer, as one finding."""

    SCORE = 1.0
    ENTITY = Entity.API_KEY
    NAME = "PemBlockRecognizer"

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report each block; a block without its END line runs to the end of the text."""
        # One pass of each pattern (RE2's binding copies the text on every call that
        # starts at an offset, so no search is restarted mid-text).
        ends = [match.end() for match in _PEM_END.finditer(text)]
        results = []
        covered = 0
        next_end = 0
        for begin in _PEM_BEGIN.finditer(text):
            if begin.start() < covered:
                continue
            while next_end < len(ends) and ends[next_end] <= begin.end():
                next_end += 1
            covered = ends[next_end] if next_end < len(ends) else len(text)
            results.append(self.result(begin.start(), covered))
        return results
