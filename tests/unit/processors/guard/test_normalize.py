"""The analysis text and its offset map: what is folded, and that spans map back exactly."""

from __future__ import annotations

import random

import pytest

from processors.guard.normalize import Normalized, fold_clusters, is_invisible, normalize

INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff", "\u202e", "\ufe0f"]
FULL_WIDTH_OFFSET = 0xFF10 - ord("0")
ARABIC_INDIC_ZERO = 0x0660
DEVANAGARI_ZERO = 0x0966


def test_ascii_is_its_own_analysis_text() -> None:
    text = "Card 4111 1111 1111 1111, mail ana@example.com\tand\nmore"
    result = normalize(text)
    assert result.text == text
    assert result.identity
    assert result.to_original(5, 24) == (5, 24)


def test_already_normal_unicode_is_identity() -> None:
    result = normalize("José Müller paid 12 € in Zürich")
    assert result.identity
    assert result.text == "José Müller paid 12 € in Zürich"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("41\u200b11\u200c11\u200d11\u2060", "41111111"),
        ("ma\u00adria\ufeff", "maria"),
        ("\uff14\uff11\uff11\uff11", "4111"),
        ("ana\uff20example\uff0ecom", "ana@example.com"),
        ("\u0664\u0661\u0661\u0661", "4111"),  # Arabic-Indic
        ("\u06f4\u06f1", "41"),  # extended Arabic-Indic (Persian)
        ("\u096a\u0967", "41"),  # Devanagari
        ("219\u201309\u20139999", "219-09-9999"),  # en dashes
        ("219\u221209", "219-09"),  # minus sign
        ("203\u30020\u30020", "203.0.0"),  # ideographic full stops
        ("4111\u00b71111", "4111.1111"),  # middle dot
        ("12\u204434", "12/34"),  # fraction slash
        ("a\u00a0b\u3000c", "a b c"),  # no-break and ideographic spaces
        ("e\u0301", "\u00e9"),  # a base and its combining mark compose
        ("\ufb01le", "file"),  # a ligature expands
        ("x\u3164y\u2800z", "xyz"),  # Hangul filler, Braille blank
    ],
)
def test_folding(text: str, expected: str) -> None:
    assert normalize(text).text == expected


def test_a_span_covers_every_character_that_produced_it() -> None:
    text = "id \ufb01x 4\u200b1"
    result = normalize(text)
    assert result.text == "id fix 41"
    # "i" alone still maps to the whole ligature, which produced "fi".
    assert result.to_original(4, 5) == (3, 4)
    # A composed letter maps to its base and its combining mark.
    accented = normalize("cafe\u0301 x")
    assert accented.text == "caf\u00e9 x"
    assert accented.to_original(3, 4) == (3, 5)
    # "41" maps over the zero-width space between the digits.
    assert text[slice(*result.to_original(7, 9))] == "4\u200b1"


def test_invisible_characters_at_the_edges_are_left_out() -> None:
    text = "\u200b4111\u200b"
    result = normalize(text)
    assert result.to_original(0, 4) == (1, 5)


@pytest.mark.parametrize(("start", "end"), [(3, 3), (-1, 2), (0, 99)])
def test_spans_outside_the_analysis_text_are_refused(start: int, end: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        normalize("a\u200bbc").to_original(start, end)


def test_invisible_classification() -> None:
    assert all(is_invisible(c) for c in INVISIBLE)
    assert not any(is_invisible(c) for c in "a1 @.-\u0301\u00e9\u4e2d")


VALUES = [
    "4111 1111 1111 1111",
    "219-09-9999",
    "DE89 3704 0044 0532 0130 00",
    "203.0.113.7",
    "maria.garcia@example.com",
]
CONTEXTS = [
    "Please use {} for the refund.",
    "{}",
    "café au lait, naïve résumé: {} — thanks 😀",
    "第一 {} 第二",
]


def _disguise(rng: random.Random, value: str) -> str:
    """``value`` with invisible characters between its characters and digits in other scripts."""
    out = []
    for index, original in enumerate(value):
        char = original
        if char.isdigit():
            choice = rng.random()
            if choice < 0.2:
                char = chr(ord(char) + FULL_WIDTH_OFFSET)
            elif choice < 0.35:
                char = chr(ARABIC_INDIC_ZERO + int(char))
            elif choice < 0.45:
                char = chr(DEVANAGARI_ZERO + int(char))
        elif char == "@" and rng.random() < 0.5:
            char = "\uff20"
        out.append(char)
        if index < len(value) - 1:
            while rng.random() < 0.3:
                out.append(rng.choice(INVISIBLE))
    return "".join(out)


@pytest.mark.parametrize("seed", range(40))
def test_mapped_spans_cover_exactly_the_planted_value(seed: int) -> None:
    """Random disguises of a value in random contexts: its span maps back to exactly it."""
    rng = random.Random(seed)
    for _ in range(25):
        value = rng.choice(VALUES)
        disguised = _disguise(rng, value)
        before, after = rng.choice(CONTEXTS).split("{}")
        # Invisible characters around the value too: they are not part of it.
        before += "".join(rng.choice(INVISIBLE) for _ in range(rng.randrange(3)))
        after = "".join(rng.choice(INVISIBLE) for _ in range(rng.randrange(3))) + after
        text = before + disguised + after
        result = normalize(text)
        start = result.text.index(value)
        assert result.text.count(value) == 1
        mapped = result.to_original(start, start + len(value))
        assert mapped == (len(before), len(before) + len(disguised)), (seed, text)


@pytest.mark.parametrize("seed", range(10))
def test_the_map_is_monotonic_and_covers_every_visible_character(seed: int) -> None:
    rng = random.Random(1000 + seed)
    alphabet = "ab1 .@" + "".join(INVISIBLE) + "\uff11\u0661\u0301\ufb01\u3002\u00e9"
    text = "".join(rng.choice(alphabet) for _ in range(300))
    result = normalize(text)
    assert isinstance(result, Normalized)
    if result.starts is None or result.ends is None:
        pytest.fail("a text with invisible characters cannot be its own analysis text")
    assert len(result.starts) == len(result.ends) == len(result.text)
    assert list(result.starts) == sorted(result.starts)
    assert all(s < e for s, e in zip(result.starts, result.ends, strict=True))
    covered = {i for s, e in zip(result.starts, result.ends, strict=True) for i in range(s, e)}
    visible = {i for i, c in enumerate(text) if not is_invisible(c)}
    assert visible <= covered
    # Each output character comes from a visible character (and its marks) alone.
    assert not any(is_invisible(text[i]) for i in covered)


@pytest.mark.parametrize(
    "text",
    [
        "José Müller, café, naïve",
        "北京市朝阳区 100020 张伟",
        "नमस्ते दुनिया, क्षत्रिय",  # Devanagari with vowel signs and a virama
        "مَرْحَبًا بِالْعَالَمِ",  # Arabic with harakat
        "한국어 텍스트",
        "Ελληνικά και русский текст",
    ],
)
def test_the_shortcut_for_normal_text_agrees_with_folding_each_cluster(text: str) -> None:
    result = normalize(text)
    assert result.identity
    assert fold_clusters(text).text == result.text == text


def test_ascii_fast_path_is_cheap() -> None:
    """A pure-ASCII text costs one isascii(): the same object comes back as analysis text."""
    text = "plain ascii prompt " * 5000
    assert normalize(text).text is text
