"""The most a request can cost once guard lets it through: what guard reserves for it.

It must never be below what meter will count for the request, so every part is an
upper bound of what infer does (``processors.infer.planning``):

* prompt tokens: infer counts the guarded (redacted) prompt with the model's own
  tokenizer, special tokens in, and refuses a prompt over ``max_input_tokens``
  with nothing metered. Guard does not load tokenizers (they live in the Triton
  environment), so it takes the prompt's UTF-8 bytes plus ``SPECIAL_TOKENS``:
  the tokenizers Sluice loads (WordPiece, byte-level BPE, SentencePiece with byte
  fallback) emit at most one token per byte, plus a word marker and their special
  tokens; capped at ``max_input_tokens``;
* output tokens: what infer asks the model for, the request's ``max_tokens`` or,
  when it sets none, the model's ``default_max_tokens``, capped at the model's
  ``max_output_tokens`` (infer refuses more); none for an embeddings model;
* cost: those tokens at the price table's price for the request's model, the
  cached-token price counted when it is the dearer one.

A model not in the model catalog costs nothing: infer refuses it (``unknown_model``)
with no tokens metered. Guard reads the same catalog as infer
(``SLUICE_TRITON__MODELS_FILE``) and the same price table as meter.
"""

from __future__ import annotations

from processors.guard.reservations import NOTHING, WorstCase
from streams.contracts.records import InferenceRequest
from streams.llm.model_catalog import ModelCatalog, ModelSpec
from streams.llm.pricing import PriceTable

#: Tokens a tokenizer may add to a text besides one per byte (its special tokens, a
#: leading word marker): generous, since a reservation too large is only conservative.
SPECIAL_TOKENS = 16


def prompt_tokens(text: str, max_input_tokens: int) -> int:
    """An upper bound of the tokens infer meters for ``text`` (see the module)."""
    return min(len(text.encode("utf-8")) + SPECIAL_TOKENS, max_input_tokens)


def token_bounds(request: InferenceRequest, model: ModelSpec) -> tuple[int, int]:
    """Upper bounds of the prompt and output tokens infer meters for ``request`` on ``model``."""
    prompt = prompt_tokens(request.input_text, model.max_input_tokens)
    output = 0
    if model.task == "text_completion":
        asked = request.max_tokens or model.default_max_tokens or 0
        output = max(0, min(asked, model.max_output_tokens or 0))
    return prompt, output


def worst_case_tokens(request: InferenceRequest, models: ModelCatalog) -> int:
    """The most tokens ``request`` can be metered for: ``worst_case(...).tokens``, unpriced.

    What guard charges against a tenant's tokens per minute (``rate_gate``), so the rate
    limit and the budget reservation count a request alike.
    """
    model = models.models.get(request.model)
    if model is None:
        return 0
    return sum(token_bounds(request, model))


def worst_case(request: InferenceRequest, models: ModelCatalog, prices: PriceTable) -> WorstCase:
    """The most ``request`` (as guard lets it through, redacted) can add to the spend."""
    model = models.models.get(request.model)
    if model is None:
        return NOTHING
    prompt, output = token_bounds(request, model)
    fresh = prices.cost(request.model, prompt, output).total
    cached = prices.cost(request.model, prompt, output, cached_input_tokens=prompt).total
    return WorstCase(prompt + output, max(fresh, cached))
