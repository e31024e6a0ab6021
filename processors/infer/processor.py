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
  its original goes to the DLQ;
* a request guard did not sign, or signed with a verdict that does not let it
  through, is dead-lettered (``UnverifiedVerdict``) before it is planned or
  served, and gets no result: whoever wrote it bypassed guard, so it is owed
  nothing and nothing is metered for it;
* an instance serves one lane (``SLUICE_INFER__LANE``, declared in the model
  catalog) in a consumer group of its own: a request for another lane's model is
  committed and skipped, before its verdict is checked, so that whatever a
  request is owed (a result, an error result, a dead letter) comes from exactly
  one lane. A record that does not decode names no model: it is the default
  lane's, like a request for an unknown model;
* a request with ``stream: true`` for a model with the ``stream`` input has its
  deltas produced to ``inference.chunks.raw`` as Triton sends them, by a producer
  of their own that does not wait for the transaction (processors/infer/chunks.py);
  its result is the same as unstreamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram

from processors.infer.chunks import CHUNKS, ChunkPublisher
from processors.infer.lanes import in_lane, model_peek
from processors.infer.planning import (
    BACKEND_REJECTED,
    Completion,
    Job,
    Refusal,
    error_result,
    micro_batches,
    plan,
    result_of,
)
from processors.infer.response_cache import ResponseCache
from processors.infer.settings import InferSettings, group_of
from processors.infer.triton_calls import (
    BackendRejectedError,
    BackendUnavailableError,
    TritonBackend,
)
from streams.contracts.peek import TENANT_FIELD, FieldPeek
from streams.contracts.records import InferenceRequest, InferenceResult, utcnow
from streams.errors import RecordError, TransientError, UnverifiedVerdict, inference_refusal
from streams.llm.model_catalog import DEFAULT_LANE, ModelCatalog, load_models
from streams.llm.rate_limits import Shares, load_shares
from streams.llm.tokenizing import TokenCounter, search_paths
from streams.runtime import kafka
from streams.runtime.metrics import bounded_label
from streams.runtime.signing import UnverifiedError, Verifier
from streams.runtime.spec import Context, InputRecord, Outcome, Output, ProcessorSpec, Share

_TRACER = trace.get_tracer("sluice.infer")
REQUESTS = "inference.requests.safe"
RESPONSES = "inference.responses"
PUBLIC_KEYS_SETTING = "SLUICE_INFER__VERDICT_PUBLIC_KEYS"
#: Verdicts that let a request through (guard writes ``block`` to .blocked, never to .safe).
PASSING_ACTIONS = frozenset({"pass", "flag"})

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
#: A model's latency SLO threshold must be one of these (infra/triton/models.yaml `slo:`).
TRITON_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TRITON_SECONDS = Histogram(
    "sluice_infer_triton_seconds",
    "Duration of one Triton call, observed once per request it served.",
    ["model"],
    buckets=TRITON_SECONDS_BUCKETS,
)
SKIPPED = Counter(
    "sluice_infer_skipped_total",
    "Requests of other lanes' models read and skipped, by this instance's lane: the read "
    "cost of lanes sharing inference.requests.safe.",
    ["lane"],
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
    backend: TritonBackend,
    settings: InferSettings,
    device: str,
    cache: ResponseCache | None = None,
    chunks: ChunkPublisher | None = None,
) -> list[Outcome]:
    """One outcome per request: its result, or an error result plus a dead letter.

    With ``chunks``, the deltas of streamed requests go there as they arrive.
    """
    requests = [(InferenceRequest.from_avro(r.value), r.timestamp_ms) for r in records]
    spans = [r.span for r in records]
    planned = plan(requests, catalog, counter.count)
    jobs = [p for p in planned if isinstance(p, Job)]
    cache = ResponseCache(0, 0, 0) if cache is None else cache
    try:
        versions = {j.model.triton_model: backend.model_version(j.model.triton_model) for j in jobs}
        # Repeats of deterministic requests are answered from the cache, not sent. A
        # streamed request answered there gets no chunks: its caller gets the whole result.
        lookup = cache.lookup(jobs, versions)
        sent = lookup.to_send
        # A stream per Triton call: a batch the runner retries streams again, as a new
        # attempt.
        streams = {
            job.index: chunks.open(job)
            for job in sent
            if chunks is not None and job.request.stream and job.model.streams
        }
        done = (
            backend.run(list(micro_batches(sent, settings.max_batch_size)), streams) if sent else {}
        )
        done = lookup.answers(done)
    except BackendUnavailableError as exc:
        raise TransientError(str(exc)) from exc
    now = utcnow()
    outcomes: list[Outcome] = []
    for item in planned:
        if isinstance(item, Refusal):
            outcomes.append(_refused(item.request, item.code, item.message, now, catalog=catalog))
            continue
        answer = done[item.index]
        if isinstance(answer, BackendRejectedError):
            outcomes.append(
                _refused(
                    item.request,
                    BACKEND_REJECTED,
                    str(answer),
                    now,
                    item.model.operation,
                    catalog=catalog,
                )
            )
            continue
        answer = _with_output_tokens(item, answer, counter)
        result = result_of(
            item, answer, version=versions[item.model.triton_model], device=device, now=now
        )
        result = lookup.finish(item, answer, result)
        _observe(item, answer, result.input_tokens, result.output_tokens, catalog=catalog)
        _trace(spans[item.index], item, answer, result, backend.url)
        outcomes.append([Output(RESPONSES, result.to_avro(), key=result.request_id)])
    return outcomes


