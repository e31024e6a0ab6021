"""From requests to Triton work and from Triton answers to results: the pure half of infer.

Every request gets exactly one result. A request that can never succeed as it
is (unknown model, input over the model's limit, parameters out of range, a
request the model refuses) gets an error result with a machine-readable code
and a reason, and its original goes to the dead-letter topic for a replay
after the fix. Token counts come from the model's own tokenizer with padding
and truncation off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from streams.contracts.records import InferenceRequest, InferenceResult
from streams.llm.model_catalog import ModelCatalog, ModelCatalogError, ModelSpec

UNKNOWN_MODEL = "unknown_model"
INPUT_TOO_LONG = "input_too_long"
INVALID_REQUEST = "invalid_request"
BACKEND_REJECTED = "backend_rejected"

Counter = Callable[[ModelSpec, Sequence[str]], list[int]]


@dataclass(frozen=True, slots=True)
class Job:
    """A request that will be sent to Triton."""

    index: int  # position in the processor's batch
    request: InferenceRequest
    model: ModelSpec
    input_tokens: int
    max_tokens: int | None  # text_completion only
    arrived_ms: int  # when the request reached infer's input topic


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request that will never succeed as it is."""

    index: int
    request: InferenceRequest
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Completion:
    """What Triton answered for one job."""

    output_text: str | None = None
    embedding: list[float] | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    started_ms: float = 0.0  # epoch milliseconds when its Triton call began
    inference_ms: float = 0.0
    batch_size: int = 1


def plan(
    requests: Sequence[tuple[InferenceRequest, int]], catalog: ModelCatalog, count: Counter
) -> list[Job | Refusal]:
    """Check each (request, arrival ms) against the catalog and the model's limits."""
    by_model: dict[str, list[int]] = {}
    planned: list[Job | Refusal | None] = [None] * len(requests)
    for index, (request, _) in enumerate(requests):
        try:
            catalog.get(request.model)
        except ModelCatalogError:
            known = ", ".join(sorted(catalog.models))
            planned[index] = Refusal(
                index,
                request,
                UNKNOWN_MODEL,
                # Named by length: the field is the producer's free text.
                f"the model named ({len(request.model)} characters) is not served; known: {known}",
            )
            continue
        by_model.setdefault(request.model, []).append(index)
    for name, indexes in by_model.items():
        model = catalog.get(name)
        counts = count(model, [requests[i][0].input_text for i in indexes])
        for index, tokens in zip(indexes, counts, strict=True):
            request, arrived = requests[index]
            planned[index] = _check(index, request, model, tokens, arrived)
    return [p for p in planned if p is not None]


def _check(
    index: int, request: InferenceRequest, model: ModelSpec, tokens: int, arrived: int
) -> Job | Refusal:
    if tokens > model.max_input_tokens:
        return Refusal(
            index,
            request,
            INPUT_TOO_LONG,
            f"input is {tokens} tokens; {model.name} takes at most {model.max_input_tokens}",
        )
    max_tokens = None
    if model.task == "text_completion":
        max_tokens = request.max_tokens or model.default_max_tokens
        limit = model.max_output_tokens or 0
        if max_tokens is None or not 1 <= max_tokens <= limit:
            return Refusal(
                index,
                request,
                INVALID_REQUEST,
                f"max_tokens {max_tokens} is outside 1..{limit} for {model.name}",
            )
        if request.temperature is not None and not 0 <= request.temperature <= 2:
            return Refusal(
                index,
                request,
                INVALID_REQUEST,
                f"temperature {request.temperature} is outside 0..2",
            )
    return Job(index, request, model, tokens, max_tokens, arrived)


def micro_batches(jobs: Sequence[Job], max_batch_size: int | None = None) -> Iterator[list[Job]]:
    """Jobs grouped per model into Triton calls no larger than the model (or setting) allows.

    Models without Triton batching (``max_batch_size`` 0, e.g. vLLM-style
    generation) get one job per call.
    """
    by_model: dict[str, list[Job]] = {}
    for job in jobs:
        by_model.setdefault(job.model.name, []).append(job)
    for model_jobs in by_model.values():
        model = model_jobs[0].model
        size = model.max_batch_size or 1
        if max_batch_size is not None and model.max_batch_size:
            size = min(size, max_batch_size)
        for start in range(0, len(model_jobs), size):
            yield model_jobs[start : start + size]


def result_of(
    job: Job, done: Completion, *, version: str, device: str, now: datetime
) -> InferenceResult:
    """The ok result of a job."""
    request = job.request
    created_ms = request.created_at.timestamp() * 1000
    now_ms = now.timestamp() * 1000
    return InferenceResult(
        request_id=request.request_id,
        tenant_id=request.tenant_id,
        model=request.model,
        model_version=version,
        operation=job.model.operation,
        status="ok",
        output_text=done.output_text,
        embedding=done.embedding,
        # Our tokenizer's count is the contract; a model's own count, when it sends one,
        # must agree, and tests check that it does.
        input_tokens=job.input_tokens,
        output_tokens=done.output_tokens or 0,
        request_created_at=request.created_at,
        completed_at=now,
        queue_ms=max(0.0, done.started_ms - job.arrived_ms),
        inference_ms=done.inference_ms,
        e2e_ms=max(0.0, now_ms - created_ms),
        batch_size=done.batch_size,
        device=device,
        input_guard=request.guard,
        metadata=dict(request.metadata),
    )


def error_result(
    request: InferenceRequest, code: str, message: str, *, now: datetime, operation: str = ""
) -> InferenceResult:
    """The error result of a request that got no model output."""
    return InferenceResult(
        request_id=request.request_id,
        tenant_id=request.tenant_id,
        model=request.model,
        operation=operation,
        status="error",
        error_code=code,
        error_message=message,
        request_created_at=request.created_at,
        completed_at=now,
        e2e_ms=max(0.0, (now - request.created_at).total_seconds() * 1000),
        input_guard=request.guard,
        metadata=dict(request.metadata),
    )
