"""The real Triton (PyTriton's) started by the stack component, called through tritonclient.

Runs on the session's port block (conftest.py). The Triton venv is the
checkout's own (.sluice/venvs/triton, built on first use, minutes) unless
SLUICE_TEST_TRITON_VENV names another. The sentence-transformers reference runs
with that venv's python: Sluice's own environment has no torch.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from streams.llm.model_catalog import DEFAULT_MODELS_FILE, load_models
from streams.llm.tokenizing import TokenCounter, search_paths
from streams.settings import Settings
from streams.stack import Stack
from streams.stack.triton import Triton
from tests.support.world import reference

pytestmark = pytest.mark.integration


def triton_venv() -> Path:
    """The Triton venv of the session's stack (set while the integration tests run)."""
    return Path(os.environ["SLUICE_STACK__TRITON_VENV"])


SENTENCES = [
    "Hello world",
    "Sluice meters every token a tenant sends to a model.",
    "",
    "Ünïcödé tëxt ☃ and emoji 🎉",
    "The quick brown fox jumps over the lazy dog. " * 40,  # 402 tokens: cut at 256 for the model
]


@pytest.fixture(scope="module")
def settings(triton: Settings) -> Settings:
    """The session's Triton (tests/integration/conftest.py)."""
    return triton


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(settings.triton.url) as triton:
        yield triton


