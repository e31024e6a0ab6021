"""Prometheus's alert rules (infra/prometheus/rules): checked and unit-tested with promtool,
and held to the code: every metric they read exists with the labels they match on, every
alert says how bad it is and links to a runbook section that exists."""

from __future__ import annotations

import functools
import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import PROJECT_ROOT
from tests.support.monitoring_tools import ALERTMANAGER, PROMETHEUS, run_tool

RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.rules.yml"))
RULE_TESTS = sorted((PROMETHEUS / "rules" / "tests").glob("*.yml"))
RUNBOOKS = PROJECT_ROOT / "docs" / "how-to" / "runbooks.md"
RUNBOOK_PATH = "docs/how-to/runbooks.md"
SEVERITIES = {"page", "ticket"}
#: Labels Prometheus adds to every scraped series (prometheus.yml's jobs and relabelling).
TARGET_LABELS = {"job", "instance", "service"}
_HEADING_ID = re.compile(r"^#+ .*\{ *#([\w-]+) *\}\s*$", re.MULTILINE)
_SELECTOR = re.compile(r"\b(sluice_\w+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


def _alerts() -> list[dict[str, Any]]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [rule for rule in group["rules"] if "alert" in rule]
    return rules


ALERTS = _alerts()


def _alert_id(rule: dict[str, Any]) -> str:
    return str(rule["alert"])


@functools.cache
def exported_metrics() -> dict[str, tuple[str, set[str]]]:
    """Every metric Sluice's code defines: name as scraped -> (type, label names).

    Found the way the metrics reference page finds them (docs/gen/refgen/metrics.py).
    """
    generators = str(PROJECT_ROOT / "docs" / "gen")
    if generators not in sys.path:
        sys.path.insert(0, generators)
    metrics = importlib.import_module("refgen.metrics")
    modules = metrics.metric_modules(PROJECT_ROOT, ("streams", "processors"))
    return {row.name: (row.type, set(row.labels)) for row in metrics.metric_rows(modules)}


def _metric_of(series: str) -> tuple[str, set[str]]:
    """The metric a series name belongs to (a histogram's _bucket, _sum, _count) and the
    labels a selector may match on."""
    metrics = exported_metrics()
    if series in metrics:
        return series, metrics[series][1] | TARGET_LABELS
    base, _, suffix = series.rpartition("_")
    if suffix in ("bucket", "sum", "count") and metrics.get(base, ("", set()))[0] == "histogram":
        extra = {"le"} if suffix == "bucket" else set()
        return base, metrics[base][1] | extra | TARGET_LABELS
    raise AssertionError(f"{series}: no such metric in streams/ or processors/")


def test_the_rule_files_and_their_tests_exist() -> None:
    assert RULE_FILES and RULE_TESTS
    assert len(ALERTS) >= 10


@pytest.mark.parametrize("rule", ALERTS, ids=_alert_id)
def test_every_alert_has_a_severity_and_the_annotations(rule: dict[str, Any]) -> None:
    assert rule["alert"].startswith("Sluice")
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    assert annotations["summary"].strip() and annotations["description"].strip()


def runbook_anchors() -> set[str]:
    return set(_HEADING_ID.findall(RUNBOOKS.read_text()))


@pytest.mark.parametrize("rule", ALERTS, ids=_alert_id)
def test_every_runbook_url_points_to_a_section_of_the_runbooks(rule: dict[str, Any]) -> None:
    page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    assert page == RUNBOOK_PATH
    assert anchor in runbook_anchors(), f"{RUNBOOK_PATH} has no section {{ #{anchor} }}"
    # The section names its alert, so a reader who arrives from a page knows it is the one.
    section = RUNBOOKS.read_text().split(f"{{ #{anchor} }}", 1)[1].split("\n## ", 1)[0]
    assert f"**{rule['alert']}**" in section


def test_every_runbook_section_belongs_to_an_alert() -> None:
    linked = {rule["annotations"]["runbook_url"].partition("#")[2] for rule in ALERTS}
    assert runbook_anchors() == linked


def test_runbook_anchors_are_found() -> None:
    # The anchor pattern itself: an explicit id on a heading (attr_list), nothing else.
    text = "## Triton down { #triton-down }\n\n## Plain heading\n### Deeper {#deeper}\n"
    assert set(_HEADING_ID.findall(text)) == {"triton-down", "deeper"}


def _expressions() -> list[tuple[str, str]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found.append((rule.get("alert") or rule["record"], rule["expr"]))
    return found


@pytest.mark.parametrize(("name", "expr"), _expressions(), ids=[n for n, _ in _expressions()])
def test_rules_read_only_metrics_and_labels_the_code_exports(name: str, expr: str) -> None:
    for series in set(re.findall(r"\bsluice_\w+", expr)):
        _metric_of(series)  # fails for a metric nobody exports
    for series, matchers in _SELECTOR.findall(expr):
        metric, labels = _metric_of(series)
        for label in _MATCHER.findall(matchers):
            assert label in labels, f"{name}: {metric} has no label {label!r}"


def test_the_metric_check_refuses_an_invented_metric() -> None:
    with pytest.raises(AssertionError, match="no such metric"):
        _metric_of("sluice_made_up_total")
    assert _metric_of("sluice_infer_triton_seconds_bucket")[1] >= {"model", "le"}
    with pytest.raises(AssertionError):
        _metric_of("sluice_consumer_lag_bucket")  # a gauge has no buckets


def _test_cases() -> dict[str, list[bool]]:
    """Per alert, whether each of its promtool cases expects it to fire."""
    cases: dict[str, list[bool]] = {}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    return cases


@pytest.mark.parametrize("rule", ALERTS, ids=_alert_id)
def test_every_alert_has_a_case_that_fires_and_one_that_does_not(rule: dict[str, Any]) -> None:
    outcomes = _test_cases().get(rule["alert"], [])
    assert True in outcomes, f"no promtool case where {rule['alert']} fires"
    assert False in outcomes, f"no promtool case where {rule['alert']} stays quiet"


# -- promtool and amtool --------------------------------------------------------------


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return run_tool("promtool", *args)


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_config_with_its_rule_files() -> None:
    # prometheus.yml names its rule files relative to itself: this loads them too.
    result = run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules/sluice.rules.yml" in result.stdout


def test_the_alerts_pass_their_promtool_unit_tests() -> None:
    result = run_promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    # A case that expects the wrong thing must fail, or the tests above prove nothing.
    case = yaml.safe_load(RULE_TESTS[0].read_text())
    case["rule_files"] = [str(RULE_TESTS[0].parent / name) for name in case["rule_files"]]
    for test in case["tests"]:
        for alert in test.get("alert_rule_test", []):
            alert["exp_alerts"] = [] if alert.get("exp_alerts") else [{"exp_labels": {}}]
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(case))
    result = run_promtool("test", "rules", str(broken))
    assert result.returncode != 0


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run_tool("amtool", "check-config", str(ALERTMANAGER / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 receivers" in result.stdout


def test_amtool_is_the_version_of_the_alertmanager_image() -> None:
    # Its check-config knows the fields of the Alertmanager that compose runs.
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    image = compose["services"]["alertmanager"]["image"]
    assert image == f"prom/alertmanager:{(ALERTMANAGER / 'amtool.version').read_text().strip()}"
