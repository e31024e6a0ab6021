"""The alert rules against what a real processor exports: its scraped series, with the
labels the runner really gives them (sandbox-prefixed topics included), are replayed into
`promtool test rules`, and the rules must see them as the unit cases expect."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.monitoring_tools import PROMETHEUS, run_tool
from tests.support.world import World, make_world, produce, read_all, running, wait_for

_SAMPLE = re.compile(r"^(?P<series>(?P<name>[a-z_:]+)\{[^}]*\}) (?P<value>\S+)$")


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(exposition: str, names: set[str]) -> dict[str, float]:
    """The scraped series of ``names`` (as PromQL selectors) and their values."""
    found = {}
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] in names:
            found[match["series"]] = float(match["value"])
    return found


def test_dead_letters_and_lag_of_a_real_processor_reach_the_rules(
    world: World, good_ticket, tmp_path: Path
):
    port = free_port()
    values = [json.dumps(good_ticket(ticket_id=f"TCK-{i:08d}")).encode() for i in range(30)]
    produce(world.settings, world.raw, [*values, b"garbage", b"{}"])
    with running(world, "validate", SLUICE_METRICS__PORT=str(port)):
        read_all(world.settings, world.validated, 30, settle=0.5)

        def scraped() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return ""

        # Lag comes from librdkafka's statistics, emitted every 5 s.
        wait_for(lambda: "sluice_consumer_lag{" in scraped(), 30, "metrics with lag")
        text = scraped()

    counters = samples(text, {"sluice_records_in_total", "sluice_records_dlq_total"})
    lags = samples(text, {"sluice_consumer_lag"})
    assert any(s.startswith("sluice_records_dlq_total{") for s in counters), text
    assert lags, text
    # As if the processor did every minute what it did here: its counters grow by the
    # scraped values each minute, so it dead-letters 2 of every 32 records (6.25 %).
    series = [{"series": s, "values": f"0+{v:g}x30"} for s, v in counters.items()]
    series += [{"series": s, "values": f"{v:g}x30"} for s, v in lags.items()]
    cases = {
        "rule_files": [str(PROMETHEUS / "rules" / "sluice.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": 'sum(sluice:consumer_lag:sum{processor="validate"})',
                        "eval_time": "5m",
                        "exp_samples": [{"labels": "{}", "value": sum(lags.values())}],
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "SluiceDeadLettersRising",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "ticket", "processor": "validate"},
                                "exp_annotations": {
                                    "summary": "validate dead-letters 6.25% of its input",
                                    "description": (
                                        "validate sends 6.25% of the records it reads to "
                                        "dead-letter topics (over 1 % for 15 minutes)."
                                    ),
                                    "runbook_url": "docs/how-to/runbooks.md#dead-letters-rising",
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "scraped.test.yml"
    path.write_text(yaml.safe_dump(cases))
    result = run_tool("promtool", "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
