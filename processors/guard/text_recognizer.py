"""The base of guard's recognizers that read the text alone (no NLP artifacts, nothing to load)."""

from __future__ import annotations

from presidio_analyzer import LocalRecognizer, RecognizerResult

from processors.guard.policy import Entity

#: The one language guard's registry is built for.
LANGUAGE = "en"


class TextRecognizer(LocalRecognizer):
    """A recognizer of one entity that reads the text alone."""

    NAME: str
    ENTITY: Entity
    SCORE: float

    def __init__(self) -> None:
        super().__init__(
            supported_entities=[self.ENTITY.value],
            name=self.NAME,
            supported_language=LANGUAGE,
        )

    def load(self) -> None:
        """Nothing to load: patterns and lists are module constants."""

    def result(self, start: int, end: int, score: float | None = None) -> RecognizerResult:
        """A finding of this recognizer's entity at ``text[start:end]``."""
        return RecognizerResult(
            entity_type=self.ENTITY.value,
            start=start,
            end=end,
            score=self.SCORE if score is None else score,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.NAME,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )
