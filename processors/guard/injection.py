"""Prompt-injection scoring: known attack phrasings, and similarity to known attacks.

Two signals, each in [0, 1]:

* patterns (``schemas/guard/injection_patterns.yaml``): regular expressions
  for phrasings attacks keep using, each with a weight. They run on several
  views of the prompt (normalised, de-leeted, de-spaced, decoded base64, and
  rot13 or reversed when the prompt mentions that), so
  ``1gn0re previous instructions`` or the same sentence in base64 still
  match; an instruction that only shows up after de-obfuscation also counts
  as a hit of its own, since hiding it is a signal. Distinct hits combine as
  a noisy-OR: ``1 - prod(1 - weight)``.
* similarity (``schemas/guard/injection_exemplars.yaml``): the highest cosine
  between the prompt's embedding and curated attack exemplars, mapped
  linearly from [floor, ceiling] onto [0, 1]. Needs an ``Embedder``; without
  one (``embedder=None``) the score is patterns only.

The two are combined the same way, ``1 - (1 - p)(1 - s)``, and the rule
reported is the pattern or exemplar that contributed the most.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from processors.guard.embedder import Embedder, Matrix, normalize_rows
from streams.contracts.linear_regex import LinearPattern, LinearRegexError, compile_linear
from streams.errors import ConfigurationError

OBFUSCATION_RULE = "obfuscated_instruction"


class InjectionConfigError(ConfigurationError, ValueError):
    """A pattern or exemplar file is invalid; the message says what to fix."""


# -- files --------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatternSpec(_Strict):
    r"""One attack phrasing: a case-insensitive regex with a weight and its reason.

    Regexes run on RE2 (linear time, see ``streams/contracts/linear_regex.py``): no
    lookarounds or backreferences, ASCII ``\\b``/``\\w`` (``[\\pL\\pN_]`` for
    letters of any script). ``unless_followed_by`` stands in for a negative
    lookahead: a match counts only when that regex does not match right after it.
    """

    id: str = Field(pattern=r"^[a-z0-9_]+$")
    category: str
    weight: float = Field(gt=0.0, le=1.0)
    rationale: str = Field(min_length=10)
    regex: str
    unless_followed_by: str | None = None

    @field_validator("regex", "unless_followed_by")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_linear(value)
            except LinearRegexError as exc:
                raise ValueError(f"does not compile: {exc}") from exc
        return value


class _PatternFile(_Strict):
    version: str
    obfuscation_weight: float = Field(0.5, ge=0.0, le=1.0)
    patterns: list[PatternSpec] = Field(min_length=1)


class ExemplarSpec(_Strict):
    """One attack exemplar, with where its phrasing class comes from."""

    id: str = Field(pattern=r"^[a-z0-9_-]+$")
    category: str
    text: str = Field(min_length=10)
    provenance: str = Field(min_length=20)


class _Scoring(_Strict):
    floor: float = Field(0.45, ge=-1.0, le=1.0)
    ceiling: float = Field(0.85, ge=-1.0, le=1.0)


class _ExemplarFile(_Strict):
    version: str
    scoring: _Scoring = _Scoring()
    exemplars: list[ExemplarSpec] = Field(min_length=1)


def _load(path: Path, model: type[BaseModel]) -> Any:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = model.model_validate(data)
    except OSError as exc:
        raise InjectionConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InjectionConfigError(f"{path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InjectionConfigError(f"{path} is invalid:\n{problems}") from None
    ids = [item.id for item in getattr(spec, "patterns", getattr(spec, "exemplars", []))]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InjectionConfigError(
            f"{path}: duplicate ids {', '.join(duplicates)}; give each entry its own id"
        )
    return spec


# -- views of a prompt ----------------------------------------------------------------
# Cyrillic and Greek letters that look like Latin ones (written as escapes so the source
# shows what they are), used to dodge keyword filters.
_HOMOGLYPHS = str.maketrans(
    {
        "\u0430": "a",
        "\u0435": "e",
        "\u043e": "o",
        "\u0440": "p",
        "\u0441": "c",
        "\u0443": "y",
        "\u0445": "x",
        "\u0456": "i",
        "\u0458": "j",
        "\u0455": "s",
        "\u0501": "d",
        "\u0261": "g",
        "\u03bf": "o",
        "\u03b1": "a",
        "\u03b5": "e",
        "\u03b9": "i",
        "\u03bd": "v",
        "\u03c4": "t",
        "\u03ba": "k",
        "\u03c1": "p",
    }
)
_LEET = str.maketrans(
    {
        "0": "o",
        "1": "i",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "@": "a",
        "$": "s",
        "|": "l",
        "!": "i",
    }
)
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_LATIN = re.compile(r"[A-Za-z]")
# Single letters separated by one space ("i g n o r e"), and by one repeated
# punctuation character ("i.g.n.o.r.e", "i-g-n-o-r-e").
_SPACED_WORDS = re.compile(r"(?<![^\W_])\w(?: \w){2,}(?![^\W_])")
_SAME_SEPARATOR = re.compile(r"(?<![^\W_])\w(?P<sep>[.\-_*])\w(?:(?P=sep)\w)+(?![^\W_])")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{20,}={0,2}")
_ROT13_HINT = re.compile(r"rot[\s-]?13|caesar", re.IGNORECASE)
_REVERSED_HINT = re.compile(r"\b(backwards?|reversed?|reverse order|right to left)\b")


def _clean(text: str) -> str:
    """Apply NFKC, drop invisible characters, map look-alikes and casefold; keep spacing."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return _WORD.sub(_unconfuse, text).casefold()


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def normalize(text: str) -> str:
    """Apply NFKC, drop invisible characters, map look-alikes, casefold, collapse spaces."""
    return _collapse(_clean(text))


