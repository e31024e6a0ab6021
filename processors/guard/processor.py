"""guard: the gate between tenants' text and models, and between models and storage.

Two routes in one processor (one consumer group, one transaction per batch):

* ``inference.requests`` → ``inference.requests.safe`` (PII redacted per the
  tenant's policy in every free-text field, the prompt injection-scored, with the
  verdict) or ``inference.requests.blocked`` (the redacted copy and the reason: a
  PII entity whose policy is ``block``, a prompt injection, a ``user_id`` that is
  personal data, an exhausted budget, a request id the tenant already used or a
  request too old to tell (``processors.guard.replay``), a request whose worst-case
  cost, reserved on top of the spend and the requests in flight, would break a hard
  budget (``processors.guard.reservations``), or an analyzer that failed —
  guard fails closed);
  before any of that, each request must be signed by a registered tenant's key
  (``identity``): an unsigned or forged one is dead-lettered
  (``UnauthenticatedRequest``), one whose ``tenant_id`` is not its signer's is
  blocked (``tenant_mismatch``), attributed to the signer; then, still before any
  analysis, the tenant's rate limit (``rate_gate``): a request over its tenant's
  requests or tokens per minute is blocked (``rate_limited``), its text withheld;
* ``inference.responses`` → ``inference.results``: the model's output, error
  message and metadata redacted the same way before anyone stores them.

Every finding goes to ``pii.findings`` with offsets, type, score and
recognizer, never the matched text. The engine (``processors.guard``) does
the work and is pure; this module maps records to it and back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from processors.guard import GuardEngine, GuardItem, Inspection
from processors.guard.budget_gate import BudgetGate
from processors.guard.embedder import EmbedderError
from processors.guard.engine import BLOCK, INPUT_FIELD, OUTPUT_FIELD
from processors.guard.fields import (
    ERROR_MESSAGE,
    SOURCE,
    USER_ID,
    USER_ID_PERSONAL_DATA,
    WITHHELD_USER_ID,
    FreeText,
    combine,
    personal_user_id,
    reassemble,
    side_verdict,
)
from processors.guard.identity import TenantIdentity, blocked_copy
from processors.guard.rate_gate import RATE_LIMITED, RateGate
from processors.guard.replay import RequestIdGate
from processors.guard.reservations import ReservationLedger
from processors.guard.settings import GuardSettings
from processors.guard.shares import GuardShares
from streams.contracts.records import GuardVerdict, InferenceRequest, InferenceResult, PiiFinding
from streams.errors import TransientError, UnauthenticatedRequest
from streams.llm.budgets import load_budgets
from streams.llm.model_catalog import load_models
from streams.llm.pricing import load_prices
from streams.llm.rate_limits import UNATTRIBUTED, load_rate_limits, load_shares
from streams.runtime.signing import Signer
from streams.runtime.spec import (
    Context,
    InputRecord,
    Outcome,
    Output,
    ProcessorSpec,
    RecordSigner,
    Share,
)
from streams.runtime.tenants import TenantRegistry

REQUESTS = "inference.requests"
SAFE = "inference.requests.safe"
BLOCKED = "inference.requests.blocked"
RESPONSES = "inference.responses"
RESULTS = "inference.results"
FINDINGS = "pii.findings"
BUDGET_EXCEEDED = "budget_exceeded"

#: Presidio logs the text it analyses at DEBUG (its context words): held at WARNING, so
#: that even SLUICE_LOG_LEVEL=DEBUG never writes a prompt to guard's log.
TEXT_LOGGERS = ("presidio-analyzer", "presidio-anonymizer")

#: Answers "why must this request (as guard would let it through) stop?" (None: it may go
#: on, and its worst case is then reserved against its tenant's hard budget).
BudgetCheck = Callable[[InferenceRequest], "str | None"]
#: Answers "may this tenant use this request id now?" (None: yes); remembers the id.
ReplayCheck = Callable[[str, str, datetime], "str | None"]


def tenant_of(request: InferenceRequest) -> str:
    """The tenant a request is accounted to: budgets and request ids are per tenant."""
    return request.tenant_id


# -- pure functions -----------------------------------------------------------------
def guard_requests(
    requests: Sequence[InferenceRequest],
    engine: GuardEngine,
    over_budget: BudgetCheck | None = None,
    spans: Sequence[Any] | None = None,
    replayed: ReplayCheck | None = None,
) -> list[list[Output]]:
    """Inspect every free-text field; per request, its safe or blocked copy plus its findings.

    The prompt, ``user_id``, ``source`` and the metadata's keys and values of the whole
    batch go to the engine in one batch (see ``fields``); only prompts are scored for
    injection. A user_id that is personal data blocks the request and is withheld.
    ``replayed`` is asked about every request, in order, so the second copy of an id
    in one batch is blocked too; its reason wins over the others.
    """
    free = [
        FreeText.of(
            (INPUT_FIELD, r.input_text),
            [(USER_ID, r.user_id), (SOURCE, r.source)],
            r.metadata,
        )
        for r in requests
    ]
    inspections = iter(
        once_per_text(
            engine.inspect_batch,
            [
                item
                for r, f in zip(requests, free, strict=True)
                for item in f.items(r.request_id, r.tenant_id)
            ],
        )
    )
    outputs: list[list[Output]] = []
    for request, text in zip(requests, free, strict=True):
        guarded = reassemble(text, [next(inspections) for _ in text.slots])
        assert guarded.main is not None  # noqa: S101 (the prompt is always inspected)
        user = guarded.inspections.get(USER_ID)
        refused = user is not None and personal_user_id(request.user_id or "", user)
        verdict = combine(
            guarded.main.verdict, guarded.others, USER_ID_PERSONAL_DATA if refused else None
        )
        replay = (
            replayed(tenant_of(request), request.request_id, request.created_at)
            if replayed is not None
            else None
        )
        if replay is not None:
            verdict = dataclasses.replace(verdict, action=BLOCK, reason=replay)
        safe = dataclasses.replace(
            request,
            input_text=guarded.texts[INPUT_FIELD],
            user_id=WITHHELD_USER_ID if refused else guarded.texts.get(USER_ID, request.user_id),
            source=guarded.texts.get(SOURCE, request.source),
            metadata=guarded.metadata,
            guard=verdict,
        )
        span = spans[len(outputs)] if spans else None
        if verdict.action != BLOCK and over_budget is not None:
            # Asked last, with the redacted text infer will see: a request that passes
            # here holds its worst case against the tenant's budget.
            detail = over_budget(safe)
            if detail is not None:
                verdict = dataclasses.replace(verdict, action=BLOCK, reason=BUDGET_EXCEEDED)
                safe = dataclasses.replace(safe, guard=verdict)
                if span is not None:
                    span.set_attribute("sluice.guard.budget_detail", detail)
        trace_verdict(span, INPUT_FIELD, request, verdict)
        topic = BLOCKED if verdict.action == BLOCK else SAFE
        outputs.append(
            [Output(topic, safe.to_avro(), key=request.request_id), *_findings(guarded.findings)]
        )
    return outputs


def guard_results(
    results: Sequence[InferenceResult], engine: GuardEngine, spans: Sequence[Any] | None = None
) -> list[list[Output]]:
    """Redact model outputs; per result, the stored result plus its findings.

    Embedding results have no text and pass with a verdict that says so; a
    result whose analysis failed keeps its status but its text is withheld.
    """
    free = [
        FreeText.of(
            (OUTPUT_FIELD, r.output_text) if r.output_text else None,
            [(ERROR_MESSAGE, r.error_message)],
            r.metadata,
        )
        for r in results
    ]
    inspections = iter(
        once_per_text(
            engine.redact_batch,
            [
                item
                for r, f in zip(results, free, strict=True)
                for item in f.items(r.request_id, r.tenant_id)
            ],
        )
    )
    outputs = []
    for index, (result, text) in enumerate(zip(results, free, strict=True)):
        guarded = reassemble(text, [next(inspections) for _ in text.slots])
        verdict = (
            combine(guarded.main.verdict, guarded.others, None)
            if guarded.main is not None
            else side_verdict(guarded.others)
        )
        stored = dataclasses.replace(
            result,
            output_text=guarded.texts.get(OUTPUT_FIELD, result.output_text),
            error_message=guarded.texts.get(ERROR_MESSAGE, result.error_message),
            metadata=guarded.metadata,
            output_guard=verdict if verdict is not None else result.output_guard,
        )
        if verdict is not None:
            trace_verdict(spans[index] if spans else None, OUTPUT_FIELD, result, verdict)
        outputs.append(
            [Output(RESULTS, stored.to_avro(), key=result.request_id), *_findings(guarded.findings)]
        )
    return outputs


def once_per_text(
    inspect: Callable[[Sequence[GuardItem]], list[Inspection]], items: Sequence[GuardItem]
) -> list[Inspection]:
    """``inspect(items)``, analysing each distinct text of a tenant once per batch.

    Metadata keys, sources and their values repeat from request to request
    ("feature", "sdk:app"): each costs a whole analyzer pass however short it is.
    Prompts are kept apart from the other fields (only prompts are scored for
    injection); each copy gets its own request id and field back.
    """
    first: dict[tuple[str, bool, str], int] = {}
    unique: list[GuardItem] = []
    slot: list[int] = []
    for item in items:
        key = (item.tenant_id, item.field == INPUT_FIELD, item.text)
        if key not in first:
            first[key] = len(unique)
            unique.append(item)
        slot.append(first[key])
    inspected = inspect(unique)
    return [_as_item(inspected[i], item) for i, item in zip(slot, items, strict=True)]


def _as_item(inspection: Inspection, item: GuardItem) -> Inspection:
    """``inspection`` of another item with the same text, told of ``item``."""
    if (inspection.request_id, inspection.field) == (item.request_id, item.field):
        return inspection
    findings = tuple(
        dataclasses.replace(f, request_id=item.request_id, field=item.field)
        for f in inspection.findings
    )
    return dataclasses.replace(
        inspection, request_id=item.request_id, field=item.field, findings=findings
    )


def trace_verdict(
    span: Any, field: str, record: InferenceRequest | InferenceResult, verdict: GuardVerdict
) -> None:
    """Guard's decision on the record's span: action, reason, counts; never text or values."""
    if span is None:
        return
    span.set_attributes(
        {
            "sluice.guard.field": field,
            "sluice.guard.action": verdict.action,
            "sluice.guard.reason": verdict.reason or "",
            "sluice.guard.policy_version": verdict.policy_version,
            "sluice.guard.entities": ",".join(
                f"{k}:{v}" for k, v in sorted(verdict.entity_counts.items())
            ),
            "sluice.guard.injection_score": verdict.injection_score,
            "sluice.tenant_id": record.tenant_id,
            "sluice.request_id": record.request_id,
        }
    )


def _findings(findings: Sequence[PiiFinding]) -> list[Output]:
    return [Output(FINDINGS, f.to_avro(), key=f.request_id) for f in findings]


# -- the processor declaration --------------------------------------------------------
@dataclasses.dataclass
class GuardResources:
    """The engine (Presidio, policy, injection scorer), the tenants' keys and the gates."""

    engine: GuardEngine
    over_budget: BudgetGate | None
    identity: TenantIdentity
    request_ids: RequestIdGate | None = None
    rate_limits: RateGate | None = None
    # Whose turn each record waits for in the runner's fair window (shares.py).
    shares: GuardShares | None = None