def check_verdict(record: InputRecord, verifier: Verifier) -> UnverifiedVerdict | None:
    """Why ``record`` may not reach a model (guard did not pass it), or None.

    The signature is checked over the bytes as consumed, before the decoded value is
    trusted; the reasons name what is wrong, never a value of the record.
    """
    try:
        ident = verifier.verify(record.topic, record.key, record.raw, record.headers)
    except UnverifiedError as exc:
        return UnverifiedVerdict(str(exc))
    verdict = record.value.get("guard") if isinstance(record.value, dict) else None
    if verdict is None:
        return UnverifiedVerdict(
            f"signed by key {ident} but carries no guard verdict", details={"key_id": ident}
        )
    action = verdict.get("action")
    if action not in PASSING_ACTIONS:
        shown = "block" if action == "block" else "not pass or flag"
        return UnverifiedVerdict(
            f"signed by key {ident} but guard's verdict is {shown}", details={"key_id": ident}
        )
    return None


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


def model_label(model: str, catalog: ModelCatalog) -> str:
    """The ``model`` label of a request's model: a catalog name, or ``other``."""
    return bounded_label(model, catalog.models)


def _refused(
    request: InferenceRequest,
    code: str,
    message: str,
    now: datetime,
    operation: str = "",
    *,
    catalog: ModelCatalog,
) -> RecordError:
    result = error_result(request, code, message, now=now, operation=operation)
    RESULTS.labels(model_label(request.model, catalog), "error").inc()
    return inference_refusal(code)(
        f"{code}: {message}",
        # The model as the catalog names it ("other" for an unknown one): the field is free text.
        details={"model": model_label(request.model, catalog), "request_id": request.request_id},
        outputs=[Output(RESPONSES, result.to_avro(), key=request.request_id)],
    )


def _observe(
    job: Job, done: Completion, input_tokens: int, output_tokens: int, *, catalog: ModelCatalog
) -> None:
    model = model_label(job.request.model, catalog)
    RESULTS.labels(model, "ok").inc()
    TOKENS.labels(model, "input").inc(input_tokens)
    TOKENS.labels(model, "output").inc(output_tokens)
    QUEUE_SECONDS.labels(model).observe(max(0.0, done.started_ms - job.arrived_ms) / 1000)
    if done.batch_size:  # a cache hit made no Triton call
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
    span.set_attributes({**attributes, "sluice.cache_hit": result.cache_hit})
    if result.cache_hit:
        return  # answered from the cache: there is no Triton call to show
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


# -- the processor declaration --------------------------------------------------------
@dataclass
class InferResources:
    """The model catalog, token counter, Triton client, device label, guard's public keys."""

    catalog: ModelCatalog
    counter: TokenCounter
    backend: TritonBackend
    device: str
    verifier: Verifier
    # Answers of deterministic requests, for their repeats (response_cache.py).
    cache: ResponseCache = field(
        default_factory=lambda: ResponseCache.from_settings(InferSettings())
    )
    # Produces streamed requests' deltas; None: requests are answered whole, never streamed.
    chunks: ChunkPublisher | None = None
    # Reads the model name of another lane's record without decoding it (cached per schema).
    peek: FieldPeek = field(default_factory=model_peek)
    # Each tenant's weight when tenants compete (the rate limits file's shares).
    shares: Shares = field(default_factory=Shares)
    # Reads a request's tenant for the runner's fair window without decoding it.
    tenant_peek: FieldPeek = field(default_factory=lambda: FieldPeek(TENANT_FIELD))


InferContext = Context[InferSettings, InferResources]


