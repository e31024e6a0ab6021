"""Analyzers that stall or crash on a marker text, built inside guard's analysis process.

They live in their own module so that a spawned child can import them by name
(``AnalysisWorker`` pickles the factory, never the object).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Collection, Sequence

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from processors.guard.pii import Detection, PresidioAnalyzer
from processors.guard.policy import Entity

#: A text holding this never finishes its analysis.
STALL = "stall-forever-7f3a"
#: A text holding this kills the process analysing it.
CRASH = "crash-now-7f3a"


def _act_on_markers(text: str) -> None:
    if STALL in text:
        while True:  # a stall that holds the GIL, as a runaway regex does
            sum(range(100_000))
    if CRASH in text:
        os.kill(os.getpid(), signal.SIGKILL)


class MarkerRecognizer(EntityRecognizer):
    """A PHONE_NUMBER recognizer that finds nothing, except that it stalls or crashes."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["PHONE_NUMBER"], name="MarkerRecognizer")

    def load(self) -> None:
        """Nothing to load."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Act on a marker; find nothing."""
        _act_on_markers(text)
        return []


def marked_presidio() -> PresidioAnalyzer:
    """Guard's real analyzer plus a recognizer that stalls or crashes on a marker text."""
    analyzer = PresidioAnalyzer()
    analyzer.engine.registry.add_recognizer(MarkerRecognizer())
    return analyzer


class MarkerAnalyzer:
    """No Presidio, no progress to watch: finds nothing, stalls or crashes on a marker."""

    max_length = 1_000_000

    def analyze_batch(
        self, texts: Sequence[str], entities: Collection[Entity], threshold: float
    ) -> list[list[Detection]]:
        for text in texts:
            _act_on_markers(text)
        return [[] for _ in texts]


class RaisingAnalyzer(MarkerAnalyzer):
    """Raises on any batch holding a text with "boom" (and would leak it if logged)."""

    def analyze_batch(
        self, texts: Sequence[str], entities: Collection[Entity], threshold: float
    ) -> list[list[Detection]]:
        if any("boom" in t for t in texts):
            raise ValueError(f"cannot read {texts[0]}")
        return super().analyze_batch(texts, entities, threshold)
