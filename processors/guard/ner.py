"""The NER model's PERSON findings, without the tokens no name looks like.

The small English spaCy model labels hex digests, UUIDs, base64 strings, order
numbers and words of scripts it was not trained on as people: on the adversarial
corpus's benign prompts, 15 of 154 were altered, every one by such a finding. A
name has no digits and none of the symbols of identifiers and encodings, has
Latin letters (names in other scripts are the script rules' job,
``person_scripts.py``), and each of its words switches from lower to upper case
at most once ("McDonald", "DeShawn").

The filter runs inside the recognizer, before Presidio resolves overlaps: a
misfire that scored above a script rule's finding on the same span would
otherwise displace it and then be dropped, leaving nothing.
"""

from __future__ import annotations

from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from streams.contracts.linear_regex import compile_linear

_LATIN_LETTERS = compile_linear(r"[A-Za-z\x{C0}-\x{24F}]")
_NOT_IN_NAMES = compile_linear(r"[0-9_=+/\\@#$%&*<>{}\[\]|~^]")
_CASE_SWITCH = compile_linear(r"[a-z][A-Z]")


def ner_misfire(value: str) -> bool:
    """Whether ``value``, labelled PERSON by the NER model, is a token no name looks like."""
    if _NOT_IN_NAMES.search(value) or not _LATIN_LETTERS.search(value):
        return True
    return any(len(_CASE_SWITCH.findall(word)) > 1 for word in value.split())


class NameShapedSpacyRecognizer(SpacyRecognizer):
    """Presidio's spaCy recognizer, keeping only PERSON findings shaped like a name."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Presidio's findings minus the PERSON spans ``ner_misfire`` refuses."""
        results: list[RecognizerResult] = super().analyze(text, entities, nlp_artifacts)
        return [
            r
            for r in results
            if r.entity_type != "PERSON" or not ner_misfire(text[r.start : r.end])
        ]