def _setup(ctx: Context[InferSettings, None]) -> InferResources:
    # First: without guard's public keys infer could not tell a verdict from a forgery.
    verifier = Verifier.from_settings(ctx.config.verdict_public_keys, PUBLIC_KEYS_SETTING)
    triton = ctx.settings.triton
    catalog = load_models(triton.models_file)
    catalog.check_lane(ctx.config.lane)
    _announce_lane(ctx, catalog)
    return InferResources(
        catalog=catalog,
        counter=TokenCounter(catalog.path.parent, search_paths(ctx.settings)),
        backend=TritonBackend(
            triton.url, timeout_s=triton.timeout_s, max_in_flight=ctx.config.max_in_flight
        ),
        device=ctx.config.device or "triton",
        verifier=verifier,
        cache=ResponseCache.from_settings(ctx.config),
        shares=load_shares(ctx.config.rate_limits_path(ctx.settings.schemas_dir)),
        chunks=ChunkPublisher(
            lambda: (
                kafka.producer(ctx.settings, **{"linger.ms": ctx.config.chunk_linger_ms}),
                ctx.serde.encoder(CHUNKS),
                ctx.catalog.physical(CHUNKS),
            )
        ),
    )


def _share_of(ctx: Context[InferSettings, InferResources], record: InputRecord) -> Share:
    """Whose turn a request waits for: the ``tenant_id`` guard signed into it.

    Read from the bytes, unverified: only guard's principal may write
    ``inference.requests.safe``, and a record guard did not sign is dead-lettered when its
    turn comes, whichever share it waited in.
    """
    r = ctx.resources
    return r.shares.share(r.tenant_peek.read(ctx.serde, record.raw, record.topic))


def _announce_lane(ctx: Context[InferSettings, None], catalog: ModelCatalog) -> None:
    """Say which models this instance serves, and which other lanes must run beside it."""
    lane = ctx.config.lane
    served = sorted(m for m in catalog.models if catalog.lane_of(m) == lane)
    ctx.logger.info(
        "lane %s (group %s): serves %s",
        lane,
        group_of(ctx.config),
        ", ".join(served) + (" and unknown models" if lane == DEFAULT_LANE else ""),
    )
    if lane == DEFAULT_LANE:
        for other, models in sorted(catalog.lanes.items()):
            # Not an error: the lane may run elsewhere. Its requests wait for it meanwhile.
            ctx.logger.info(
                "lane %s serves %s: run an infer with SLUICE_INFER__LANE=%s beside this one",
                other,
                ", ".join(models),
                other,
            )


def _teardown(ctx: InferContext) -> None:
    ctx.resources.backend.close()
    if ctx.resources.chunks is not None:
        ctx.resources.chunks.close()


def _after_commit(ctx: InferContext) -> None:
    ctx.resources.cache.commit()


def _rollback(ctx: InferContext) -> None:
    # The batch's answers were not written: a retry is served as its first attempt was.
    ctx.resources.cache.rollback()


def _process_batch(records: Sequence[InputRecord], ctx: InferContext) -> list[Outcome]:
    r = ctx.resources
    lane = ctx.config.lane
    # Another lane's records first, before anything else is checked: each record's
    # outcome comes from exactly one lane.
    lanes = [
        in_lane(
            record, lane=lane, models=r.catalog, topics=ctx.catalog, serde=ctx.serde, peek=r.peek
        )
        for record in records
    ]
    mine = {i: x for i, x in enumerate(lanes) if isinstance(x, InputRecord)}
    skipped = 0
    for record, sorted_as in zip(records, lanes, strict=True):
        passed_on = isinstance(sorted_as, list) and not sorted_as
        skipped += passed_on
        if record.span is not None:
            # Every lane's consumer span is in a sampled request's trace: say which served it.
            record.span.set_attributes(
                {"sluice.infer.lane": lane, "sluice.infer.skipped": passed_on}
            )
    if skipped:
        SKIPPED.labels(lane).inc(skipped)
    outcomes: list[Outcome | None] = [
        check_verdict(x, r.verifier) if isinstance(x, InputRecord) else x for x in lanes
    ]
    passed = [i for i, refusal in enumerate(outcomes) if refusal is None]
    if passed:
        served = infer_batch(
            [mine[i] for i in passed],
            catalog=r.catalog,
            counter=r.counter,
            backend=r.backend,
            settings=ctx.config,
            device=r.device,
            cache=r.cache,
            chunks=r.chunks,
        )
        for index, outcome in zip(passed, served, strict=True):
            outcomes[index] = outcome
    return [o for o in outcomes if o is not None]


PROCESSOR: ProcessorSpec[InferSettings, InferResources] = ProcessorSpec(
    name="infer",
    description="Micro-batch safe requests onto Triton; exactly one result per request.",
    settings=InferSettings,
    inputs=lambda catalog, settings: [REQUESTS],
    # CHUNKS is written by infer's own chunk producer, outside the transaction.
    outputs=lambda catalog, settings: [RESPONSES, CHUNKS],
    process_batch=_process_batch,
    # infer decodes itself (in_lane): a record it cannot decode is one lane's to dead-letter.
    decode_inputs=False,
    group=group_of,
    setup=_setup,
    teardown=_teardown,
    after_commit=_after_commit,
    rollback=_rollback,
    batching=lambda settings: (settings.max_records_per_poll, settings.max_batch_latency_ms),
    share_of=_share_of,
)
