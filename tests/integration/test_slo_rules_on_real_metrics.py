"""The SLO rules against what a real infer exports: its scraped result counter and Triton
histogram (with ``le`` exactly as the client writes it) are replayed into
`promtool test rules`, and the recorded ratios must be the ones the counts give."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.llm.model_catalog import load_models
from streams.runtime import kafka
from streams.settings import Settings
from tests.integration.test_alert_rules_on_real_metrics import free_port, samples
from tests.support.monitoring_tools import PROMETHEUS, run_tool
from tests.support.verdicts import SAFE, passed, signed_headers
from tests.support.world import World, make_world, produce, read_all, running, wait_for

REQUESTS = 40
LATENCY_RATIO = 'model:slo_latency_errors:ratio_rate5m{model="minilm"}'
_LE = re.compile(r'le="([^"]+)"')


@pytest.fixture
def world(triton: Settings, tmp_path) -> World:
    return make_world(triton, tmp_path)


def send(world: World, requests: list[InferenceRequest]) -> None:
    """Straight to the safe topic, signed as guard signs it."""
    encode = AvroSerde(kafka.registry(world.settings), world.catalog).encoder(SAFE)
    values = [encode(passed(r).to_avro()) for r in requests]
    keys = [r.request_id.encode() for r in requests]
    headers = [
        signed_headers(world.settings, SAFE, k, v) for k, v in zip(keys, values, strict=True)
    ]
    produce(world.settings, world.topic(SAFE), values, keys, headers)


def test_minilms_real_metrics_give_the_slo_ratios_the_counts_say(world: World, tmp_path: Path):
    slo = load_models().get("minilm").slo
    assert slo is not None
    port = free_port()
    send(world, [InferenceRequest.new("acme", "minilm", f"sentence {i}") for i in range(REQUESTS)])
    names = {
        "sluice_infer_results_total",
        "sluice_infer_triton_seconds_bucket",
        "sluice_infer_triton_seconds_count",
    }
    # Only the embeddings lane (minilm's): one process, one metrics port.
    with running(world, "infer", SLUICE_INFER__LANE="embeddings", SLUICE_METRICS__PORT=str(port)):
        read_all(world.settings, world.topic("inference.responses"), REQUESTS, timeout=300)

        def scraped() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return ""

        wait_for(
            lambda: 'sluice_infer_triton_seconds_count{model="minilm"}' in scraped(),
            30,
            "minilm's Triton histogram",
        )
        found = samples(scraped(), names)

    minilm = {s: v for s, v in found.items() if 'model="minilm"' in s}
    # The rule's bucket is one the client really exports, spelled the same way.
    assert (
        f'le="{slo.latency.threshold_s!r}"' in (PROMETHEUS / "rules" / "slo.rules.yml").read_text()
    )
    boundaries = {m for s in minilm for m in _LE.findall(s)}
    assert repr(slo.latency.threshold_s) in boundaries, boundaries
    [fast] = [v for s, v in minilm.items() if f'le="{slo.latency.threshold_s!r}"' in s]
    [calls] = [v for s, v in minilm.items() if s.startswith("sluice_infer_triton_seconds_count")]
    assert calls == REQUESTS  # one observation per request served (no cache in this world)
    slow_share = 1 - fast / calls
    # As if infer did every minute what it did here.
    series = [{"series": s, "values": f"0+{v:g}x30"} for s, v in minilm.items()]
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
                        "expr": f"round({LATENCY_RATIO}, 1e-6)",
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": '{model="minilm"}', "value": round(slow_share, 6)}
                        ],
                    },
                    {
                        # Every result was ok: no error series, so no error ratio above 0.
                        "expr": 'model:slo_availability_errors:ratio_rate5m{model="minilm"} > 0',
                        "eval_time": "10m",
                        "exp_samples": [],
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "25m",
                        "alertname": "SluiceSloAvailabilityBurnFast",
                        "exp_alerts": [],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "scraped.test.yml"
    path.write_text(yaml.safe_dump(cases))
    result = run_tool("promtool", "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
