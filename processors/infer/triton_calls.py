"""Triton calls for infer: micro-batches and generations in flight at once, over gRPC.

Two shapes of model, as the catalog describes them:

* batching models (embeddings): one ``infer`` per micro-batch, the rows of the
  batch in one tensor;
* decoupled, non-batching models (Triton's vLLM backend and the local
  ``textgen``): one request per call over a gRPC stream.

Up to ``max_in_flight`` calls run at once, each on its own thread with its
own client. A stream carries one request at a time: Triton's stream errors
name no request, so only then is every error attributable.

Failures are sorted in two: the server is unreachable, overloaded or gone
(``BackendUnavailable``: the whole batch is retried later, nothing is
committed), or the model refused this request (``BackendRejected``: its
result is an error and its original goes to the DLQ). A micro-batch the
model refuses is retried row by row, so one bad row cannot fail its
neighbours.

A generation may be streamed: given a ``GenerationStream``, a model with the
``stream`` input is asked for one response per delta, each delta is handed to
the stream as it arrives, and the whole text is still assembled and returned
as without streaming. The stream learns how the call ended (``end``) as soon as
it does, not when the rest of the batch is done.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from processors.infer.planning import Completion, Job
from streams.errors import SluiceError, TransientError

log = logging.getLogger("sluice.infer")

# gRPC statuses that say "not now" rather than "not this request".
_TRANSIENT = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.CANCELLED",
    "StatusCode.ABORTED",
    "StatusCode.UNKNOWN",
    "StatusCode.NOT_FOUND",  # the model is not loaded (yet): Triton restarting or loading
}
Outcomes = dict[int, "Completion | BackendRejectedError"]


class GenerationStream(Protocol):
    """Where a streamed generation's deltas go as they arrive (processors/infer/chunks.py)."""

    def delta(self, text: str) -> None:
        """One piece of generated text, in order; never empty."""

    def end(self, done: Completion | None) -> None:
        """The call is over: its completion, or None when it failed (refused or unreachable)."""


class BackendUnavailableError(TransientError):
    """Triton cannot serve now; retry the batch later."""


class BackendRejectedError(SluiceError):
    """The model refused this request; it will not succeed as it is."""


