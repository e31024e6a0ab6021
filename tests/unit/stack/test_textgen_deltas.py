"""textgen's streamed deltas concatenate to exactly the text it answers unstreamed.

The cutting (infra/triton/text_deltas.py) is torch-free, so it is tested here with a
real WordPiece decoder with BERT's cleanup, over token sequences rich in the pieces
cleanup rewrites (punctuation loses its space) and ``##`` continuations.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence

import pytest
from tokenizers import Tokenizer, decoders, models

from streams.settings import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "infra" / "triton"))
from text_deltas import DeltaDecoder, DeltaMismatchError

WORDS = ["[UNK]", "hello", "world", "do", "not", "don", "n", "'", "t", "s", "m", "ve", "re"]
WORDS += [".", ",", "?", "!", "-", "##s", "##lo", "##t", "hel", "it", "a"]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    vocab = {piece: i for i, piece in enumerate(WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))  # noqa: S106
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tok


def streamed(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    deltas = DeltaDecoder(tokenizer.decode, lead=" ")
    return [deltas.push(token) for token in ids] + [deltas.finish()]


def test_random_generations_stream_to_exactly_the_whole_text(tokenizer: Tokenizer) -> None:
    rng = random.Random(20240601)
    for _ in range(2000):
        ids = [rng.randrange(1, len(WORDS)) for _ in range(rng.randint(1, 30))]
        pieces = streamed(tokenizer, ids)
        assert "".join(pieces) == " " + tokenizer.decode(ids), ids
        assert len(pieces) == len(ids) + 1  # one per token, then the rest


def test_a_word_is_sent_once_no_later_token_can_change_it(tokenizer: Tokenizer) -> None:
    ids = [WORDS.index(w) for w in ["it", "hel", "##lo", ".", "world", "##s", "!"]]
    pieces = streamed(tokenizer, ids)
    assert " " + tokenizer.decode(ids) == " it hello. worlds!"
    # "it" waits for "hel" (it could have become "its"); "hel" waits past "##lo" and ".".
    assert pieces == ["", " it", "", "", " hello.", "", "", " worlds!"]


def test_a_decoder_that_rewrites_earlier_text_is_caught_not_streamed_wrong() -> None:
    # A decode that changes its past (not WordPiece): the mismatch is an error, never a
    # stream that concatenates to a different text.
    texts = {1: "a b c", 2: "x y z w"}
    deltas = DeltaDecoder(lambda ids: texts[len(ids)])
    assert deltas.push(0) == "a b"
    deltas.push(0)
    with pytest.raises(DeltaMismatchError):
        deltas.finish()
