"""Recognizers for values written to slip past Presidio's patterns.

They read the analysis text (``normalize.py`` has already undone invisible
characters, full-width and foreign digits and look-alike separators) and add
what Presidio's own recognizers miss there:

* card numbers grouped with dots, slashes, underscores or several spaces
  (``4111.1111.1111.1111``), still Luhn-validated;
* SSNs grouped the same way (``219/09/9999``, ``219  09  9999``, ``219.09 9999``),
  with Presidio's own invalidation rules, when an SSN context word is near;
* IBANs in lower case or grouped oddly (``de89 370 400 440 532 013 000``), still
  validated by country format and mod-97 checksum;
* IPv4 addresses written defanged (``203[.]0[.]113[.]7``, ``203 dot 0 dot 113 dot 7``);
* e-mail addresses spelled out or bracketed (``maria dot garcia at example dot com``,
  ``maria[at]example[dot]com``), validated like Presidio's (a known public suffix).

Each reports only what the stock recognizer of its entity does not, so a value
Presidio already finds keeps its finding (recognizer name and score) unchanged.
Every pattern runs on RE2 (linear time); the short candidates they return are
validated in Python.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    LocalRecognizer,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    IbanRecognizer,
    UsSsnRecognizer,
)
from presidio_analyzer.predefined_recognizers.generic.iban_patterns import regex_per_country

from processors.guard.policy import Entity
from streams.contracts.linear_regex import LinearPattern, compile_linear

LinearMatch = Any
"""A match of a compiled RE2 pattern (``group``, ``span``, ``start`` as in ``re``)."""

LANGUAGE = "en"
MAX_SCORE = EntityRecognizer.MAX_SCORE


class _EvasionRecognizer(LocalRecognizer):
    """A recognizer of one entity that reads the analysis text alone."""

    NAME: str
    ENTITY: Entity
    # Words near a finding that raise its score (Presidio's context enhancement).
    CONTEXT: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__(
            supported_entities=[self.ENTITY.value],
            name=self.NAME,
            supported_language=LANGUAGE,
            context=list(self.CONTEXT),
        )

    def load(self) -> None:
        """Nothing to load: the patterns are module constants."""

    def result(self, start: int, end: int, score: float) -> RecognizerResult:
        """A finding of this recognizer's entity at ``text[start:end]``."""
        return RecognizerResult(
            entity_type=self.ENTITY.value,
            start=start,
            end=end,
            score=score,
            # Context enhancement records the supporting word here (guard drops it later).
            analysis_explanation=AnalysisExplanation(recognizer=self.NAME, original_score=score),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.NAME,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


# Python's re is used only on the short candidates RE2 returned (at most a few dozen
# characters), to ask whether Presidio's own pattern would have found the value.
def _stock_pattern(
    recognizer: type[CreditCardRecognizer] | type[IbanRecognizer],
) -> re.Pattern[str]:
    return re.compile(recognizer.PATTERNS[0].regex)


# -- card numbers ---------------------------------------------------------------------
# Runs of digit groups (3 to 6 digits, as cards are printed) joined by up to three
# separator characters. A card is looked for at every group of a run, so numbers
# written in front of it cannot hide it.
_SEPARATORS = r"[ ./_\-]"
_CARD_RUN = compile_linear(rf"\b\d{{3,6}}(?:{_SEPARATORS}{{1,3}}\d{{3,6}})+\b")
# Python's re is linear on a plain digit run, and cheaper per match than RE2's wrapper.
_DIGIT_GROUP = re.compile(r"[0-9]+")
_STOCK_CARD = _stock_pattern(CreditCardRecognizer)


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # the Luhn value of each doubled digit


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` passes the Luhn checksum (the card-number check digit)."""
    backwards = digits[::-1]
    total = sum(map(int, backwards[0::2])) + sum(_DOUBLED[int(c)] for c in backwards[1::2])
    return total % 10 == 0


def card_prefix(digits: str) -> bool:
    """True for the issuer prefixes of the major card networks.

    Amex, Diners and JCB start with 3, Visa with 4, Mastercard with 51-55 and
    2221-2720, Discover, UnionPay and Maestro with 5 or 6.

    A year list such as ``2020/2021/2022/2023`` starts with none of them.
    """
    return digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720


class SeparatedCardRecognizer(_EvasionRecognizer):
    """Luhn-valid card numbers whose digit groups Presidio's pattern does not accept."""

    NAME = "SeparatedCardRecognizer"
    ENTITY = Entity.CREDIT_CARD

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report, left to right, the longest 13-19 digit Luhn-valid run of two groups or more."""
        results = []
        for run in _CARD_RUN.finditer(text):
            groups = [
                (run.start() + g.start(), run.start() + g.end(), g.group(0))
                for g in _DIGIT_GROUP.finditer(run.group(0))
            ]
            first = 0
            while first < len(groups) - 1:
                span = _card_at(groups, first)
                if span is None:
                    first += 1
                    continue
                last = span
                start, end = groups[first][0], groups[last][1]
                if not _STOCK_CARD.fullmatch(text[start:end]):  # else Presidio reports it
                    results.append(self.result(start, end, MAX_SCORE))
                first = last + 1
        return results


def _card_at(groups: list[tuple[int, int, str]], first: int) -> int | None:
    """The index of the last group of the longest card number starting at ``groups[first]``."""
    digits = groups[first][2]
    if not card_prefix(digits):
        return None
    best = None
    for index in range(first + 1, len(groups)):
        digits += groups[index][2]
        if len(digits) > 19:
            break
        if len(digits) >= 13 and luhn_valid(digits):
            best = index
    return best


# -- US social security numbers -------------------------------------------------------
_SSN = compile_linear(
    rf"\b(\d{{3}})({_SEPARATORS}{{1,3}})(\d{{2}})({_SEPARATORS}{{1,3}})(\d{{4}})\b"
)
# Presidio's SSN5 pattern already accepts one "-", " " or "." between the groups.
_STOCK_SSN_SEPARATORS = frozenset({"-", " ", "."})
_NOT_SSNS = frozenset({"123456789", "987654320", "078051120"})


def ssn_plausible(digits: str) -> bool:
    """Presidio's US SSN invalidation rules, as a positive check on nine digits."""
    return not (
        len(set(digits)) == 1
        or digits[3:5] == "00"
        or digits[5:] == "0000"
        or digits[:3] in ("000", "666")
        or digits in _NOT_SSNS
    )


class SeparatedSsnRecognizer(_EvasionRecognizer):
    """SSNs grouped 3-2-4 with separators Presidio's pattern does not accept.

    ``219/09/9999``, ``219  09  9999`` or ``219.09 9999`` look like any other
    reference (``Tracking code 924/23/6014``), so the finding scores 0.3, below the
    default threshold, and counts when Presidio's SSN context words ("SSN", "social
    security") are near it: context enhancement adds 0.35.
    """

    NAME = "SeparatedSsnRecognizer"
    ENTITY = Entity.US_SSN
    CONTEXT = tuple(UsSsnRecognizer.CONTEXT)
    SCORE = 0.3

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report each plausible 3-2-4 group that Presidio's SSN5 pattern would not."""
        results = []
        for match in _SSN.finditer(text):
            first, second = match.group(2), match.group(4)
            if first == second and first in _STOCK_SSN_SEPARATORS:
                continue
            if not ssn_plausible(match.group(1) + match.group(3) + match.group(5)):
                continue
            results.append(self.result(match.start(), match.end(), self.SCORE))
        return results


# -- IBANs --------------------------------------------------------------------------------
# Country code, check digits, then letters and digits in groups of any size joined by
# up to two separators; 34 characters at most without the separators.
_IBAN = compile_linear(r"\b[A-Za-z]{2}\d{2}(?:[ .\-]{0,2}[A-Za-z0-9]){10,30}\b")
_ALNUM = compile_linear(r"[A-Za-z0-9]")
_STOCK_IBAN = _stock_pattern(IbanRecognizer)
_COUNTRY_FORMATS = {code: re.compile(pattern) for code, pattern in regex_per_country.items()}


def iban_valid(compact: str) -> bool:
    """True when ``compact`` (upper case, no separators) has its country's format and checksum."""
    country = _COUNTRY_FORMATS.get(compact[:2])
    if country is None or country.fullmatch(compact) is None:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


class FlexibleIbanRecognizer(_EvasionRecognizer):
    """IBANs in any case and grouping, validated by country format and checksum."""

    NAME = "FlexibleIbanRecognizer"
    ENTITY = Entity.IBAN_CODE

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report the longest valid IBAN at the start of each candidate."""
        results = []
        for match in _IBAN.finditer(text):
            candidate = match.group(0)
            ends = [m.end() for m in _ALNUM.finditer(candidate)]
            compact = "".join(c for c in candidate if c.isalnum()).upper()
            # Longest first: the candidate may run on into a following word.
            for length in range(min(len(compact), 34), 14, -1):
                end = ends[length - 1]
                if end < len(candidate) and candidate[end].isalnum():
                    continue  # would end inside a group
                if iban_valid(compact[:length]):
                    value = candidate[:end]
                    if not (value.isupper() and _STOCK_IBAN.fullmatch(value)):
                        results.append(self.result(match.start(), match.start() + end, MAX_SCORE))
                    break
        return results


# -- defanged IPv4 ----------------------------------------------------------------------------
# A bare dot between spaces is not accepted: "sections 1 . 2 . 3 . 4" is ordinary text.
_IP_DOT = r"(?:\s*[\[\(\{]\s*(?:\.|dot)\s*[\]\)\}]\s*|\s+dot\s+)"
_DEFANGED_IPV4 = compile_linear(
    rf"\b(\d{{1,3}}){_IP_DOT}(\d{{1,3}}){_IP_DOT}(\d{{1,3}}){_IP_DOT}(\d{{1,3}})\b",
    ignore_case=True,
)


class DefangedIpRecognizer(_EvasionRecognizer):
    """IPv4 addresses with their dots bracketed or spelled: ``10[.]0[.]0[.]1``, ``10 dot 0 ...``.

    Scored as Presidio's IPv4 pattern.
    """

    NAME = "DefangedIpRecognizer"
    ENTITY = Entity.IP_ADDRESS
    SCORE = 0.6

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report each four-octet address whose octets are all valid."""
        results = []
        for match in _DEFANGED_IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(".".join(match.groups()))
            except ValueError:
                continue
            results.append(self.result(match.start(), match.end(), self.SCORE))
        return results


# -- spelled-out and bracketed e-mail addresses -----------------------------------------------
_OPEN, _CLOSE = r"[\[\(\{<]", r"[\]\)\}>]"
_DOT_SPELLED = rf"(?:\s*{_OPEN}\s*(?:dot|\.)\s*{_CLOSE}\s*|\s+dot\s+)"
_DOT = rf"(?:{_DOT_SPELLED}|\.)"
_AT_WORD = r"\s+at\s+"
_AT_OTHER = rf"\s*{_OPEN}\s*(?:at|@)\s*{_CLOSE}\s*|\s*@\s*"
_LOCAL_ATOM = r"[A-Za-z0-9_%+\-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"


def _email_pattern(at: str) -> LinearPattern:
    return compile_linear(
        rf"(?P<local>{_LOCAL_ATOM}(?:{_DOT}{_LOCAL_ATOM}){{0,8}})"
        rf"(?P<at>{at})"
        rf"(?P<domain>{_LABEL}(?:{_DOT}{_LABEL}){{1,8}})\b",
        ignore_case=True,
    )


# Two patterns, so that a plain "at" before an address ("me at maria[at]example[dot]com")
# cannot take the place of the address's own "at".
_EMAIL_MARKED = _email_pattern(_AT_OTHER)
_EMAIL_WORD_AT = _email_pattern(_AT_WORD)
# How far past a refused "me at" the address it may hide is looked for.
_RETRY_WINDOW = 1024
_RETRIES = 3
_DOT_SPLIT = compile_linear(_DOT, ignore_case=True)
# Words that precede a plain "at" in ordinary English ("meet at noon dot com", "look
# at it dot net"): a local part that is one of them is not read as an address.
_WORDS_BEFORE_AT = """
    a aim aimed am an and are arrive arrived arriving bad be been being best better
    call come good here home is it laugh laughed look looked looking looks me meet
    meeting met not or point pointed see seen smile smiled stare stared stay stayed
    staying stop stopped the them there this those us was we were work worked
    working works you
"""
ENGLISH_BEFORE_AT = frozenset(_WORDS_BEFORE_AT.split())
_SPELLED_DOT = compile_linear(_DOT_SPELLED, ignore_case=True)
_LOCAL_SIGNS = compile_linear(r"[._%+\-0-9]")
_LOCAL_GROUP = _EMAIL_MARKED.groupindex["local"]
_DOMAIN_GROUP = _EMAIL_MARKED.groupindex["domain"]


class SpelledEmailRecognizer(_EvasionRecognizer):
    """E-mail addresses with "at" and "dot" spelled out, bracketed or spaced.

    The address is rebuilt (``maria dot garcia at example dot com`` →
    ``maria.garcia@example.com``) and kept only when its domain ends in a known
    public suffix, as for Presidio's e-mail recognizer. A plain word ``at`` is
    ordinary English ("I work at example.com"), so it is never read after a few
    words that usually precede "at"; the address scores 0.85 when its local part
    cannot be a word (a dot, digit, ``_``, ``+`` or ``-``: ``nathan.martinez25 at
    example.org``) or its domain's dots are spelled or bracketed, and 0.3 otherwise
    (``mlopez at example.net`` reads like "more at example.net"), which counts only
    with a context word such as "email", "contact" or "reach". Bracketed forms and
    an ``@`` score the maximum, like a validated e-mail.
    """

    NAME = "SpelledEmailRecognizer"
    ENTITY = Entity.EMAIL_ADDRESS
    WORD_SCORE = 0.85
    CONTEXT_SCORE = 0.3
    CONTEXT = ("email", "mail", "contact", "reach", "write", "address")

    def __init__(self, known_domain: Callable[[str], bool]) -> None:
        super().__init__()
        # The offline public-suffix check of recognizers.py, passed in to keep one copy.
        self._known_domain = known_domain

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report each spelled address whose rebuilt form has a known domain."""
        results = []
        for match in _EMAIL_MARKED.finditer(text):
            found = self._address_end(text, match, word_at=False)
            if found is not None:
                results.append(self.result(match.start(), *found))
        for match in _EMAIL_WORD_AT.finditer(text):
            address = self._word_at_address(text, match)
            if address is not None:
                results.append(self.result(*address))
        return results

    def _word_at_address(self, text: str, match: LinearMatch) -> tuple[int, int, float] | None:
        """Span and score of the address ``match`` or, if refused, of one starting at its domain.

        "me at maria dot garcia at example dot com": the first "at" is refused (its
        local part is a word), and the address begins where that match's domain does.
        """
        offset, current = 0, text
        for _ in range(_RETRIES):
            found = self._address_end(current, match, word_at=True)
            if found is not None:
                return offset + match.start(), offset + found[0], found[1]
            domain = match.start(_DOMAIN_GROUP)
            current = current[domain : domain + _RETRY_WINDOW]
            offset += domain
            match = _EMAIL_WORD_AT.match(current)
            if match is None:
                return None
        return None

    def _address_end(
        self, text: str, match: LinearMatch, *, word_at: bool
    ) -> tuple[int, float] | None:
        """Where the address ``match`` starts ends, and its score; None when it is not one."""
        local_part, domain_part = match.group(_LOCAL_GROUP, _DOMAIN_GROUP)
        if word_at and local_part.lower() in ENGLISH_BEFORE_AT:
            return None
        local = _DOT_SPLIT.sub(".", local_part)
        start, end = match.span()
        if text[start:end] == f"{local}@{_DOT_SPLIT.sub('.', domain_part)}":
            return None  # a plain address: Presidio's recognizer reports it
        domain_start = match.start(_DOMAIN_GROUP)
        end = self._known_end(local, domain_part, domain_start)
        if end is None:
            return None
        if not word_at:
            return end, MAX_SCORE
        # "nathan.martinez25 at example.org" or "maria at example dot com": an address.
        if _LOCAL_SIGNS.search(local) or _SPELLED_DOT.search(text[domain_start:end]):
            return end, self.WORD_SCORE
        # "mlopez at example.net" reads like "more at example.net": it needs context.
        return end, self.CONTEXT_SCORE

    def _known_end(self, local: str, part: str, offset: int) -> int | None:
        """Where the longest known domain in ``part`` ends, or None.

        Longest first: the last labels may be words that follow the address
        ("... at example dot com dot and then").
        """
        labels = _labels(part, offset)
        for count in range(len(labels), 1, -1):
            end = labels[count - 1][2]
            domain = ".".join(label for label, _, _ in labels[:count])
            if self._known_domain(f"{local}@{domain}"):
                return end
        return None


def _labels(part: str, offset: int) -> list[tuple[str, int, int]]:
    """The labels of a dotted part (dots literal, spelled or bracketed), with their offsets."""
    labels = []
    position = 0
    for separator in _DOT_SPLIT.finditer(part):
        labels.append(
            (part[position : separator.start()], offset + position, offset + separator.start())
        )
        position = separator.end()
    labels.append((part[position:], offset + position, offset + len(part)))
    return labels


def evasion_recognizers(known_domain: Callable[[str], bool]) -> list[EntityRecognizer]:
    """The recognizers of this module, for ``build_registry``.

    ``known_domain`` says whether an e-mail address ends in a known public suffix.
    """
    return [
        SeparatedCardRecognizer(),
        SeparatedSsnRecognizer(),
        FlexibleIbanRecognizer(),
        DefangedIpRecognizer(),
        SpelledEmailRecognizer(known_domain),
    ]
