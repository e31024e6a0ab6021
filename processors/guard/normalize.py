"""The text guard analyses: Unicode tricks undone, with an exact map back to the original.

PII written to slip past pattern recognizers hides in characters a reader does
not see or does not tell apart: a zero-width space inside a card number,
full-width digits, Arabic-Indic digits, a full-width at sign (U+FF20). ``normalize``
builds the analysis text the recognizers read, and ``Normalized.to_original``
maps a span found there back to the original characters, so that redaction
rewrites what the user actually sent.

Steps, applied to each original *cluster* (a character and the combining marks
that follow it, so that ``e`` + U+0301 composes and offsets stay mappable):

1. invisible characters are dropped: every format character (category Cf: zero-width
   space and joiners, word joiner, soft hyphen, BOM, bidi controls, tag characters),
   variation selectors, the combining grapheme joiner and the Hangul fillers (letters
   by category, blank on screen);
2. Unicode NFKC: full-width and other compatibility forms become their plain
   characters (full-width U+FF14 → ``4``, U+FF20 → ``@``, U+FF0E → ``.``; no-break and
   other spaces → a space; circled U+2460 → ``1``);
3. any other decimal digit (Arabic-Indic, Devanagari, Bengali, ...) becomes its
   ASCII digit (NFKC leaves them alone);
4. a few confusables that separate the parts of the values guard looks for become
   the ASCII separator they imitate (``CONFUSABLES`` lists them and says why).
   Letters that look alike across scripts (Cyrillic U+0430 for Latin ``a``) are left
   alone: folding them would turn Russian or Greek words into Latin gibberish for the
   NER model, and no structured recognizer reads letters other than e-mails' and IBANs'.

A pure-ASCII text is its own analysis text (no format character is ASCII and
NFKC leaves ASCII unchanged), so the common case costs one ``str.isascii``; so is
a text already in NFKC with none of the characters the other steps change (two
scans in C).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from streams.contracts.linear_regex import compile_linear

# Separators that look like the ASCII ones values are written with, and that NFKC
# does not fold. Each is folded because a recognizer reads the ASCII one:
CONFUSABLES = {
    # Dots: IDNA maps the ideographic full stops to "." in domain names (so a mail
    # client would deliver to them), and the middle dots/bullets are used to group
    # card digits ("4111·1111·...") and to spell dotted IPv4 addresses.
    "\u3002": ".",  # ideographic full stop (U+FF61 reaches it through NFKC)
    "\u00b7": ".",  # middle dot
    "\u2027": ".",  # hyphenation point
    "\u2219": ".",  # bullet operator
    "\u22c5": ".",  # dot operator
    "\u30fb": ".",  # katakana middle dot
    # Dashes and minus signs: SSNs, phone and card numbers are grouped with "-", and
    # word processors turn it into these.
    "\u2010": "-",  # hyphen (U+2011 reaches it through NFKC)
    "\u2012": "-",  # figure dash: the dash of digit groups
    "\u2013": "-",  # en dash
    "\u2014": "-",  # em dash
    "\u2015": "-",  # horizontal bar
    "\u2212": "-",  # minus sign
    # Slashes between digit groups: the fraction slash is what NFKC makes of "½" too.
    "\u2044": "/",  # fraction slash
    "\u2215": "/",  # division slash
}

# Blank on screen, yet not category Cf: dropped like the format characters.
_INVISIBLE_EXTRA = frozenset(
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul choseong/jungseong fillers, Hangul filler (and half-width)
    "\u2800"  # Braille pattern blank
)


# A character some step changes, for texts that are NFKC already: invisible ones,
# confusables, and decimal digits other than ASCII ([^\P{Nd}0-9]: a digit, not 0-9).
_NEEDS_WORK = compile_linear(
    r"[\p{Cf}\x{FE00}-\x{FE0F}\x{E0100}-\x{E01EF}"
    + "".join(sorted(_INVISIBLE_EXTRA | set(CONFUSABLES)))
    + r"]|[^\P{Nd}0-9]"
)


def is_invisible(char: str) -> bool:
    """True for a character guard drops from the analysis text (see the module doc)."""
    if char in _INVISIBLE_EXTRA:
        return True
    code = ord(char)
    if 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF:  # variation selectors
        return True
    return unicodedata.category(char) == "Cf"


def _is_mark(char: str) -> bool:
    return unicodedata.category(char)[0] == "M" and not is_invisible(char)


def _fold(cluster: str) -> str:
    """The analysis text of one cluster: NFKC, then digits and confusables to ASCII."""
    out = []
    for char in unicodedata.normalize("NFKC", cluster):
        if char < "\x80":
            out.append(char)
            continue
        digit = unicodedata.decimal(char, None)
        if digit is not None:
            out.append(str(digit))
        else:
            out.append(CONFUSABLES.get(char, char))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Normalized:
    """An analysis text and, for each of its characters, the original span it came from.

    ``starts[i]``/``ends[i]`` are the original span of the cluster that produced
    ``text[i]``; both are ``None`` when the text is the original itself.
    """

    original: str
    text: str
    starts: tuple[int, ...] | None = None
    ends: tuple[int, ...] | None = None

    @property
    def identity(self) -> bool:
        """True when the analysis text is the original (nothing to map)."""
        return self.starts is None

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The original span of ``text[start:end]`` (``start < end``).

        It runs from the first original character that produced ``text[start]``
        to the last one that produced ``text[end - 1]``, so it covers every
        original character in between, including the invisible ones dropped
        from the analysis text: redacting it leaves none of them behind.
        """
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"span [{start}, {end}) is outside the analysis text")
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def normalize(text: str) -> Normalized:
    """Return the analysis text of ``text`` with its offset map (see the module doc)."""
    if text.isascii():
        return Normalized(text, text)
    # Most non-English text needs nothing either; both checks run in C.
    if unicodedata.is_normalized("NFKC", text) and _NEEDS_WORK.search(text) is None:
        return Normalized(text, text)
    return fold_clusters(text)


def fold_clusters(text: str) -> Normalized:
    """``normalize`` without its shortcuts: each cluster folded, one at a time."""
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char < "\x80":
            # ASCII is its own analysis text; copy the whole run at once.
            end = index + 1
            while end < length and text[end] < "\x80":
                end += 1
            # The last ASCII character may carry combining marks ("e" + U+0301).
            if end < length and _is_mark(text[end]):
                end -= 1
            if end > index:
                parts.append(text[index:end])
                starts.extend(range(index, end))
                ends.extend(range(index + 1, end + 1))
                index = end
                continue
        if is_invisible(char):
            index += 1
            continue
        end = index + 1
        while end < length and _is_mark(text[end]):
            end += 1
        folded = _fold(text[index:end])
        parts.append(folded)
        starts.extend([index] * len(folded))
        ends.extend([end] * len(folded))
        index = end
    analysis = "".join(parts)
    if analysis == text:
        return Normalized(text, text)
    return Normalized(text, analysis, tuple(starts), tuple(ends))
