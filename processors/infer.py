"""infer: ``inference.requests.safe`` → ``inference.responses``, through Triton.

This is the stage that spends the money, so it keeps the accelerator busy with
full batches while every request gets exactly one result:

* the runner hands over up to ``SLUICE_INFER__MAX_RECORDS_PER_POLL`` requests,
  waiting at most ``SLUICE_INFER__MAX_BATCH_LATENCY_MS`` for them;
* they are routed by their ``model`` field (``infra/triton/models.yaml``),
  checked against the model's limits with its own tokenizer, cut into
  micro-batches of the model's batch size, and sent with up to
  ``SLUICE_INFER__MAX_IN_FLIGHT`` Triton calls at once;
* Triton unreachable or overloaded: the runner aborts the transaction, rewinds,
  pauses the partitions and retries with backoff, so the backlog drains when
  Triton returns; a request that can never succeed gets an error result and
  its original goes to the DLQ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram

from processors.inferring.gateway import (
    BackendRejectedError,
    BackendUnavailableError,
    TritonGateway,
)
from processors.inferring.planning import (
    BACKEND_REJECTED,
    Completion,
    Job,
    Refusal,
    error_result,
    micro_batches,
    plan,
    result_of,
)
from processors.inferring.settings import InferSettings
from streams.errors import RecordError, TransientError
from streams.models import ModelCatalog, load_models
from streams.processor import Context, InputRecord, Outcome, Output, ProcessorSpec
from streams.records import InferenceRequest, InferenceResult, utcnow
from streams.settings import Settings
from streams.stack.triton import Triton
from streams.tokenizing import TokenCounter, search_paths

_TRACER = trace.get_tracer("sluice.infer")
REQUESTS = "inference.requests.safe"
RESPONSES = "inference.responses"

RESULTS = Counter(
    "sluice_infer_results_total", "Results produced, by model and status.", ["model", "status"]
)
TOKENS = Counter(
    "sluice_infer_tokens_total",
    "Tokens served, by model and kind (input/output).",
    ["model", "kind"],
)
MICRO_BATCH = Histogram(
    "sluice_infer_micro_batch_size",
    "Requests per Triton call.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
TRITON_SECONDS = Histogram(
    "sluice_infer_triton_seconds",
    "Duration of one Triton call.",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_SECONDS = Histogram(
    "sluice_infer_queue_seconds",
    "From arrival in the input topic to the Triton call.",
    ["model"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def infer_batch(
    records: Sequence[InputRecord],
    *,
    catalog: ModelCatalog,
    counter: TokenCounter,
    gateway: TritonGateway,
    settings: InferSettings,
    device: str,
) -> list[Outcome]:
    """One outcome per request: its result, or an error result plus a dead letter."""
    requests = [(InferenceRequest.from_avro(r.value), r.timestamp_ms) for r in records]
    spans = [r.span for r in records]
    planned = plan(requests, catalog, counter.count)
    jobs = [p for p in planned if isinstance(p, Job)]
    try:
        done = gateway.run(list(micro_batches(jobs, settings.max_batch_size))) if jobs else {}
        versions = {j.model.triton_model: gateway.model_version(j.model.triton_model) for j in jobs}
    except BackendUnavailableError as exc:
        raise TransientError(str(exc)) from exc
    now = utcnow()
    outcomes: list[Outcome] = []
    for item in planned:
        if isinstance(item, Refusal):
            outcomes.append(_refused(item.request, item.code, item.message, now))
            continue
        answer = done[item.index]
        if isinstance(answer, BackendRejectedError):
            outcomes.append(
                _refused(item.request, BACKEND_REJECTED, str(answer), now, item.model.operation)
            )
            continue
        answer = _with_output_tokens(item, answer, counter)
        result = result_of(
            item, answer, version=versions[item.model.triton_model], device=device, now=now
        )
        _observe(item, answer, result.input_tokens, result.output_tokens)
        _trace(spans[item.index], item, answer, result, gateway.url)
        outcomes.append([Output(RESPONSES, result.to_avro(), key=result.request_id)])
    return outcomes


def _with_output_tokens(job: Job, done: Completion, counter: TokenCounter) -> Completion:
    """A model that does not report its output tokens gets them counted here."""
    if done.output_text is None or done.output_tokens is not None:
        return done
    [tokens] = counter.count(job.model, [done.output_text])
    return Completion(
        done.output_text,
        done.embedding,
        done.input_tokens,
        tokens,
        done.started_ms,
        done.inference_ms,
        done.batch_size,
    )


def _refused(
    request: InferenceRequest, code: str, message: str, now: datetime, operation: str = ""
) -> RecordError:
    result = error_result(request, code, message, now=now, operation=operation)
    RESULTS.labels(request.model, "error").inc()
    return RecordError(
        "infer",
        f"{code}: {message}",
        error_class=code,
        details={"model": request.model, "request_id": request.request_id},
        outputs=[Output(RESPONSES, result.to_avro(), key=request.request_id)],
    )


def _observe(job: Job, done: Completion, input_tokens: int, output_tokens: int) -> None:
    model = job.request.model
    RESULTS.labels(model, "ok").inc()
    TOKENS.labels(model, "input").inc(input_tokens)
    TOKENS.labels(model, "output").inc(output_tokens)
    QUEUE_SECONDS.labels(model).observe(max(0.0, done.started_ms - job.arrived_ms) / 1000)
    TRITON_SECONDS.labels(model).observe(done.inference_ms / 1000)
    MICRO_BATCH.labels(model).observe(done.batch_size)


def _trace(span: Any, job: Job, done: Completion, result: InferenceResult, url: str) -> None:
    """Mark the request's span with GenAI attributes and add the Triton call as its child.

    A micro-batch is one Triton call; each of its requests' traces shows it.
    """
    if span is None:
        return
    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": job.model.operation,
        "gen_ai.system": "triton",
        "gen_ai.request.model": job.request.model,
        "gen_ai.response.model": f"{job.model.triton_model}:{result.model_version}",
        "gen_ai.usage.input_tokens": result.input_tokens,
        "gen_ai.usage.output_tokens": result.output_tokens,
        "sluice.tenant_id": job.request.tenant_id,
        "sluice.request_id": job.request.request_id,
    }
    span.set_attributes(attributes)
    start_ns = int(done.started_ms * 1_000_000)
    call = _TRACER.start_span(
        f"{job.model.operation} {job.request.model}",
        context=trace.set_span_in_context(span),
        kind=SpanKind.CLIENT,
        start_time=start_ns,
        attributes={
            **attributes,
            "server.address": url,
            "sluice.batch_size": done.batch_size,
            "sluice.queue_ms": result.queue_ms,
        },
    )
    call.end(end_time=start_ns + int(done.inference_ms * 1_000_000))


def local_device(settings: Settings) -> str:
    """The device the local stack's Triton runs its models on (its status file), if any."""
    try:
        status = json.loads(Triton(settings).status_file.read_text())
    except (OSError, ValueError):
        return "triton"
    return str(status.get("device") or "triton")