GuardContext = Context[GuardSettings, GuardResources]


def _setup(ctx: Context[GuardSettings, None]) -> GuardResources:
    for name in TEXT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    settings = ctx.config
    enforce = settings.budgets == "enforce"
    # Keys and config first: without them guard must not start, rather than enforce nothing.
    verifier = settings.budget_verifier() if enforce else None
    budgets = load_budgets(settings.budgets_path(ctx.settings.schemas_dir)) if enforce else None
    rate_limits = (
        load_rate_limits(settings.rate_limits_path(ctx.settings.schemas_dir))
        if settings.rate_limits == "enforce"
        else None
    )
    # infer's catalog: what a request can cost once it passes (budgets and rate limits).
    models = (
        load_models(ctx.settings.triton.models_file) if enforce or rate_limits is not None else None
    )
    tenants = TenantRegistry.load(settings.tenants_path)  # before the engine starts a process
    engine = GuardEngine.from_settings(
        settings,
        platform_triton_url=ctx.settings.triton.url,
        pseudonym_key_ids=tenants.pseudonym_key_id,
    )
    over_budget = None
    if verifier is not None and budgets is not None and models is not None:
        over_budget = BudgetGate(
            ctx.settings,
            ctx.catalog,
            verifier=verifier,
            budgets=budgets,
            ready_timeout_s=settings.budgets_ready_timeout_s,
            models=models,  # with meter's prices
            prices=load_prices(settings.prices_path(ctx.settings.schemas_dir)),
            ledger=ReservationLedger(
                ttl_s=settings.reservation_ttl_s,
                max_per_tenant=settings.max_reservations_per_tenant,
            ),
        )
    identity = TenantIdentity.of(tenants, engine.policy)
    shares_path = settings.rate_limits_path(ctx.settings.schemas_dir)
    return GuardResources(
        engine=engine,
        over_budget=over_budget,
        identity=identity,
        shares=GuardShares(
            identity, rate_limits.shares if rate_limits is not None else load_shares(shares_path)
        ),
        request_ids=(
            RequestIdGate.from_kafka(
                ctx.settings,
                ctx.catalog,
                window_s=settings.request_id_window_s,
                max_skew_s=settings.max_clock_skew_s,
                max_per_tenant=settings.max_request_ids_per_tenant,
                max_total=settings.max_request_ids,
                ready_timeout_s=settings.request_ids_ready_timeout_s,
            )
            if settings.request_ids == "enforce"
            else None
        ),
        rate_limits=(
            RateGate(rate_limits, models)
            if rate_limits is not None and models is not None
            else None
        ),
    )


