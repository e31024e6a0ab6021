"""Personal data and secrets hidden in base64 or hex tokens.

A prompt can carry ``Y2FyZCA0MTExIDExMTEgMTExMSAxMTEx`` (base64 of a card number)
past every pattern that reads the text as written. This recognizer finds long
tokens of the base64 (standard or URL-safe) and hex alphabets, decodes them, runs
guard's text recognizers on what they decode to, and reports the WHOLE token as
the entity found inside: redacting only part of an encoded value would leave the
rest decodable.

Bounds, each chosen so the work stays linear in the text and small:

* a token counts from ``MIN_CHARS`` (16) characters: base64 of 12 bytes, enough for an
  SSN with its dashes (11) or a short e-mail address; shorter runs are ordinary words
  and identifiers, and decode to too little to hold a value;
* at most ``MAX_TOKEN_CHARS`` of a token are decoded (a longer one is judged on its
  start), and at most ``MAX_DECODED_CHARS`` of decoded text per prompt are analysed;
* a token is analysed only if it decodes to UTF-8 of which at least
  ``MIN_PRINTABLE`` is printable: random keys, hashes and binary payloads decode
  to bytes that are not text, so they cost a decode and nothing more;
* one level deep: the recognizers run on the decoded text do not include this one,
  so base64 of base64 is not unwrapped (one level is what a person pasting an
  encoded value produces; each further level would multiply the work).

All decoded texts of a prompt are joined with blank lines and each recognizer runs
once over the join, whatever the number of tokens.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from presidio_analyzer import EntityRecognizer, LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from processors.guard.text_recognizer import LANGUAGE
from streams.contracts.linear_regex import compile_linear

MIN_CHARS = 16
MAX_TOKEN_CHARS = 4_096
MAX_DECODED_CHARS = 65_536
MIN_PRINTABLE = 0.9
_SEPARATOR = "\n\n"

# Both base64 alphabets and hex in one pass; `=` padding only at the end, and counted in
# MIN_CHARS (base64 of 11 bytes is 15 characters and one `=`).
_TOKEN = compile_linear(rf"[A-Za-z0-9+/_\-]{{{MIN_CHARS - 2},}}={{0,2}}")
_HEX = compile_linear(r"[0-9A-Fa-f]+")


@dataclass(frozen=True, slots=True)
class Piece:
    """One decoded token: where it is in the prompt and where its text is in the join."""

    start: int
    end: int
    joined_start: int
    joined_end: int


def decode(token: str) -> str | None:
    """The text ``token`` encodes (hex or base64), or None when it is not mostly text."""
    token = token[:MAX_TOKEN_CHARS]
    is_hex = len(token) % 2 == 0 and _HEX.fullmatch(token) is not None
    raw = bytes.fromhex(token) if is_hex else _base64(token)
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for char in text if char.isprintable() or char in "\t\r\n")
    return text if printable >= MIN_PRINTABLE * len(text) else None


def _base64(token: str) -> bytes | None:
    body = token.rstrip("=")
    if ("+" in body or "/" in body) and ("-" in body or "_" in body):
        return None  # two alphabets mixed: not one encoding
    body = body.replace("-", "+").replace("_", "/")
    body = body[: len(body) - len(body) % 4] if len(body) % 4 == 1 else body
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


class EncodedTokenRecognizer(LocalRecognizer):
    """A base64 or hex token whose decoded text holds an entity; the whole token is reported."""

    NAME = "EncodedTokenRecognizer"

    def __init__(self, inner: Sequence[EntityRecognizer]) -> None:
        self.inner = tuple(inner)
        entities = sorted({e for r in self.inner for e in r.supported_entities})
        super().__init__(supported_entities=entities, name=self.NAME, supported_language=LANGUAGE)

    def load(self) -> None:
        """Nothing to load: the inner recognizers are built already."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report each token whose decoded text holds one of ``entities``."""
        pieces, joined = self._decode_all(text)
        if not pieces:
            return []
        best: dict[Piece, RecognizerResult] = {}
        for recognizer in self.inner:
            wanted = [e for e in recognizer.supported_entities if e in entities]
            if not wanted:
                continue
            # Text recognizers never read NLP artifacts; Presidio's signature wants them.
            results = recognizer.analyze(joined, wanted, None)  # type: ignore[arg-type]
            for found in results or []:
                for piece in pieces:
                    if found.start < piece.joined_end and piece.joined_start < found.end:
                        current = best.get(piece)
                        if current is None or found.score > current.score:
                            best[piece] = found
        return [self._result(piece, found) for piece, found in best.items()]

    def _decode_all(self, text: str) -> tuple[list[Piece], str]:
        pieces: list[Piece] = []
        parts: list[str] = []
        length = 0
        for match in _TOKEN.finditer(text):
            if match.end() - match.start() < MIN_CHARS:
                continue
            decoded = decode(match.group(0))
            if decoded is None:
                continue
            if length + len(decoded) > MAX_DECODED_CHARS:
                break
            pieces.append(Piece(match.start(), match.end(), length, length + len(decoded)))
            parts.append(decoded)
            length += len(decoded) + len(_SEPARATOR)
        return pieces, _SEPARATOR.join(parts)

    def _result(self, piece: Piece, found: RecognizerResult) -> RecognizerResult:
        return RecognizerResult(
            entity_type=found.entity_type,
            start=piece.start,
            end=piece.end,
            score=found.score,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.NAME,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )
