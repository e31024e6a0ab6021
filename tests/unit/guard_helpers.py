"""Shared helpers for the guard unit tests (no Kafka, no Triton)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from processors.guarding.embedder import EmbedderError

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
GUARD_DIR = ROOT / "schemas" / "guard"
SECRET = "unit-test-secret-0123456789abcdef"


def read_jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text("utf-8").splitlines() if line]


class FakeEmbedder:
    """Bag-of-words vectors hashed into 384 dimensions: equal texts get cosine 1.

    Unit tests only. Integration tests use the real Triton model.
    """

    dimension = 384

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "little") % self.dimension] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


class FailingEmbedder:
    dimension = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise EmbedderError("Triton at 127.0.0.1:8001 is down")