def _share_of(ctx: GuardContext, record: InputRecord) -> Share:
    shares = ctx.resources.shares
    return shares.of(record, ctx.serde) if shares is not None else Share(UNATTRIBUTED)


def _teardown(ctx: GuardContext) -> None:
    ctx.resources.engine.close()
    if ctx.resources.over_budget is not None:
        ctx.resources.over_budget.close()
    if ctx.resources.request_ids is not None:
        ctx.resources.request_ids.close()


def _after_commit(ctx: GuardContext) -> None:
    if ctx.resources.request_ids is not None:
        ctx.resources.request_ids.committed()
    if ctx.resources.over_budget is not None:
        ctx.resources.over_budget.committed()
    if ctx.resources.rate_limits is not None:
        ctx.resources.rate_limits.committed()


def _rollback(ctx: GuardContext) -> None:
    # The batch's outputs were not written: its request ids are not used, and the
    # requests it passed hold no reservation (the retry decides them again).
    if ctx.resources.request_ids is not None:
        ctx.resources.request_ids.rollback()
    if ctx.resources.over_budget is not None:
        ctx.resources.over_budget.rollback()
    if ctx.resources.rate_limits is not None:
        ctx.resources.rate_limits.rollback()


def _process_batch(records: Sequence[InputRecord], ctx: GuardContext) -> list[Outcome]:
    engine = ctx.resources.engine
    requests = [(i, r) for i, r in enumerate(records) if r.topic == REQUESTS]
    responses = [(i, r) for i, r in enumerate(records) if r.topic == RESPONSES]
    outcomes: list[Outcome | None] = [None] * len(records)
    admitted = _authenticated(requests, ctx.resources.identity, outcomes)
    results = _registered(responses, ctx.resources.identity.registry, outcomes)
    request_ids = ctx.resources.request_ids
    if requests and request_ids is not None:
        request_ids.ensure_ready()  # before the analysis, which a retry would repeat
    if ctx.resources.rate_limits is not None:
        admitted = _within_rate(
            admitted,
            ctx.resources.rate_limits,
            request_ids,
            ctx.resources.identity.policy.version,
            outcomes,
        )
    try:
        if admitted:
            guarded = guard_requests(
                [request for _, request, _ in admitted],
                engine,
                ctx.resources.over_budget,
                [span for _, _, span in admitted],
                request_ids,
            )
            for (index, _, _), outputs in zip(admitted, guarded, strict=True):
                outcomes[index] = outputs
        if results:
            stored = guard_results(
                [result for _, result, _ in results], engine, [span for _, _, span in results]
            )
            for (index, _, _), outputs in zip(results, stored, strict=True):
                outcomes[index] = outputs
    except EmbedderError as exc:
        # Triton is a dependency: retry the batch later rather than pass prompts unscored.
        raise TransientError(f"prompt embeddings unavailable: {exc}") from exc
    return [o if o is not None else [] for o in outcomes]