def _unconfuse(match: re.Match[str]) -> str:
    """Map look-alike letters in a word that also has Latin letters ("Ign\u043ere").

    Words written wholly in Cyrillic or Greek are left alone, so that attacks
    in Russian still read as Russian to the patterns.
    """
    word = match.group(0)
    if _LATIN.search(word):
        return word.translate(_HOMOGLYPHS)
    return word


def _despace(text: str) -> str:
    """Join letters spelled out one by one: "i g n o r e" and "i.g.n.o.r.e" become "ignore".

    Runs use one separator throughout; with spaces, two or more spaces mark
    the gaps between words ("i g n o r e   a l l").
    """
    text = _SPACED_WORDS.sub(lambda m: m.group(0).replace(" ", ""), text)
    return _SAME_SEPARATOR.sub(lambda m: m.group(0).replace(m.group("sep"), ""), text)


def _decoded_base64(text: str) -> list[str]:
    """Base64 blobs in ``text`` that decode to readable text."""
    decoded = []
    for blob in _BASE64.findall(text):
        padded = blob + "=" * (-len(blob) % 4)
        try:
            raw = base64.b64decode(padded, validate=True)
            plain = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        printable = sum(ch.isprintable() or ch.isspace() for ch in plain)
        if plain and printable / len(plain) >= 0.9:
            decoded.append(normalize(plain))
    return decoded


def views(text: str) -> tuple[str, list[str]]:
    """Return the normalised prompt and its de-obfuscated variants (deduplicated)."""
    cleaned = _clean(text)
    base = _collapse(cleaned)
    others = [base.translate(_LEET), _collapse(_despace(cleaned)), *_decoded_base64(text)]
    if _REVERSED_HINT.search(base):
        others.append(base[::-1])
    if _ROT13_HINT.search(base):
        others.append(codecs.decode(base, "rot13"))
    return base, [v for v in dict.fromkeys(others) if v != base]


# -- scoring ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InjectionScore:
    """The combined score of one prompt and the rule that contributed most."""

    score: float
    rule: str | None
    pattern_score: float = 0.0
    similarity: float = 0.0


@dataclass(frozen=True)
class _Pattern:
    id: str
    weight: float
    regex: LinearPattern
    unless_followed_by: LinearPattern | None = None

    def search(self, text: str) -> bool:
        """True when some match of the regex is not followed by ``unless_followed_by``."""
        if self.unless_followed_by is None:
            return self.regex.search(text) is not None
        return any(
            self.unless_followed_by.match(text, match.end()) is None
            for match in self.regex.finditer(text)
        )


