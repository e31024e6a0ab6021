"""The SLO rules read the series as prometheus_client writes them: a histogram with infer's
name, labels and buckets, observed with known durations, is exposed, parsed and replayed
into `promtool test rules`, and the recorded latency ratio is the share over threshold."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from processors.infer.processor import TRITON_SECONDS_BUCKETS
from streams.llm.model_catalog import load_models
from tests.support.monitoring_tools import PROMETHEUS, run_tool

_SAMPLE = re.compile(r"^(?P<series>(?P<name>[a-z_]+)\{[^}]*\}) (?P<value>\S+)$")


def exposition(fast: int, slow: int, errors: int) -> dict[str, float]:
    """minilm's series after ``fast`` calls under its threshold and ``slow`` over it."""
    threshold = load_models().get("minilm").slo.latency.threshold_s  # type: ignore[union-attr]
    registry = CollectorRegistry()
    results = Counter("sluice_infer_results", "", ["model", "status"], registry=registry)
    seconds = Histogram(
        "sluice_infer_triton_seconds",
        "",
        ["model"],
        buckets=TRITON_SECONDS_BUCKETS,
        registry=registry,
    )
    for duration in [threshold] * fast + [threshold * 1.5] * slow:  # the boundary counts as fast
        seconds.labels("minilm").observe(duration)
    results.labels("minilm", "ok").inc(fast + slow)
    results.labels("minilm", "error").inc(errors)
    found = {}
    for line in generate_latest(registry).decode().splitlines():
        match = _SAMPLE.match(line)
        if match and not match["name"].endswith("_created"):
            found[match["series"]] = float(match["value"])
    return found


def rounded(sli: str) -> str:
    """minilm's recorded 5-minute ratio of ``sli``, to 1e-6."""
    return f'round(model:slo_{sli}_errors:ratio_rate5m{{model="minilm"}}, 1e-6)'


def test_the_recorded_ratios_are_the_shares_the_client_counted(tmp_path: Path) -> None:
    series = [{"series": s, "values": f"0+{v:g}x30"} for s, v in exposition(90, 10, 5).items()]
    cases = {
        "rule_files": [str(PROMETHEUS / "rules" / "slo.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        # Rounded: rate() extrapolates, so the ratio is exact only to ~1e-15.
                        "expr": rounded(sli),
                        "eval_time": "10m",
                        "exp_samples": [{"labels": '{model="minilm"}', "value": round(value, 6)}],
                    }
                    for sli, value in (("latency", 0.1), ("availability", 5 / 105))
                ],
            }
        ],
    }
    path = tmp_path / "client.test.yml"
    path.write_text(yaml.safe_dump(cases))
    result = run_tool("promtool", "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_rule_on_a_misspelt_bucket_would_fail_here(tmp_path: Path) -> None:
    # Without the client's spelling of `le` the latency ratio has no sample, and the case fails.
    series = [
        {"series": s.replace('le="0.1"', 'le="0.10"'), "values": f"0+{v:g}x30"}
        for s, v in exposition(90, 10, 0).items()
    ]
    cases = {
        "rule_files": [str(PROMETHEUS / "rules" / "slo.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": rounded("latency"),
                        "eval_time": "10m",
                        "exp_samples": [{"labels": '{model="minilm"}', "value": 0.1}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "misspelt.test.yml"
    path.write_text(yaml.safe_dump(cases))
    assert run_tool("promtool", "test", "rules", str(path)).returncode != 0
