"""TritonEmbedder against a fake gRPC client (the real server is an integration test)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from processors.guard.embedder import EmbedderError, TritonEmbedder


class FakeClient:
    def __init__(self, max_batch_size: int = 8, dimension: int = 384, fail: bool = False) -> None:
        self.max_batch_size = max_batch_size
        self.dimension = dimension
        self.fail = fail
        self.shapes: list[list[int]] = []

    def get_model_config(self, model: str, client_timeout: float) -> Any:
        return SimpleNamespace(config=SimpleNamespace(max_batch_size=self.max_batch_size))

    def infer(
        self, model: str, inputs: list[Any], outputs: list[Any], client_timeout: float
    ) -> Any:
        if self.fail:
            raise InferenceServerException("failed to connect to all addresses")
        [tensor] = inputs
        self.shapes.append(tensor.shape())
        count = tensor.shape()[0] if len(tensor.shape()) == 2 else 1
        vectors = np.full((count, self.dimension), 3.0, dtype=np.float32)
        return SimpleNamespace(as_numpy=lambda name: vectors)


def test_batches_by_max_batch_and_normalises() -> None:
    client = FakeClient()
    embedder = TritonEmbedder(max_batch=2, client=client)
    vectors = embedder.embed(["a", "b", "c", "d", "e"])
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert client.shapes == [[2, 1], [2, 1], [1, 1]]


def test_model_without_batching_gets_one_text_per_request() -> None:
    client = FakeClient(max_batch_size=0)
    TritonEmbedder(client=client).embed(["a", "b"])
    assert client.shapes == [[1], [1]]


def test_server_errors_say_what_to_check() -> None:
    embedder = TritonEmbedder("triton:8001", client=FakeClient(fail=True))
    with pytest.raises(EmbedderError, match=r"Triton at triton:8001, model 'minilm'.*sluice up"):
        embedder.embed(["a"])


def test_wrong_vector_size_is_refused() -> None:
    with pytest.raises(EmbedderError, match="returned vectors of 10 values, expected 384"):
        TritonEmbedder(client=FakeClient(dimension=10)).embed(["a"])


def test_empty_input_needs_no_server() -> None:
    assert TritonEmbedder(client=object()).embed([]).shape == (0, 384)
