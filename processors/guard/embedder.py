"""Sentence embeddings for injection scoring, from the platform's Triton model.

Processors never load models: embeddings come from Triton's ``minilm`` model
(all-MiniLM-L6-v2; input ``text`` BYTES, one string per row; output
``embedding`` FP32 [384], L2-normalised) through ``tritonclient.grpc``. The
``Embedder`` protocol is what the injection scorer depends on; unit tests use
a fake, integration tests the real Triton started by the local stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from streams.errors import SluiceError

Matrix = NDArray[np.float32]


class EmbedderError(SluiceError):
    """Embeddings could not be computed (server down, model missing, bad reply)."""


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors, one row per text."""

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        ...

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Return a (len(texts), dimension) float32 matrix of unit vectors."""
        ...


def normalize_rows(matrix: Matrix) -> Matrix:
    """Rows scaled to unit length (zero rows stay zero), so a dot product is a cosine."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Matrix = (matrix / norms).astype(np.float32)
    return result


class TritonEmbedder:
    """Embeddings from a Triton model over gRPC, in batches of at most ``max_batch``.

    The client connects on first use, so building the engine never waits on a
    server. Every failure becomes an ``EmbedderError`` that says what to check.
    """

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        model: str = "minilm",
        *,
        timeout_s: float = 10.0,
        max_batch: int | None = None,
        input_name: str = "text",
        output_name: str = "embedding",
        dimension: int = 384,
        client: Any = None,
    ) -> None:
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self.input_name = input_name
        self.output_name = output_name
        self._dimension = dimension
        self._client = client
        self._server_batch: int | None = None

    @property
    def dimension(self) -> int:
        """Length of each vector (384 for all-MiniLM-L6-v2)."""
        return self._dimension

    def _connect(self) -> Any:
        if self._client is None:
            import tritonclient.grpc as grpcclient  # noqa: PLC0415 (optional dependency)

            self._client = grpcclient.InferenceServerClient(url=self.url)
        return self._client

    def _error(self, what: str, exc: BaseException) -> EmbedderError:
        return EmbedderError(
            f"Triton at {self.url}, model {self.model!r}: {what}: {exc}. Check that the "
            "server is running (`sluice up` starts it locally) and the model is loaded "
            "(its readiness: GET /v2/models/<model>/ready on the HTTP port)."
        )

    def _model_batch(self, client: Any) -> int:
        """The model's max_batch_size as Triton reports it (0: no batch dimension)."""
        if self._server_batch is None:
            try:
                config = client.get_model_config(self.model, client_timeout=self.timeout_s)
            except Exception as exc:
                raise self._error("cannot read the model configuration", exc) from exc
            self._server_batch = int(config.config.max_batch_size)
        return self._server_batch

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts``, batching as the model allows."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        client = self._connect()
        server_batch = self._model_batch(client)
        # Triton refuses a request larger than the model's batch; max_batch may only lower it.
        batch = min(self.max_batch or server_batch, server_batch) if server_batch else 1
        parts = [self._infer(client, texts[i : i + batch]) for i in range(0, len(texts), batch)]
        return normalize_rows(np.concatenate(parts, axis=0))

    def _infer(self, client: Any, texts: Sequence[str]) -> Matrix:
        import tritonclient.grpc as grpcclient  # noqa: PLC0415

        data = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
        shape = [len(texts), 1] if self._server_batch else [1]
        tensor = grpcclient.InferInput(self.input_name, shape, "BYTES")
        tensor.set_data_from_numpy(data.reshape(shape))
        output = grpcclient.InferRequestedOutput(self.output_name)
        try:
            result = client.infer(
                self.model, [tensor], outputs=[output], client_timeout=self.timeout_s
            )
        except Exception as exc:
            raise self._error(f"inference on {len(texts)} texts failed", exc) from exc
        array = result.as_numpy(self.output_name)
        if array is None:
            raise EmbedderError(
                f"Triton model {self.model!r} returned no {self.output_name!r} output; "
                "check the output name in its config.pbtxt"
            )
        matrix = np.asarray(array, dtype=np.float32).reshape(len(texts), -1)
        if matrix.shape[1] != self.dimension:
            raise EmbedderError(
                f"Triton model {self.model!r} returned vectors of {matrix.shape[1]} values, "
                f"expected {self.dimension}; is it the sentence-embedding model?"
            )
        return matrix
