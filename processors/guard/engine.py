"""The guard engine: from prompts (or model outputs) to safe text, a verdict and findings.

Pure with respect to Kafka: the guard processor hands it a batch of texts with
their request ids and tenants, and produces records from what it returns.

Guarantees the processor relies on:

* the text returned is never the original when the analysis did not complete:
  a text longer than its tenant's ``max_input_chars`` is never analysed and
  gets a placeholder and a ``block`` verdict with reason ``input_too_long``; if
  the analyzer raises on a batch, each text is analysed alone and only the
  texts it raises on are blocked (``analyzer_error``); a text whose analysis
  runs past ``analyzer_timeout_s`` is blocked (``analyzer_timeout``): with the
  analyzer in its own process (``AnalysisWorker``, the default) only that text,
  the process being killed and replaced; with an in-process analyzer (tests,
  tools) the whole batch, since a thread cannot be stopped. Fail closed, one
  record at a time;
* findings carry offsets, types, scores and recognizer names, never values;
* nothing here logs a text or a matched value, only counts and class names.

Prompt-injection scoring runs on the original prompt for patterns (in
process) and on the redacted prompt for embeddings (which leave the process
for Triton). An ``EmbedderError`` propagates: Triton being down is a
dependency outage, so the processor retries the batch (TransientError) rather
than passing prompts unscored or blocking them all.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from datetime import datetime

from presidio_analyzer import pattern_recognizer

from processors.guard.analysis_worker import ANALYZER_ERROR, ANALYZER_TIMEOUT, AnalysisWorker
from processors.guard.embedder import Embedder, TritonEmbedder
from processors.guard.hashing import PseudonymKeyIds, TenantHasher
from processors.guard.injection import ExemplarSet, InjectionScore, InjectionScorer, PatternSet
from processors.guard.pii import Analyzer, Detection, PresidioAnalyzer
from processors.guard.policy import Action, Entity, Policy, TenantPolicy
from processors.guard.redaction import Redactor
from processors.guard.settings import GuardSettings
from streams.contracts.records import GuardVerdict, PiiFinding, utcnow
from streams.errors import ConfigurationError
from streams.runtime.bounded import DEFAULT_MAX_ENTRIES
from streams.settings import Settings

log = logging.getLogger("sluice.guard")

INPUT_FIELD = "input_text"
OUTPUT_FIELD = "output_text"

# Verdict actions and reasons (GuardVerdict.action / .reason).
PASS, FLAG, BLOCK = "pass", "flag", "block"
# ANALYZER_ERROR and ANALYZER_TIMEOUT come from analysis_worker, which reports them per text.
INPUT_TOO_LONG = "input_too_long"
PII_POLICY = "pii_policy"
PROMPT_INJECTION = "prompt_injection"


@dataclass(frozen=True, slots=True)
class GuardItem:
    """One text to inspect: which request, which tenant, which field."""

    request_id: str
    tenant_id: str
    text: str
    field: str = INPUT_FIELD


@dataclass(frozen=True, slots=True)
class Inspection:
    """What guard decided about one text. ``text`` is always safe to publish."""

    request_id: str
    tenant_id: str
    field: str
    text: str
    verdict: GuardVerdict
    findings: tuple[PiiFinding, ...]

    @property
    def blocked(self) -> bool:
        """True when the request must go to the blocked topic, not to the model."""
        return self.verdict.action == BLOCK


def items_for(texts: Sequence[str], tenant: str, field: str = INPUT_FIELD) -> list[GuardItem]:
    """Items for texts of one tenant, numbered by position (for tests, benches and tools)."""
    return [GuardItem(str(i), tenant, text, field) for i, text in enumerate(texts)]


def withheld(reason: str) -> str:
    """Return the placeholder that replaces a text guard could not analyse."""
    return f"<WITHHELD:{reason}>"


class GuardEngine:
    """PII redaction and prompt-injection scoring for batches of texts of any tenants."""

    def __init__(
        self,
        policy: Policy,
        analyzer: Analyzer,
        hasher: TenantHasher,
        injection: InjectionScorer | None = None,
        *,
        analyzer_timeout_s: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
        tenant_cache_size: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.policy = policy
        self.analyzer = analyzer
        self.injection = injection
        self.analyzer_timeout_s = analyzer_timeout_s
        self._redactor = Redactor(hasher, max_tenants=tenant_cache_size)
        self._clock = clock
        # One worker: spaCy pipelines are not meant to be shared across threads, and a
        # timed-out analysis (Python cannot kill a thread) keeps at most one core busy.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guard-analyzer")

    @classmethod
    def from_settings(
        cls,
        settings: GuardSettings | None = None,
        *,
        platform_triton_url: str | None = None,
        embedder: Embedder | None = None,
        pseudonym_key_ids: PseudonymKeyIds,
    ) -> GuardEngine:
        """Build the engine guard runs with from ``SLUICE_GUARD__*`` settings.

        ``platform_triton_url`` is the platform's Triton (``SLUICE_TRITON__URL``), used
        unless guard names its own; ``embedder`` overrides the one the settings name
        (tests and tools pass one); ``pseudonym_key_ids`` gives each tenant's pseudonym
        key id (the tenant registry's).
        """
        settings = settings or GuardSettings()
        _check_regex_timeout(settings.analyzer_timeout_s)
        hasher = TenantHasher(
            settings.hash_secret, pseudonym_key_ids, max_tenants=settings.tenant_cache_size
        )
        policy = Policy.load(settings.policy_path)
        if embedder is None and settings.embedder == "triton":
            embedder = TritonEmbedder(
                settings.triton_url or platform_triton_url or Settings().triton.url,
                settings.triton_model,
                timeout_s=settings.triton_timeout_s,
                max_batch=settings.triton_max_batch,
            )
        scorer = InjectionScorer(
            PatternSet.load(settings.injection_patterns_path),
            ExemplarSet.load(settings.injection_exemplars_path),
            embedder,
        )
        build = functools.partial(
            PresidioAnalyzer, model_name=settings.spacy_model, batch_size=settings.nlp_batch_size
        )
        analyzer: PresidioAnalyzer | AnalysisWorker = (
            AnalysisWorker(
                build,
                timeout_s=settings.analyzer_timeout_s,
                batch_timeout_s=settings.analyzer_batch_timeout_s,
            )
            if settings.analyzer_isolation == "process"
            else build()
        )
        try:
            check_input_limit(policy, analyzer.max_length)
        except ConfigurationError:
            if isinstance(analyzer, AnalysisWorker):
                analyzer.close()
            raise
        return cls(
            policy,
            analyzer,
            hasher,
            scorer,
            analyzer_timeout_s=settings.analyzer_timeout_s,
            tenant_cache_size=settings.tenant_cache_size,
        )

    def close(self) -> None:
        """Release the analyzer thread, and stop the analysis process if there is one."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if isinstance(self.analyzer, AnalysisWorker):
            self.analyzer.close()

    # -- public API ---------------------------------------------------------------------
    def inspect_batch(self, items: Sequence[GuardItem]) -> list[Inspection]:
        """Redact PII in each text and score prompt injection for each prompt, in input order.

        Only items of the ``input_text`` field are scored for injection; other fields of
        a request (user_id, source, metadata) are redacted in the same analyzer batch.

        Raises ``EmbedderError`` when injection similarity cannot be computed
        (retry the batch later); never returns an unanalysed text.
        """
        return self._run(items, score_injection=True)

    def redact_batch(self, items: Sequence[GuardItem]) -> list[Inspection]:
        """Redact PII in each text (model outputs): no injection scoring."""
        return self._run(items, score_injection=False)

    def rewrite(self, text: str, findings: Sequence[PiiFinding], tenant_id: str) -> str:
        """``text`` with ``findings`` (offsets into ``text``) rewritten by the tenant's policy.

        The rewriting step of ``redact_batch`` alone, for a caller that redacts a text
        piece by piece with the findings of one analysis (``stream_redaction``): each
        entity is rewritten on its own, so the pieces join into what one call makes.
        """
        detections = [
            Detection(
                start=f.start,
                end=f.end,
                entity_type=f.entity_type,
                score=f.score,
                recognizer=f.recognizer,
            )
            for f in findings
        ]
        return self._redactor.redact(text, detections, self.policy.for_tenant(tenant_id))

    # -- steps ----------------------------------------------------------------------------
    def _run(self, items: Sequence[GuardItem], *, score_injection: bool) -> list[Inspection]:
        if not items:
            return []
        checked_at = self._clock()
        out: list[Inspection | None] = [None] * len(items)
        for index, item in enumerate(items):
            if len(item.text) > self.policy.for_tenant(item.tenant_id).max_input_chars:
                out[index] = self._withheld(item, INPUT_TOO_LONG, checked_at)
        todo = [i for i, done in enumerate(out) if done is None]
        if todo:
            inspected = self._inspect([items[i] for i in todo], score_injection, checked_at)
            for index, inspection in zip(todo, inspected, strict=True):
                out[index] = inspection
        return [i for i in out if i is not None]

    def _inspect(
        self, items: Sequence[GuardItem], score_injection: bool, checked_at: datetime
    ) -> list[Inspection]:
        outcomes, failure = self._detect(items)
        if failure is not None:
            if failure == ANALYZER_TIMEOUT or len(items) == 1:
                return [self._withheld(item, failure, checked_at) for item in items]
            # One text made the batch fail: analyse each alone, block only those that fail.
            return [
                inspection
                for item in items
                for inspection in self._inspect([item], score_injection, checked_at)
            ]
        assert outcomes is not None  # noqa: S101 (set whenever failure is None)
        out: list[Inspection | None] = [
            self._withheld(item, o, checked_at) if isinstance(o, str) else None
            for item, o in zip(items, outcomes, strict=True)
        ]
        analysed = [i for i, o in enumerate(out) if o is None]
        if analysed:
            inspected = self._redact(
                [items[i] for i in analysed],
                [d for d in outcomes if not isinstance(d, str)],
                score_injection,
                checked_at,
            )
            for index, inspection in zip(analysed, inspected, strict=True):
                out[index] = inspection
        return [i for i in out if i is not None]

    def _redact(
        self,
        items: Sequence[GuardItem],
        detections: Sequence[list[Detection]],
        score_injection: bool,
        checked_at: datetime,
    ) -> list[Inspection]:
        policies = [self.policy.for_tenant(item.tenant_id) for item in items]
        safe = [
            self._redactor.redact(item.text, found, policy)
            for item, found, policy in zip(items, detections, policies, strict=True)
        ]
        scores = [InjectionScore(0.0, None) for _ in items]
        if score_injection and self.injection is not None:
            # Prompts only: the other fields of a request (user_id, metadata) never reach
            # the model, so they are redacted in the same analyzer batch but not scored.
            prompts = [i for i, item in enumerate(items) if item.field == INPUT_FIELD]
            if prompts:
                scored = self.injection.score_batch(
                    [items[i].text for i in prompts], [safe[i] for i in prompts]
                )
                for i, score in zip(prompts, scored, strict=True):
                    scores[i] = score
        return [
            self._inspection(
                item,
                text=text,
                detections=found,
                policy=policy,
                score=score,
                checked_at=checked_at,
            )
            for item, text, found, policy, score in zip(
                items, safe, detections, policies, scores, strict=True
            )
        ]

    def _detect(
        self, items: Sequence[GuardItem]
    ) -> tuple[list[list[Detection] | str] | None, str | None]:
        """Return detections (or why not) per item, or the reason the whole batch failed."""
        if isinstance(self.analyzer, AnalysisWorker):
            # The worker enforces the deadline per text and kills what overruns it.
            try:
                return self._detect_now(items), None
            except Exception as exc:  # invalid spans (_check_spans): retried text by text
                log.error(
                    "PII analysis of a batch of %d texts failed (%s); blocking the texts it "
                    "fails on",
                    len(items),
                    type(exc).__name__,
                )
                return None, ANALYZER_ERROR
        future = self._executor.submit(self._detect_now, items)
        try:
            return future.result(timeout=self.analyzer_timeout_s), None
        except FuturesTimeout:
            future.cancel()
            log.error(
                "PII analysis of %d texts took longer than %.1f s; blocking the batch. "
                "Raise SLUICE_GUARD__ANALYZER_TIMEOUT_S or lower the runner batch size.",
                len(items),
                self.analyzer_timeout_s,
            )
            return None, ANALYZER_TIMEOUT
        except Exception as exc:  # fail closed on anything the analyzer does
            # The class name only: messages of NLP errors may quote the input.
            log.error(
                "PII analyzer raised %s on a batch of %d texts; blocking the texts it fails on",
                type(exc).__name__,
                len(items),
            )
            return None, ANALYZER_ERROR

    def _detect_now(self, items: Sequence[GuardItem]) -> list[list[Detection] | str]:
        # Texts whose tenants ask for the same entities at the same threshold share one
        # analyzer call, so one nlp.pipe batch covers them whatever their tenant.
        groups: dict[tuple[frozenset[Entity], float], list[int]] = {}
        for index, item in enumerate(items):
            policy = self.policy.for_tenant(item.tenant_id)
            groups.setdefault((policy.active, policy.pii_score_threshold), []).append(index)
        out: list[list[Detection] | str | None] = [None] * len(items)
        ends = self.analyzer.batch_deadline() if isinstance(self.analyzer, AnalysisWorker) else None
        for (entities, threshold), indexes in groups.items():
            texts = [items[i].text for i in indexes]
            found: Sequence[Sequence[Detection] | str] = (
                self.analyzer.analyze_isolated(texts, entities, threshold, deadline=ends)
                if isinstance(self.analyzer, AnalysisWorker)
                else self.analyzer.analyze_batch(texts, entities, threshold)
            )
            if len(found) != len(indexes):
                raise RuntimeError(
                    f"analyzer returned {len(found)} results for {len(indexes)} texts"
                )
            for index, detections in zip(indexes, found, strict=True):
                if isinstance(detections, str):  # this text alone failed: its reason
                    out[index] = detections
                    continue
                _check_spans(detections, len(items[index].text), entities)
                out[index] = list(detections)
        return [d if d is not None else [] for d in out]

    def _withheld(self, item: GuardItem, reason: str, checked_at: datetime) -> Inspection:
        verdict = GuardVerdict(
            policy_version=self.policy.version,
            action=BLOCK,
            redacted=True,
            checked_at=checked_at,
            reason=reason,
        )
        return Inspection(
            item.request_id, item.tenant_id, item.field, withheld(reason), verdict, ()
        )

    def _inspection(
        self,
        item: GuardItem,
        *,
        text: str,
        detections: Sequence[Detection],
        policy: TenantPolicy,
        score: InjectionScore,
        checked_at: datetime,
    ) -> Inspection:
        findings = tuple(
            PiiFinding(
                request_id=item.request_id,
                tenant_id=item.tenant_id,
                field=item.field,
                entity_type=d.entity_type,
                start=d.start,
                end=d.end,
                score=d.score,
                recognizer=d.recognizer,
                action=policy.entities[Entity(d.entity_type)].action.value,
                policy_version=policy.version,
                detected_at=checked_at,
            )
            for d in detections
        )
        action, reason = _decide(findings, score, policy)
        verdict = GuardVerdict(
            policy_version=policy.version,
            action=action,
            redacted=bool(findings),
            checked_at=checked_at,
            entity_counts=dict(Counter(f.entity_type for f in findings)),
            injection_score=score.score,
            injection_rule=score.rule,
            reason=reason,
        )
        return Inspection(item.request_id, item.tenant_id, item.field, text, verdict, findings)


def check_input_limit(policy: Policy, nlp_max_length: int) -> None:
    """Refuse a policy whose ``max_input_chars`` lets a text past spaCy's ``max_length``.

    spaCy raises on a longer text, and a raising analysis blocks texts that did
    nothing wrong until each is retried alone; the size limit must stop it first.
    """
    largest = policy.largest_input_chars
    if largest >= nlp_max_length:
        raise ConfigurationError(
            f"max_input_chars ({largest}) in the guard policy must be below spaCy's "
            f"max_length ({nlp_max_length}); lower it in the policy file"
        )


def _check_regex_timeout(analyzer_timeout_s: float) -> None:
    """Refuse a Presidio regex timeout shorter than guard's own.

    Presidio skips a pattern whose regex runs past ``REGEX_TIMEOUT_SECONDS``
    and carries on without its findings, which would let that entity through.
    As long as guard's batch timeout fires first, such a batch is blocked instead.
    """
    regex_timeout = float(pattern_recognizer.REGEX_TIMEOUT_SECONDS)
    if regex_timeout <= analyzer_timeout_s:
        raise ValueError(
            f"REGEX_TIMEOUT_SECONDS ({regex_timeout:g}) must be longer than "
            f"SLUICE_GUARD__ANALYZER_TIMEOUT_S ({analyzer_timeout_s:g}): Presidio drops a "
            "timed-out pattern's findings, guard blocks a timed-out batch. Raise the first "
            "or lower the second."
        )


def _decide(
    findings: Sequence[PiiFinding], score: InjectionScore, policy: TenantPolicy
) -> tuple[str, str | None]:
    """Decide action and reason: a PII block wins over injection, block over flag."""
    if any(f.action == Action.BLOCK.value for f in findings):
        return BLOCK, PII_POLICY
    if score.score >= policy.injection.threshold and score.score > 0:
        return (BLOCK if policy.injection.action == "block" else FLAG), PROMPT_INJECTION
    return PASS, None


def _check_spans(detections: Sequence[Detection], length: int, wanted: frozenset[Entity]) -> None:
    """Refuse analyzer output that cannot be applied safely (it makes the batch fail closed)."""
    previous_end = 0
    for d in detections:
        if not 0 <= d.start < d.end <= length or d.start < previous_end:
            raise ValueError("analyzer returned an invalid or overlapping span")
        if d.entity_type not in wanted:
            raise ValueError(
                f"analyzer returned an entity type that was not asked for: {d.entity_type}"
            )
        previous_end = d.end
