"""Text deltas of a generation whose concatenation is exactly the text decoded at the end.

Torch-free, so the unit tests import it with the project's own interpreter.

Why not decode each token on its own: a token's text depends on its neighbours. With
a WordPiece decoder (MiniLM's, BERT's) a ``##`` piece glues onto the previous word
and ``cleanup`` drops the space before punctuation (``"hello ."`` is ``"hello."``); a
byte-level decoder may need a later token to finish a character. So each step decodes
the whole prefix and sends only what no later token can change: the text up to its
last space (a later token extends or rewrites the last word at most). ``finish``
sends the rest, and checks that what was sent is indeed the start of the final text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class DeltaMismatchError(RuntimeError):
    """The deltas sent so far are not the start of the final text (a decoder this is wrong for)."""


class DeltaDecoder:
    """Turns generated token ids, one at a time, into text deltas.

    ``decode`` maps every token id so far to their text; ``lead`` is put before it
    (textgen's generated text starts with a space).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], lead: str = "") -> None:
        self._decode = decode
        self._lead = lead
        self._ids: list[int] = []
        self._sent = ""

    @property
    def tokens(self) -> int:
        """Token ids pushed so far."""
        return len(self._ids)

    def push(self, token: int) -> str:
        """Add one token; the text it makes certain (often empty until a word is complete)."""
        self._ids.append(token)
        text = self._text()
        stable = text[: max(0, text.rfind(" "))]
        if len(stable) <= len(self._sent) or not stable.startswith(self._sent):
            return ""
        delta, self._sent = stable[len(self._sent) :], stable
        return delta

    def finish(self) -> str:
        """The rest of the text: the deltas sent, plus this, are the whole decoded text."""
        text = self._text()
        if not text.startswith(self._sent):
            raise DeltaMismatchError(
                "the streamed deltas do not start the decoded text: this decoder rewrites text "
                "before the last space; stream it with a larger hold-back"
            )
        rest, self._sent = text[len(self._sent) :], text
        return rest

    def _text(self) -> str:
        return self._lead + self._decode(self._ids)