def embed(client: grpcclient.InferenceServerClient, texts: list[str]) -> tuple[Any, Any]:
    tensor = grpcclient.InferInput("text", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    result = client.infer("minilm", [tensor])
    return result.as_numpy("embedding"), result.as_numpy("num_input_tokens")


def test_the_probe_reports_version_models_and_device(settings: Settings) -> None:
    assert Triton(settings).probe() == "Triton 2.51.0, models: minilm, textgen (cpu)"
    messages: list[str] = []
    Stack(settings, only=["triton"]).up(messages.append)  # idempotent
    # up also brings the stack's credentials up to date first; Triton is left as it runs.
    assert any(m.startswith("Triton: already running") for m in messages), messages


def test_minilm_equals_sentence_transformers_and_counts_true_tokens(
    client: grpcclient.InferenceServerClient,
) -> None:
    embeddings, counts = embed(client, SENTENCES)
    expected = reference(SENTENCES)
    assert embeddings.shape == (len(SENTENCES), 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, np.array(expected["embeddings"]), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert counts.dtype == np.int32 and counts.shape == (len(SENTENCES), 1)
    assert counts.ravel().tolist() == expected["num_input_tokens"] == [4, 15, 2, 10, 402]
    catalog = load_models()
    counter = TokenCounter(
        catalog.path.parent, search_paths(Settings(stack={"triton_venv": triton_venv()}))
    )
    assert counter.count(catalog.get("minilm"), SENTENCES) == counts.ravel().tolist()


class Generator:
    """Calls a decoupled (vLLM-style) model over one gRPC stream, one request at a time."""

    def __init__(self, client: grpcclient.InferenceServerClient, model: str = "textgen") -> None:
        self.client, self.model = client, model
        self.results: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: self.results.put((result, error)))

    def __call__(
        self,
        prompt: str,
        params: dict[str, Any] | None = None,
        *,
        exclude_input: bool | None = None,
        counts: bool = True,
    ) -> dict[str, Any]:
        inputs = [self._tensor("text_input", "BYTES", prompt.encode())]
        if params is not None:
            inputs.append(self._tensor("sampling_parameters", "BYTES", json.dumps(params).encode()))
        if exclude_input is not None:
            inputs.append(self._tensor("exclude_input_in_output", "BOOL", exclude_input))
        if counts:
            inputs += [
                self._tensor("return_num_input_tokens", "BOOL", True),
                self._tensor("return_num_output_tokens", "BOOL", True),
            ]
        self.client.async_stream_infer(self.model, inputs, enable_empty_final_response=True)
        outputs: dict[str, Any] = {}
        while True:
            result, error = self.results.get(timeout=120)
            if error is not None:
                raise RuntimeError(str(error))
            response = result.get_response()
            for output in response.outputs:
                value = result.as_numpy(output.name)[0]
                outputs[output.name] = value.decode() if isinstance(value, bytes) else int(value)
            if response.parameters["triton_final_response"].bool_param:
                return outputs

    @staticmethod
    def _tensor(name: str, dtype: str, value: object) -> grpcclient.InferInput:
        tensor = grpcclient.InferInput(name, [1], dtype)
        numpy_type = np.object_ if dtype == "BYTES" else np.bool_
        tensor.set_data_from_numpy(np.array([value], dtype=numpy_type))
        return tensor

    def close(self) -> None:
        self.client.stop_stream()


@pytest.fixture
def generate(client: grpcclient.InferenceServerClient) -> Iterator[Generator]:
    generator = Generator(client)
    yield generator
    generator.close()


def test_textgen_generates_exactly_max_tokens_and_reports_true_counts(
    generate: Generator,
) -> None:
    prompt = "Summarise the ticket: the invoice was charged twice."
    catalog = load_models()
    counter = TokenCounter(
        catalog.path.parent, search_paths(Settings(stack={"triton_venv": triton_venv()}))
    )
    [prompt_tokens] = counter.count(catalog.get("textgen"), [prompt])
    for max_tokens in (1, 7, 64):
        out = generate(prompt, {"max_tokens": max_tokens, "temperature": 0}, exclude_input=True)
        assert out["num_output_tokens"] == max_tokens
        assert out["num_input_tokens"] == prompt_tokens == 16
        assert out["text_output"].startswith(" ") and len(out["text_output"].split()) >= 1


def test_textgen_is_greedy_at_temperature_0_and_seeded_otherwise(generate: Generator) -> None:
    greedy = {"max_tokens": 20, "temperature": 0}
    first, again = generate("hello", greedy), generate("hello", greedy)
    assert first == again
    sampled = {"max_tokens": 20, "temperature": 0.9, "seed": 7}
    assert generate("hello", sampled) == generate("hello", sampled)
    assert generate("hello", sampled) != generate("hello", {**sampled, "seed": 8})


def test_textgen_follows_the_vllm_backends_interface(generate: Generator) -> None:
    params = {"max_tokens": 5, "temperature": 0}
    excluded = generate("Hi there", params, exclude_input=True)["text_output"]
    assert generate("Hi there", params)["text_output"] == "Hi there" + excluded  # default: prepend
    plain = generate("Hi there", params, counts=False)
    assert set(plain) == {"text_output"}  # counts only when asked for, as vLLM
    assert generate("Hi", None, exclude_input=True)["num_output_tokens"] == 16  # vLLM's default
    with pytest.raises(RuntimeError, match="does not implement stop"):
        generate("Hi", {"max_tokens": 5, "stop": ["."]})
    with pytest.raises(RuntimeError, match="between 1 and 512"):
        generate("Hi", {"max_tokens": 0})


def test_concurrent_requests_are_batched_by_triton(
    client: grpcclient.InferenceServerClient,
) -> None:
    def counts() -> tuple[int, int]:
        stats = client.get_inference_statistics("minilm", as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    inferences, executions = counts()
    requests, finished = 64, threading.Semaphore(0)
    errors: list[object] = []

    def done(result: object, error: object) -> None:
        if error is not None:
            errors.append(error)
        finished.release()

    for i in range(requests):
        tensor = grpcclient.InferInput("text", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[f"request number {i}".encode()]], dtype=np.object_))
        client.async_infer("minilm", [tensor], callback=done)
    for _ in range(requests):
        assert finished.acquire(timeout=120)
    assert errors == []
    # Triton records statistics after it answers: give them a moment to catch up.
    deadline = time.monotonic() + 30
    while (after := counts())[0] - inferences < requests and time.monotonic() < deadline:
        time.sleep(0.2)
    after_inferences, after_executions = after
    assert after_inferences - inferences == requests
    batches = after_executions - executions
    assert 0 < batches < requests, f"{requests} requests ran in {batches} executions"


# Counted with MiniLM's own tokenizer.json: [CLS] + WordPiece pieces + [SEP].
KNOWN_COUNTS = {
    "Hello world": 4,
    "": 2,
    "Ünïcödé tëxt ☃ and emoji 🎉": 10,
    "The quick brown fox jumps over the lazy dog. " * 40: 402,
    "unbelievably": 7,  # un ##bel ##ie ##va ##bly
}


def test_minilm_counts_match_known_values(settings: Settings) -> None:
    """MiniLM's tokenizer.json lives in the Triton venv, which the session fixture builds."""
    counter = TokenCounter(DEFAULT_MODELS_FILE.parent, search_paths(settings))
    counts = counter.count(load_models().get("minilm"), list(KNOWN_COUNTS))
    assert counts == list(KNOWN_COUNTS.values())
    assert counter.count(load_models().get("textgen"), ["Hello world"]) == [4]