def _authenticated(
    requests: Sequence[tuple[int, InputRecord]],
    identity: TenantIdentity,
    outcomes: list[Outcome | None],
) -> list[tuple[int, InferenceRequest, Any]]:
    """The requests their tenant signed and may make; every other one's outcome is set here.

    First, before any analysis: identity comes from the signature, not the payload.
    """
    admitted = []
    for index, record in requests:
        try:
            request, refused = identity.check(record)
        except UnauthenticatedRequest as exc:
            outcomes[index] = exc
            continue
        if refused is None:
            admitted.append((index, request, record.span))
            continue
        assert refused.guard is not None  # noqa: S101 (a refusal always carries its verdict)
        trace_verdict(record.span, INPUT_FIELD, refused, refused.guard)
        outcomes[index] = [Output(BLOCKED, refused.to_avro(), key=request.request_id)]
    return admitted


def _within_rate(
    admitted: Sequence[tuple[int, InferenceRequest, Any]],
    gate: RateGate,
    request_ids: RequestIdGate | None,
    policy_version: str,
    outcomes: list[Outcome | None],
) -> list[tuple[int, InferenceRequest, Any]]:
    """The authenticated requests within their tenant's rate limit; the others are blocked here.

    Before the analysis, so a flood costs guard little. A copy the request-id gate will
    block anyway (duplicate, stale) is not charged: it reaches no model, and keeps the
    reason it has always had. A request blocked here still uses its id, as on
    ``inference.requests.blocked`` it is decided.
    """
    within = []
    for index, request, span in admitted:
        tenant, request_id = tenant_of(request), request.request_id
        replay = (
            request_ids.peek(tenant, request_id, request.created_at)
            if request_ids is not None
            else None
        )
        refused = gate(request) if replay is None else None
        if refused is None:
            within.append((index, request, span))
            continue
        if request_ids is not None:
            request_ids(tenant, request_id, request.created_at)  # later copies: duplicates
        blocked = blocked_copy(request, tenant, RATE_LIMITED, policy_version)
        assert blocked.guard is not None  # noqa: S101 (a blocked copy carries its verdict)
        trace_verdict(span, INPUT_FIELD, blocked, blocked.guard)
        if span is not None:
            span.set_attribute("sluice.guard.rate_limit_detail", refused)
        outcomes[index] = [Output(BLOCKED, blocked.to_avro(), key=request_id)]
    return within


