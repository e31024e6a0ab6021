"""bench/guard_eval.py runs without Triton and keeps its patterns-only quality."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from streams.contracts.catalog import load_catalog
from streams.settings import PROJECT_ROOT

ROOT = PROJECT_ROOT


def load_eval() -> ModuleType:
    spec = importlib.util.spec_from_file_location("guard_eval", ROOT / "bench" / "guard_eval.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_metrics() -> None:
    guard_eval = load_eval()
    m = guard_eval.metrics([True, True, False, False], [0.9, 0.1, 0.8, 0.0], 0.5)
    assert (m.tp, m.fp, m.fn, m.tn) == (1, 1, 1, 1)
    assert m.precision == m.recall == m.f1 == 0.5


def test_patterns_only_quality_does_not_regress(capsys: pytest.CaptureFixture[str]) -> None:
    guard_eval = load_eval()
    assert guard_eval.main(["--embedder", "none", "--split", "test"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("threshold"))
    precision = float(line.split("precision ")[1].split()[0])
    recall = float(line.split("recall ")[1].split()[0])
    assert precision >= 0.95 and recall >= 0.6, line


def test_pii_findings_topic_is_in_the_catalog() -> None:
    catalog = load_catalog(ROOT / "schemas")
    topic = catalog.topic("pii.findings")
    assert (topic.value, topic.key) == ("sluice.v1.PiiFinding", "string")
    assert catalog.value_schema("pii.findings").fullname == "sluice.v1.PiiFinding"