class PatternSet:
    """The maintained attack phrasings."""

    def __init__(self, patterns: Sequence[PatternSpec], obfuscation_weight: float = 0.5) -> None:
        self.patterns = [
            _Pattern(
                p.id,
                p.weight,
                compile_linear(p.regex, ignore_case=True, multiline=True),
                None
                if p.unless_followed_by is None
                else compile_linear(p.unless_followed_by, ignore_case=True, multiline=True),
            )
            for p in patterns
        ]
        self.obfuscation_weight = obfuscation_weight

    @classmethod
    def load(cls, path: Path) -> PatternSet:
        """Read and validate ``injection_patterns.yaml``."""
        spec: _PatternFile = _load(path, _PatternFile)
        return cls(spec.patterns, spec.obfuscation_weight)

    def hits(self, text: str) -> dict[str, float]:
        """Weights of the patterns that match any view of ``text``, by pattern id."""
        base, others = views(text)
        found: dict[str, float] = {}
        hidden = False
        for pattern in self.patterns:
            if pattern.search(base):
                found[pattern.id] = pattern.weight
            elif any(pattern.search(view) for view in others):
                found[pattern.id] = pattern.weight
                hidden = True
        if hidden and self.obfuscation_weight > 0:
            found[OBFUSCATION_RULE] = self.obfuscation_weight
        return found

    def score(self, text: str) -> tuple[float, str | None]:
        """Noisy-OR of the matching weights, and the id of the heaviest match."""
        found = self.hits(text)
        if not found:
            return 0.0, None
        return _noisy_or(found.values()), max(found, key=lambda k: (found[k], k))


class ExemplarSet:
    """Curated attack exemplars and the similarity scale they are scored on."""

    def __init__(self, exemplars: Sequence[ExemplarSpec], floor: float, ceiling: float) -> None:
        if ceiling <= floor:
            raise InjectionConfigError(
                f"similarity ceiling {ceiling} must be above floor {floor}; fix `scoring` "
                "in the exemplar file"
            )
        self.exemplars = list(exemplars)
        self.floor = floor
        self.ceiling = ceiling

    @classmethod
    def load(cls, path: Path) -> ExemplarSet:
        """Read and validate ``injection_exemplars.yaml``."""
        spec: _ExemplarFile = _load(path, _ExemplarFile)
        return cls(spec.exemplars, spec.scoring.floor, spec.scoring.ceiling)

    @property
    def texts(self) -> list[str]:
        """The exemplar texts, in file order."""
        return [e.text for e in self.exemplars]

    def scale(self, cosine: float) -> float:
        """Map a cosine onto [0, 1] between floor and ceiling."""
        return float(min(1.0, max(0.0, (cosine - self.floor) / (self.ceiling - self.floor))))


class InjectionScorer:
    """Scores prompts with patterns and, given an embedder, similarity to exemplars."""

    def __init__(
        self,
        patterns: PatternSet,
        exemplars: ExemplarSet | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.patterns = patterns
        self.exemplars = exemplars
        self.embedder = embedder if exemplars is not None else None
        self._exemplar_matrix: Matrix | None = None

    def _exemplar_vectors(self) -> Matrix:
        if self._exemplar_matrix is None:
            assert self.embedder is not None and self.exemplars is not None  # noqa: S101
            self._exemplar_matrix = normalize_rows(self.embedder.embed(self.exemplars.texts))
        return self._exemplar_matrix

    def similarities(self, texts: Sequence[str]) -> list[tuple[float, str | None]]:
        """Scaled best similarity to an exemplar, and that exemplar's id, per text.

        Raises ``EmbedderError`` when the embedder fails: the caller decides
        whether to retry (guard does: nothing passes unscored).
        """
        if self.embedder is None or self.exemplars is None or not texts:
            return [(0.0, None) for _ in texts]
        vectors = normalize_rows(self.embedder.embed(list(texts)))
        cosines = vectors @ self._exemplar_vectors().T
        best = np.argmax(cosines, axis=1)
        out: list[tuple[float, str | None]] = []
        for row, index in enumerate(best):
            scaled = self.exemplars.scale(float(cosines[row, index]))
            out.append((scaled, self.exemplars.exemplars[int(index)].id if scaled > 0 else None))
        return out

    def score_batch(
        self, texts: Sequence[str], embed_texts: Sequence[str] | None = None
    ) -> list[InjectionScore]:
        """Score each text; ``embed_texts`` (e.g. the redacted prompts) go to the embedder."""
        to_embed = texts if embed_texts is None else embed_texts
        if len(to_embed) != len(texts):
            raise ValueError("embed_texts must have one entry per text")
        similarity = self.similarities(to_embed)
        scores = []
        for text, (sim, exemplar) in zip(texts, similarity, strict=True):
            pattern_score, pattern = self.patterns.score(text)
            combined = _noisy_or((pattern_score, sim))
            if pattern_score == 0 and sim == 0:
                rule = None
            elif pattern_score >= sim:
                rule = f"pattern:{pattern}"
            else:
                rule = f"exemplar:{exemplar}"
            scores.append(InjectionScore(round(combined, 6), rule, pattern_score, sim))
        return scores


def _noisy_or(weights: Any) -> float:
    remaining = 1.0
    for weight in weights:
        remaining *= 1.0 - float(weight)
    return 1.0 - remaining
