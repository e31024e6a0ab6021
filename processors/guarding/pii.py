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

from presidio_analyzer import AnalyzerEngine, RecognizerResult

from processors.guarding.nlp import DEFAULT_MODEL, GuardNlpEngine, create_engine
from processors.guarding.policy import NER_ENTITIES, Entity
from processors.guarding.recognizers import LANGUAGE, build_registry, recognizer_name


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
    """Keep the best of any overlapping detections; the result is sorted by start.

    Best means highest score, then longest span; the remaining order is total
    (start, end, type, recognizer) so the outcome never depends on the order
    the recognizers ran in. This drops, for example, a phone number found inside
    a validated card number or IBAN.
    """
    ranked = sorted(
        detections,
        key=lambda d: (-d.score, -(d.end - d.start), d.start, d.end, d.entity_type, d.recognizer),
    )
    kept: list[Detection] = []
    for detection in ranked:
        if not any(detection.overlaps(k) for k in kept):
            kept.append(detection)
    kept.sort()
    return kept


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
        )

    def analyze_batch(
        self, texts: Sequence[str], entities: Collection[Entity], threshold: float
    ) -> list[list[Detection]]:
        """Return detections per text for the requested entities, at or above ``threshold``.

        Asking only for the policy's entities is what keeps out findings no policy
        wants; PERSON decides whether the NER model runs at all.
        """
        wanted = sorted(e.value for e in entities)
        if not wanted:
            return [[] for _ in texts]
        with_ner = any(e in NER_ENTITIES for e in entities)
        batch = self.nlp_engine.artifacts_batch(
            texts, with_ner=with_ner, batch_size=self.batch_size
        )
        out = []
        for text, artifacts in zip(texts, batch, strict=True):
            results = self.engine.analyze(
                text,
                LANGUAGE,
                entities=wanted,
                score_threshold=threshold,
                nlp_artifacts=artifacts,
            )
            out.append(resolve_overlaps(to_detections(results)))
        return out
