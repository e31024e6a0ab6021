"""Recall on tests/data/pii_corpus.jsonl, and that no planted value survives redaction."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from processors.guard.engine import GuardEngine, GuardItem, Inspection
from processors.guard.hashing import TenantHasher
from processors.guard.names import GIVEN_NAMES
from processors.guard.pii import PresidioAnalyzer
from processors.guard.policy import Entity, Policy
from tests.support.guard import DATA, GUARD_DIR, SECRET, read_jsonl, unit_key_ids

STRUCTURED = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "API_KEY",
)


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    return read_jsonl("pii_corpus.jsonl")


@pytest.fixture(scope="module")
def inspections(analyzer: PresidioAnalyzer, corpus: list[dict[str, Any]]) -> list[Inspection]:
    engine = GuardEngine(
        Policy.load(GUARD_DIR / "policy.yaml"),
        analyzer,
        TenantHasher(SECRET, unit_key_ids),
        None,
        analyzer_timeout_s=300,
    )
    items = [GuardItem(row["id"], "default", row["text"]) for row in corpus]
    try:
        return engine.redact_batch(items)
    finally:
        engine.close()


def covered(planted: dict[str, Any], inspection: Inspection) -> bool:
    return any(
        f.entity_type == planted["type"] and f.start <= planted["start"] and f.end >= planted["end"]
        for f in inspection.findings
    )


def recall(
    corpus: list[dict[str, Any]], inspections: list[Inspection], keep: Any = lambda e: True
) -> dict[str, float]:
    total: Counter[str] = Counter()
    hit: Counter[str] = Counter()
    for row, inspection in zip(corpus, inspections, strict=True):
        for planted in row["entities"]:
            if keep(planted):
                total[planted["type"]] += 1
                hit[planted["type"]] += covered(planted, inspection)
    return {kind: hit[kind] / total[kind] for kind in total}


def test_corpus_is_well_formed(corpus: list[dict[str, Any]]) -> None:
    kinds = Counter(e["type"] for row in corpus for e in row["entities"])
    assert set(kinds) == {e.value for e in Entity}
    assert len(corpus) >= 300
    for row in corpus:
        for e in row["entities"]:
            assert row["text"][e["start"] : e["end"]] == e["value"]
            digits = re.sub(r"\D", "", e["value"])
            if e["type"] == "CREDIT_CARD":
                total = sum(
                    int(d) if i % 2 == 0 else (int(d) * 2 - 9 if int(d) * 2 > 9 else int(d) * 2)
                    for i, d in enumerate(reversed(digits))
                )
                assert total % 10 == 0, e["value"]
            if e["type"] == "IBAN_CODE":
                compact = e["value"].replace(" ", "")
                rearranged = compact[4:] + compact[:4]
                assert int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
            if e["type"] == "US_SSN":
                assert digits[:3] not in ("000", "666") and digits[0] != "9"
                assert digits[3:5] != "00" and digits[5:] != "0000"


def test_recall_is_complete_for_structured_types(
    corpus: list[dict[str, Any]], inspections: list[Inspection]
) -> None:
    scores = recall(corpus, inspections)
    assert {k: scores[k] for k in STRUCTURED} == {k: 1.0 for k in STRUCTURED}


def test_person_recall(corpus: list[dict[str, Any]], inspections: list[Inspection]) -> None:
    assert recall(corpus, inspections)["PERSON"] >= 0.9
    # Names whose given name is not in guard's list: what the NER model and the cue
    # recognizer find alone (84% when this test was written).
    held_out = recall(
        corpus,
        inspections,
        lambda e: e["type"] == "PERSON" and e["value"].split()[0] not in GIVEN_NAMES,
    )
    assert held_out["PERSON"] >= 0.75


def test_no_planted_value_survives(
    corpus: list[dict[str, Any]], inspections: list[Inspection]
) -> None:
    for row, inspection in zip(corpus, inspections, strict=True):
        finding_values = [str(v) for f in inspection.findings for v in f.to_avro().values()]
        for planted in row["entities"]:
            if planted["type"] == "PERSON" and not covered(planted, inspection):
                continue  # a missed name (counted by the recall test)
            assert planted["value"] not in inspection.text, (row["id"], planted["type"])
            assert not any(planted["value"] in v for v in finding_values), row["id"]
            if planted["type"] in ("CREDIT_CARD", "PHONE_NUMBER"):
                # masked, keeping the last four digits only
                assert re.sub(r"\D", "", planted["value"]) not in re.sub(r"\D", "", inspection.text)


def test_corpus_generator_is_reproducible(tmp_path: Path) -> None:
    path = DATA / "generate_pii_corpus.py"
    spec = importlib.util.spec_from_file_location("generate_pii_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.OUT = tmp_path / "corpus.jsonl"
    module.main()
    assert module.OUT.read_text("utf-8") == path.with_name("pii_corpus.jsonl").read_text("utf-8")
