"""Models' SLOs (the catalog's ``slo:`` blocks) and the burn-rate rules generated from them."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.utils import floatToGoString

from processors.infer.processor import TRITON_SECONDS_BUCKETS
from streams.cli import main
from streams.llm.model_catalog import DEFAULT_MODELS_FILE, ModelCatalogError, load_models
from streams.llm.slo_rules import PAGE_TIERS, TICKET_TIERS, le_label, render, rule_groups
from streams.settings import PROJECT_ROOT

RULES_FILE = PROJECT_ROOT / "infra" / "prometheus" / "rules" / "slo.rules.yml"
REAL = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())


def write_catalog(tmp_path: Path, **slo_changes: object) -> Path:
    models = {name: dict(entry) for name, entry in REAL["models"].items()}
    models["minilm"]["slo"] = {**models["minilm"]["slo"], **slo_changes}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "models": models}))
    return path


def test_the_shipped_models_declare_their_slos() -> None:
    catalog = load_models()
    minilm, textgen = catalog.get("minilm").slo, catalog.get("textgen").slo
    assert minilm is not None and textgen is not None
    assert (minilm.window_days, minilm.availability, minilm.latency.threshold_s) == (30, 0.999, 0.1)
    assert (textgen.window_days, textgen.availability, textgen.latency.threshold_s) == (
        30,
        0.995,
        2.5,
    )
    assert minilm.latency.target == textgen.latency.target == 0.99


def test_the_committed_rules_are_the_generated_ones() -> None:
    expected = render(load_models(), TRITON_SECONDS_BUCKETS)
    assert RULES_FILE.read_text() == expected, (
        "infra/prometheus/rules/slo.rules.yml is stale: run "
        "`sluice slo rules > infra/prometheus/rules/slo.rules.yml`"
    )


def test_the_cli_prints_the_rules() -> None:
    result = CliRunner().invoke(main, ["slo", "rules"])
    assert result.exit_code == 0, result.output
    assert result.output == RULES_FILE.read_text()


def test_the_burn_rate_factors_follow_from_the_window() -> None:
    month = timedelta(days=30)
    assert [t.factor(month) for t in PAGE_TIERS + TICKET_TIERS] == [14.4, 6.0, 1.0]
    assert [t.factor(2 * month) for t in PAGE_TIERS + TICKET_TIERS] == [28.8, 12.0, 2.0]


def test_every_alert_threshold_is_its_burn_factor_times_the_declared_budget() -> None:
    catalog = load_models()
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert len(alerts) == 4 * len(catalog.models)
    for alert in alerts:
        slo = catalog.get(alert["labels"]["model"]).slo
        assert slo is not None
        target = (
            slo.availability if alert["labels"]["slo"] == "availability" else slo.latency.target
        )
        tiers = PAGE_TIERS if alert["labels"]["severity"] == "page" else TICKET_TIERS
        expected = sorted(
            2 * [round(t.factor(timedelta(days=30)) * (1 - target), 9) for t in tiers]
        )
        found = sorted(float(n) for n in re.findall(r"> ([0-9.]+)", alert["expr"]))
        assert found == pytest.approx(expected), alert["alert"]
        windows = re.findall(r"ratio_rate(\w+)\{", alert["expr"])
        assert windows == [w for t in tiers for w in (_d(t.long), _d(t.short))]


def _d(span: timedelta) -> str:
    hours = span / timedelta(hours=1)
    if hours >= 24:
        return f"{int(hours // 24)}d"
    return f"{int(hours)}h" if hours >= 1 else f"{int(span.total_seconds() // 60)}m"


def test_latency_rules_read_the_declared_bucket_as_the_client_exposes_it() -> None:
    for bucket in TRITON_SECONDS_BUCKETS:
        assert le_label(bucket) == floatToGoString(bucket)
    text = RULES_FILE.read_text()
    assert 'sluice_infer_triton_seconds_bucket{model="minilm", le="0.1"}' in text
    assert 'sluice_infer_triton_seconds_bucket{model="textgen", le="2.5"}' in text


def test_a_threshold_between_buckets_is_refused_naming_the_choices(tmp_path: Path) -> None:
    catalog = load_models(write_catalog(tmp_path, latency={"threshold_s": 0.3, "target": 0.99}))
    with pytest.raises(ModelCatalogError, match=r"0\.3 s.*not a bucket boundary.*0\.25, 0\.5"):
        rule_groups(catalog, TRITON_SECONDS_BUCKETS)


@pytest.mark.parametrize(
    "change",
    [
        {"availability": 1.0},
        {"availability": 0},
        {"window_days": 1},
        {"latency": {"threshold_s": 0.1, "target": 1}},
        {"latency": {"threshold_s": 0, "target": 0.99}},
        {"latency": {"threshold_s": 0.1}},
        {"availabilty": 0.99},
    ],
)
def test_a_bad_slo_fails_at_load_naming_the_field(
    tmp_path: Path, change: dict[str, object]
) -> None:
    with pytest.raises(ModelCatalogError, match=r"(?m)^slo\."):
        load_models(write_catalog(tmp_path, **change))


def test_a_model_without_an_slo_gets_no_rules(tmp_path: Path) -> None:
    models = {name: dict(entry) for name, entry in REAL["models"].items()}
    del models["textgen"]["slo"]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "models": models}))
    rules = rule_groups(load_models(path), TRITON_SECONDS_BUCKETS)["groups"][0]["rules"]
    assert {r["labels"]["model"] for r in rules if "labels" in r} == {"minilm"}