def _registered(
    responses: Sequence[tuple[int, InputRecord]],
    registry: TenantRegistry,
    outcomes: list[Outcome | None],
) -> list[tuple[int, InferenceResult, Any]]:
    """Model responses of registered tenants (only they have pseudonym keys); others dead-letter."""
    known = []
    for index, record in responses:
        result = InferenceResult.from_avro(record.value)
        if registry.entry(result.tenant_id) is None:
            outcomes[index] = UnauthenticatedRequest(
                "a model response for a tenant the tenant registry does not hold (retired "
                "since the request passed, or not written by infer): register the tenant "
                "again and replay"
            )
        else:
            known.append((index, result, record.span))
    return known


SIGNING_KEY_SETTING = "SLUICE_GUARD__VERDICT_SIGNING_KEY"


def _signers(settings: GuardSettings) -> dict[str, RecordSigner]:
    """Sign what guard lets through, so infer can refuse what anyone else wrote to .safe."""
    key = settings.verdict_signing_key
    secret = key.get_secret_value() if key is not None else None
    return {SAFE: Signer.from_secret(secret, SIGNING_KEY_SETTING)}


PROCESSOR: ProcessorSpec[GuardSettings, GuardResources] = ProcessorSpec(
    name="guard",
    description="Redact PII and stop hostile prompts; redact model outputs before storage.",
    settings=GuardSettings,
    inputs=lambda catalog, settings: [REQUESTS, RESPONSES],
    outputs=lambda catalog, settings: [SAFE, BLOCKED, RESULTS, FINDINGS],
    process_batch=_process_batch,
    setup=_setup,
    teardown=_teardown,
    after_commit=_after_commit,
    rollback=_rollback,
    batching=lambda settings: (settings.max_records_per_poll, settings.max_batch_latency_ms),
    signers=_signers,
    share_of=_share_of,
)