# -- the processor declaration --------------------------------------------------------
def _setup(ctx: Context) -> None:
    settings = InferSettings()
    triton = ctx.settings.triton
    catalog = load_models(triton.models_file)
    ctx.resources["settings"] = settings
    ctx.resources["catalog"] = catalog
    ctx.resources["counter"] = TokenCounter(catalog.path.parent, search_paths(ctx.settings))
    ctx.resources["gateway"] = TritonGateway(
        triton.url, timeout_s=triton.timeout_s, max_in_flight=settings.max_in_flight
    )
    ctx.resources["device"] = settings.device or local_device(ctx.settings)


def _teardown(ctx: Context) -> None:
    gateway: TritonGateway | None = ctx.resources.get("gateway")
    if gateway is not None:
        gateway.close()


def _process_batch(records: Sequence[InputRecord], ctx: Context) -> list[Outcome]:
    r = ctx.resources
    return infer_batch(
        records,
        catalog=r["catalog"],
        counter=r["counter"],
        gateway=r["gateway"],
        settings=r["settings"],
        device=r["device"],
    )


def _batching() -> tuple[int, int]:
    settings = InferSettings()
    return settings.max_records_per_poll, settings.max_batch_latency_ms


PROCESSOR = ProcessorSpec(
    name="infer",
    description="Micro-batch safe requests onto Triton; exactly one result per request.",
    inputs=lambda catalog: [REQUESTS],
    outputs=lambda catalog: [RESPONSES],
    process_batch=_process_batch,
    setup=_setup,
    teardown=_teardown,
    batching=_batching,
)