def _reason(exc: BaseException) -> str:
    """The useful line of a Triton error (PyTriton appends a traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _is_transient(exc: InferenceServerException) -> bool:
    return str(exc.status()) in _TRANSIENT


class TritonBackend:
    """Runs micro-batches and generations against one Triton server."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 60.0,
        max_in_flight: int = 8,
        client_factory: Callable[[str], Any] = grpcclient.InferenceServerClient,
    ) -> None:
        self.url = url  # host:port of Triton's gRPC endpoint
        self.timeout_s = timeout_s
        self._factory = client_factory
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="triton")
        self._versions: dict[str, str] = {}

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- public -----------------------------------------------------------------------
    def run(
        self,
        batches: Sequence[list[Job]],
        streams: Mapping[int, GenerationStream] | None = None,
    ) -> Outcomes:
        """Every job's completion or rejection.

        ``streams`` (by job index) receive the deltas of the generations they name.
        Raises BackendUnavailableError when any call could not reach the model;
        the caller then retries the whole batch.
        """
        streams = streams or {}
        futures = [self._pool.submit(self._call, batch, streams) for batch in batches]
        outcomes: Outcomes = {}
        unavailable: BackendUnavailableError | None = None
        for future in futures:  # wait for all, so no call outlives the transaction
            try:
                outcomes.update(future.result())
            except BackendUnavailableError as exc:
                unavailable = unavailable or exc
        if unavailable is not None:
            raise unavailable
        return outcomes

    def model_version(self, triton_model: str) -> str:
        """The newest version Triton serves of a model (cached)."""
        version = self._versions.get(triton_model)
        if version is None:
            try:
                metadata = self._client().get_model_metadata(
                    triton_model, client_timeout=self.timeout_s
                )
            except InferenceServerException as exc:
                raise BackendUnavailableError(f"Triton at {self.url}: {_reason(exc)}") from exc
            version = str(metadata.versions[-1]) if metadata.versions else ""
            self._versions[triton_model] = version
        return version

    # -- one call ---------------------------------------------------------------------
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory(self.url)
        return client

    def _call(self, batch: list[Job], streams: Mapping[int, GenerationStream]) -> Outcomes:
        if batch[0].model.task == "embeddings":
            return self._embed(batch)
        return {job.index: self._streamed(job, streams.get(job.index)) for job in batch}

    def _streamed(
        self, job: Job, stream: GenerationStream | None
    ) -> Completion | BackendRejectedError:
        """Generate ``job``, telling ``stream`` (if any) each delta and how the call ended."""
        if stream is None or job.model.input("stream") is None:
            return self._generate(job)
        try:
            done = self._generate(job, lambda text: _quietly(stream.delta, text))
        except BaseException:
            _quietly(stream.end, None)
            raise
        _quietly(stream.end, done if isinstance(done, Completion) else None)
        return done

    def _embed(self, batch: list[Job]) -> Outcomes:
        model = batch[0].model
        text = model.inputs["text"]
        tensor = grpcclient.InferInput(text.name, [len(batch), 1], text.dtype)
        tensor.set_data_from_numpy(
            np.array([[j.request.input_text.encode("utf-8")] for j in batch], dtype=np.object_)
        )
        wanted = [grpcclient.InferRequestedOutput(model.outputs["embedding"].name)]
        started_ms, clock = time.time() * 1000, time.perf_counter()
        try:
            result = self._client().infer(
                model.triton_model, [tensor], outputs=wanted, client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            if _is_transient(exc):
                raise BackendUnavailableError(f"Triton at {self.url}: {_reason(exc)}") from exc
            if len(batch) > 1:  # find the row the model refuses; the others still succeed
                return {k: v for job in batch for k, v in self._embed([job]).items()}
            return {batch[0].index: BackendRejectedError(_reason(exc))}
        elapsed = (time.perf_counter() - clock) * 1000
        vectors = result.as_numpy(model.outputs["embedding"].name)
        return {
            job.index: Completion(
                embedding=[float(x) for x in vectors[row]],
                started_ms=started_ms,
                inference_ms=elapsed,
                batch_size=len(batch),
            )
            for row, job in enumerate(batch)
        }

    def _generate(
        self, job: Job, on_delta: Callable[[str], None] | None = None
    ) -> Completion | BackendRejectedError:
        model, request = job.model, job.request
        inputs = [_tensor(model.inputs["text_input"], request.input_text.encode("utf-8"))]
        params: dict[str, Any] = {"max_tokens": job.max_tokens}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        optional: dict[str, bytes | bool] = {
            "sampling_parameters": json.dumps(params).encode(),
            "exclude_input_in_output": True,
            "return_num_input_tokens": True,
            "return_num_output_tokens": True,
        }
        if on_delta is not None:
            optional["stream"] = True  # one response per delta (the vLLM backend's input)
        inputs += [
            _tensor(spec, optional[role]) for role, spec in model.inputs.items() if role in optional
        ]
        responses = self._stream()
        started_ms, clock = time.time() * 1000, time.perf_counter()
        try:
            self._client().async_stream_infer(
                model.triton_model,
                inputs,
                request_id=request.request_id,
                enable_empty_final_response=True,
            )
        except InferenceServerException as exc:
            self._reset_stream()
            raise BackendUnavailableError(f"Triton at {self.url}: {_reason(exc)}") from exc
        answer = _Answer(model)
        while True:
            try:
                result, error = responses.get(timeout=self.timeout_s)
            except queue.Empty:
                self._reset_stream()
                raise BackendUnavailableError(
                    f"Triton at {self.url}: no answer from {model.triton_model} within "
                    f"{self.timeout_s:.0f}s"
                ) from None
            if error is not None:
                if error.status() is None or not _is_transient(error):
                    # The model refused this request (bad parameters, context overflow).
                    return BackendRejectedError(_reason(error))
                self._reset_stream()
                raise BackendUnavailableError(f"Triton at {self.url}: {_reason(error)}")
            response = result.get_response()
            delta = answer.add(result, response)
            if delta and on_delta is not None:
                on_delta(delta)
            if response.parameters["triton_final_response"].bool_param:
                break
        elapsed = (time.perf_counter() - clock) * 1000
        return Completion(
            output_text=answer.text(),
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            started_ms=started_ms,
            inference_ms=elapsed,
        )

    def _stream(self) -> queue.Queue[tuple[Any, Any]]:
        responses: queue.Queue[tuple[Any, Any]] | None = getattr(self._local, "responses", None)
        if responses is None:
            responses = queue.Queue()
            sink = responses
            self._client().start_stream(
                callback=lambda result, error: sink.put((result, error)),
                stream_timeout=None,
            )
            self._local.responses = responses
        return responses

    def _reset_stream(self) -> None:
        """Forget this thread's client and stream: the next call opens fresh ones."""
        client = getattr(self._local, "client", None)
        if client is not None:
            try:
                client.stop_stream(cancel_requests=True)
                client.close()
            except Exception:  # closing a broken channel may fail; it is discarded anyway
                log.debug("closing a broken Triton client failed", exc_info=True)
        self._local.client = None
        self._local.responses = None


class _Answer:
    """A generation's responses put together: one whole answer, or a stream of deltas.

    Streamed, each response carries a delta of ``text_output``; the vLLM backend also
    sends the new tokens' count in each (its ``num_output_tokens`` is per response),
    textgen only in its last. So texts are joined and output counts added; the input
    count is the same in every response that has one.
    """

    def __init__(self, model: Any) -> None:
        self._names = {
            role: spec.name
            for role in ("text_output", "num_input_tokens", "num_output_tokens")
            if (spec := model.outputs.get(role)) is not None
        }
        self._texts: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def add(self, result: Any, response: Any) -> str:
        """Take one response in; its text (empty when it has none)."""
        names = {output.name for output in response.outputs}
        delta = ""
        if self._names.get("text_output") in names:
            delta = _text(result.as_numpy(self._names["text_output"])) or ""
            self._texts.append(delta)
        if self._names.get("num_input_tokens") in names:
            self.input_tokens = _count(result.as_numpy(self._names["num_input_tokens"]))
        if self._names.get("num_output_tokens") in names:
            count = _count(result.as_numpy(self._names["num_output_tokens"]))
            self.output_tokens = (self.output_tokens or 0) + count
        return delta

    def text(self) -> str | None:
        """The whole text, or None when no response had one."""
        return "".join(self._texts) if self._texts else None


def _quietly(deliver: Callable[[Any], None], value: Any) -> None:
    """Pass ``value`` to a stream; a stream that fails never fails the generation it watches."""
    try:
        deliver(value)
    except Exception as exc:  # the preview is lost; the result is still owed
        log.warning("a streamed generation's chunk was not passed on (%s)", type(exc).__name__)


def _tensor(spec: Any, value: bytes | bool) -> Any:
    tensor = grpcclient.InferInput(spec.name, [1], spec.dtype)
    dtype = np.object_ if spec.dtype == "BYTES" else np.bool_
    tensor.set_data_from_numpy(np.array([value], dtype=dtype))
    return tensor


def _text(array: Any) -> str | None:
    if array is None:
        return None
    value = array.reshape(-1)[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _count(array: Any) -> int:
    return int(array.reshape(-1)[0])
