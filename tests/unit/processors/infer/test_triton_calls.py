"""Generations over a gRPC stream, streamed or whole, against a scripted stand-in client.

The stand-in answers ``async_stream_infer`` by calling the stream callback with
responses shaped as tritonclient's (``get_response().outputs``, the
``triton_final_response`` parameter, ``as_numpy``), in the two shapes a streamed
generation comes in: the vLLM backend's (each response a delta with its own token
count, the last one flagged final) and textgen's (deltas, then the counts, then
PyTriton's empty final response). The real server is in
tests/integration/test_infer_streaming.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from processors.infer.planning import Completion, Job
from processors.infer.triton_calls import BackendRejectedError, TritonBackend
from streams.contracts.records import InferenceRequest
from streams.llm.model_catalog import load_models

TEXTGEN = load_models().get("textgen")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Result:
    """One streamed response as tritonclient hands it to the callback."""

    def __init__(self, outputs: dict[str, Any], final: bool = False) -> None:
        self._outputs = {name: np.asarray([value]) for name, value in outputs.items()}
        self._final = final

    def get_response(self) -> Any:
        return SimpleNamespace(
            outputs=[SimpleNamespace(name=name) for name in self._outputs],
            parameters={"triton_final_response": SimpleNamespace(bool_param=self._final)},
        )

    def as_numpy(self, name: str) -> Any:
        return self._outputs[name]


class RefusedError(Exception):
    """A model's refusal as tritonclient reports it on the stream (no gRPC status)."""

    def status(self) -> None:
        return None


class Client:
    """A stand-in InferenceServerClient that answers each request with a script."""

    def __init__(self, script: list[Result | Exception]) -> None:
        self.script = script
        self.inputs: list[str] = []
        self.callback: Any = None

    def start_stream(self, callback: Any, stream_timeout: Any = None) -> None:
        self.callback = callback

    def async_stream_infer(self, model: str, inputs: list[Any], **_: Any) -> None:
        self.inputs = [tensor.name() for tensor in inputs]
        for item in self.script:
            if isinstance(item, Exception):
                self.callback(None, item)
            else:
                self.callback(item, None)


@dataclass
class Watcher:
    """A GenerationStream that remembers what it was told."""

    deltas: list[str] = field(default_factory=list)
    ended: list[Completion | None] = field(default_factory=list)
    fail: bool = False

    def delta(self, text: str) -> None:
        if self.fail:
            raise RuntimeError("the chunk producer is gone")
        self.deltas.append(text)

    def end(self, done: Completion | None) -> None:
        self.ended.append(done)


def job(max_tokens: int = 3) -> Job:
    request = InferenceRequest("r1", "acme", "textgen", "hi", T0, stream=True)
    return Job(7, request, TEXTGEN, 3, max_tokens, 0)


def served(script: list[Result | Exception], watcher: Watcher | None) -> tuple[Any, Client]:
    client = Client(script)
    backend = TritonBackend("stand-in:8001", timeout_s=5, client_factory=lambda _url: client)
    try:
        outcomes = backend.run([[job()]], {7: watcher} if watcher is not None else None)
    finally:
        backend.close()
    return outcomes[7], client


VLLM_STYLE = [
    Result({"text_output": b" one", "num_input_tokens": 3, "num_output_tokens": 1}),
    Result({"text_output": b"", "num_input_tokens": 3, "num_output_tokens": 1}),
    Result({"text_output": b" two.", "num_input_tokens": 3, "num_output_tokens": 1}, final=True),
]
TEXTGEN_STYLE = [
    Result({"text_output": b""}),
    Result({"text_output": b" one"}),
    Result({"text_output": b" two", "num_input_tokens": 3, "num_output_tokens": 3}),
    Result({}, final=True),
]


@pytest.mark.parametrize("script", [VLLM_STYLE, TEXTGEN_STYLE], ids=["vllm", "textgen"])
def test_a_streamed_generation_hands_each_delta_on_and_returns_the_whole_text(
    script: list[Result | Exception],
) -> None:
    watcher = Watcher()
    done, client = served(script, watcher)
    assert "stream" in client.inputs  # the model is asked for one response per delta
    assert isinstance(done, Completion)
    assert "".join(watcher.deltas) == done.output_text
    assert "" not in watcher.deltas
    assert (done.input_tokens, done.output_tokens) == (3, 3)  # per-response counts add up
    assert watcher.ended == [done]


def test_unstreamed_the_request_and_answer_are_as_before() -> None:
    whole = [
        Result({"text_output": b" one two", "num_input_tokens": 3, "num_output_tokens": 2}),
        Result({}, final=True),
    ]
    done, client = served(whole, None)
    assert "stream" not in client.inputs
    assert client.inputs == [
        "text_input",
        "sampling_parameters",
        "exclude_input_in_output",
        "return_num_input_tokens",
        "return_num_output_tokens",
    ]
    assert isinstance(done, Completion)
    assert (done.output_text, done.input_tokens, done.output_tokens) == (" one two", 3, 2)


def test_a_refused_generation_ends_its_stream_as_failed() -> None:
    watcher = Watcher()
    done, _ = served([Result({"text_output": b" one"}), RefusedError("bad sampling")], watcher)
    assert isinstance(done, BackendRejectedError)
    assert watcher.deltas == [" one"] and watcher.ended == [None]


def test_a_failing_stream_never_fails_the_generation() -> None:
    watcher = Watcher(fail=True)
    done, _ = served(VLLM_STYLE, watcher)
    assert isinstance(done, Completion) and done.output_text == " one two."
    assert len(watcher.ended) == 1
