"""PII detection over a batch: Presidio's recognizers on spaCy artifacts built per batch.

``PresidioAnalyzer`` is the production analyzer: the same ``AnalyzerEngine``
and recognizers as Presidio's one-text-at-a-time path, fed with NLP artifacts
that ``GuardNlpEngine`` builds for the whole batch (see ``nlp.py`` for what is
skipped and why the result cannot change). The engine depends only on the
``Analyzer`` protocol, so tests can inject one that fails or hangs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts

from processors.guard.nlp import DEFAULT_MODEL, GuardNlpEngine, create_engine
from processors.guard.normalize import Normalized, normalize
from processors.guard.policy import NER_ENTITIES, Entity
from processors.guard.recognizers import build_registry, recognizer_name
from processors.guard.text_recognizer import LANGUAGE


@dataclass(frozen=True, slots=True, order=True)
class Detection:
    """One entity found in a text: where, what, how sure, by whom. Never the value."""

    start: int
    end: int
    entity_type: str
    score: float
    recognizer: str

    def overlaps(self, other: Detection) -> bool:
        """Return True when the two spans share at least one character."""
        return self.start < other.end and other.start < self.end


class Analyzer(Protocol):
    """What the guard engine needs from a PII analyzer."""

    def analyze_batch(
        self, texts: Sequence[str], entities: Collection[Entity], threshold: float
    ) -> list[list[Detection]]:
        """Return detections per text, without overlaps, sorted by start."""
        ...


def resolve_overlaps(detections: Iterable[Detection]) -> list[Detection]:
    """Make detections disjoint; the result is sorted by start.

    Two rules, so that no part of a value is left in the clear:

    * overlapping detections of the same type are merged into their union (the NER
      model finding "Kim" and the cue recognizer "Min-jun Kim" give one PERSON);
    * across types, a credential (API_KEY) wins first: the password in
      ``https://user:pass@host`` also reads as the e-mail address ``pass@host``, and the
      request must be blocked, not pseudonymised; then pattern-based findings win over
      NER ones, then the higher score, then the longer span: the small NER model
      sometimes labels a phone number or part of an IPv6 address as a PERSON, and a
      partial PERSON span must not displace the structured value it overlaps.

    The order among equals is total (start, end, type, recognizer), so the outcome
    never depends on the order the recognizers ran in.
    """
    merged = _merge_same_type(detections)
    ranked = sorted(
        merged,
        key=lambda d: (
            d.entity_type != Entity.API_KEY.value,
            d.entity_type in _NER_TYPES,
            -d.score,
            -(d.end - d.start),
            d.start,
            d.end,
            d.entity_type,
            d.recognizer,
        ),
    )
    kept: list[Detection] = []
    for detection in ranked:
        if not any(detection.overlaps(k) for k in kept):
            kept.append(detection)
    kept.sort()
    return kept


_NER_TYPES = frozenset(e.value for e in NER_ENTITIES)


def _merge_same_type(detections: Iterable[Detection]) -> list[Detection]:
    """Union of overlapping spans per type; the best-scored part names score and recognizer."""
    out: list[Detection] = []
    by_type: dict[str, list[Detection]] = {}
    for d in detections:
        by_type.setdefault(d.entity_type, []).append(d)
    for group in by_type.values():
        group.sort(key=lambda d: (d.start, d.end))
        current = group[0]
        for d in group[1:]:
            if d.start < current.end:
                best = max((current, d), key=lambda x: (x.score, x.end - x.start, x.recognizer))
                current = Detection(
                    start=current.start,
                    end=max(current.end, d.end),
                    entity_type=current.entity_type,
                    score=best.score,
                    recognizer=best.recognizer,
                )
            else:
                out.append(current)
                current = d
        out.append(current)
    return out


def to_detections(results: Iterable[RecognizerResult]) -> list[Detection]:
    """Presidio results as detections (dropping the explanation, which may quote text)."""
    return [
        Detection(
            start=r.start,
            end=r.end,
            entity_type=r.entity_type,
            score=round(float(r.score), 6),
            recognizer=recognizer_name(r),
        )
        for r in results
    ]


class CertainResultsEnhancer(LemmaContextAwareEnhancer):
    """Presidio's context enhancer, not consulted for results already at the maximum score.

    Enhancing adds ``context_similarity_factor`` and caps the score at
    ``MAX_SCORE``, so a result at ``MAX_SCORE`` (a Luhn-valid card, a
    checksum-valid IBAN, a validated e-mail) comes out unchanged; only its
    explanation would change, and guard drops explanations. Skipping those
    results means their text needs no lemmas, which are the costly part of the
    NLP artifacts (see nlp.py).
    """

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        """Enhance the results that can still change; pass the certain ones through."""
        certain = [r for r in raw_results if r.score >= EntityRecognizer.MAX_SCORE]
        uncertain = [r for r in raw_results if r.score < EntityRecognizer.MAX_SCORE]
        if not uncertain:
            return certain
        enhanced: list[RecognizerResult] = super().enhance_using_context(
            text, uncertain, nlp_artifacts, recognizers, context
        )
        return certain + enhanced


class PresidioAnalyzer:
    """Presidio ``AnalyzerEngine`` with guard's recognizers, run batch-wise."""

    def __init__(
        self,
        nlp_engine: GuardNlpEngine | None = None,
        *,
        model_name: str = DEFAULT_MODEL,
        batch_size: int = 64,
    ) -> None:
        self.nlp_engine = nlp_engine or create_engine(model_name)
        self.batch_size = batch_size
        recognizers = build_registry()
        self.engine = AnalyzerEngine(
            registry=recognizers.registry,
            nlp_engine=self.nlp_engine,
            supported_languages=[LANGUAGE],
            context_aware_enhancer=CertainResultsEnhancer(),
        )

    @property
    def max_length(self) -> int:
        """The longest text spaCy's pipeline accepts (``nlp.max_length``)."""
        return int(self.nlp_engine.language_model.max_length)

    def analyze_batch(
        self, texts: Sequence[str], entities: Collection[Entity], threshold: float
    ) -> list[list[Detection]]:
        """Return detections per text for the requested entities, at or above ``threshold``.

        Asking only for the policy's entities is what keeps out findings no policy
        wants; PERSON decides whether the NER model runs at all.

        Recognizers read each text's analysis text (``normalize.py``: invisible
        characters dropped, full-width and foreign digits folded); the detections
        returned are mapped back to spans of the original text.
        """
        wanted = sorted(e.value for e in entities)
        if not wanted:
            return [[] for _ in texts]
        with_ner = any(e in NER_ENTITIES for e in entities)
        normalized = [normalize(text) for text in texts]
        batch = self.nlp_engine.artifacts_batch(
            [n.text for n in normalized], with_ner=with_ner, batch_size=self.batch_size
        )
        out = []
        for analysis, artifacts in zip(normalized, batch, strict=True):
            results = self.engine.analyze(
                analysis.text,
                LANGUAGE,
                entities=wanted,
                score_threshold=threshold,
                nlp_artifacts=artifacts,
            )
            out.append(to_original(analysis, resolve_overlaps(to_detections(results))))
        return out


def to_original(analysis: Normalized, detections: list[Detection]) -> list[Detection]:
    """``detections`` in the analysis text, as spans of the original text.

    Disjoint detections stay disjoint: two that end and start inside one original
    character (a ligature the analysis text spells as two letters) would share it,
    so the later one starts where the earlier ends, and still covers the rest.
    """
    if analysis.identity:
        return detections
    out: list[Detection] = []
    for d in detections:
        start, end = analysis.to_original(d.start, d.end)
        if out and start < out[-1].end:
            start = out[-1].end
        if start >= end:
            continue  # entirely inside the previous one, which is redacted already
        out.append(
            Detection(
                start=start,
                end=end,
                entity_type=d.entity_type,
                score=d.score,
                recognizer=d.recognizer,
            )
        )
    return out
