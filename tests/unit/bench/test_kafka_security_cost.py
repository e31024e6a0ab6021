"""The pure parts of bench/kafka_security_cost.py: the plain broker's config, percentiles, table."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.kafka_security_cost import (
    PLAIN,
    SECURED,
    SideResults,
    percentile,
    plain_broker_properties,
    report_lines,
)
from streams.settings import PROJECT_ROOT

TEMPLATE = (PROJECT_ROOT / "infra/local/kafka/server.properties").read_text()


def parse(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def render() -> dict[str, str]:
    return parse(
        plain_broker_properties(TEMPLATE, port=41000, controller_port=41001, log_dir=Path("/d"))
    )


def test_the_plain_broker_listens_in_plaintext_only_without_an_authorizer():
    properties = render()
    assert properties["listeners"] == ("PLAINTEXT://127.0.0.1:41000,CONTROLLER://127.0.0.1:41001")
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:41000"
    assert properties["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    )
    assert properties["controller.quorum.bootstrap.servers"] == "127.0.0.1:41001"
    assert properties["log.dirs"] == "/d"
    leftovers = [k for k in properties if k.startswith(("ssl.", "sasl.", "listener.name."))]
    assert leftovers == []
    assert "authorizer.class.name" not in properties
    assert "super.users" not in properties
    assert all("SASL" not in v and "SSL" not in v for v in properties.values())


def test_the_plain_broker_keeps_every_tuning_setting_of_the_stacks_broker():
    stack = parse(TEMPLATE)
    plain = render()
    tuning = {
        k: v
        for k, v in stack.items()
        if "${" not in v
        and not k.startswith(("ssl.", "sasl.", "listener.name.", "authorizer.", "allow."))
        and k not in {"listener.security.protocol.map", "inter.broker.listener.name"}
    }
    assert "offsets.topic.replication.factor" in tuning
    assert "num.partitions" in tuning
    assert {k: plain[k] for k in tuning} == tuning


def test_an_unknown_placeholder_in_the_stacks_config_is_refused():
    template = TEMPLATE + "\nquota.window.num=${quota_windows}\n"
    with pytest.raises(ValueError, match=r"quota\.window\.num"):
        plain_broker_properties(template, port=1, controller_port=2, log_dir=Path("/d"))


def test_percentiles_interpolate_between_ranks():
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 95) == 7.0


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], 101), ([1.0], -1)])
def test_a_percentile_of_nothing_or_out_of_range_is_refused(values, q):
    with pytest.raises(ValueError):
        percentile(values, q)


def test_the_table_shows_best_rates_percentiles_and_secured_over_plain():
    plain, secured = SideResults(), SideResults()
    plain.rates = {"bare": [40_000, 50_000], "transactional": [20_000], "validate": [10_000]}
    secured.rates = {"bare": [25_000, 20_000], "transactional": [15_000], "validate": [8_000]}
    plain.latencies_ms = [10.0] * 99 + [100.0]
    secured.latencies_ms = [20.0] * 99 + [100.0]
    secured.lost = 1
    secured.decisions.update({"safe": 99, "blocked": 1})
    lines = report_lines({PLAIN: plain, SECURED: secured})
    rows = {line[:26].strip(): line[26:].split() for line in lines[1:7]}
    assert rows["bare (records/s)"] == ["50,000", "25,000", "0.50"]
    assert rows["validate (records/s)"] == ["10,000", "8,000", "0.80"]
    assert rows["guard p50 (ms)"] == ["10.0", "20.0", "2.00"]
    assert rows["guard p99 (ms)"] == ["10.9", "20.8", "1.91"]
    assert "secured runs: bare 25,000, 20,000" in lines[-1]
    assert "guard: 100 timed (blocked 1, safe 99), 1 not decided in time" in lines[-1]
