"""meter and sink on the real stack: exact totals in ClickHouse, replays, crashes, outages, budgets.

Each test runs `sluice run meter` / `sluice run sink` as child processes with
its own consumer groups, meter state topics, ClickHouse directory and tenants.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.warehouse import clickhouse
from streams.warehouse.tables import sink_topics
from tests.support import metering as m
from tests.support.tenants import register
from tests.support.world import (
    process_log,
    start_processor,
    stop_all,
    wait_for,
)

METER_INPUTS = ["inference.results", "metering.usage"]


def physical(world, topics) -> list[str]:
    return [world.topic(t) for t in topics]


@pytest.fixture
def world(stack, tmp_path):
    w = m.metering_world(stack, tmp_path)
    yield w
    stop_all(w)


@pytest.fixture
def serde(world):
    return AvroSerde(kafka.registry(world.settings), world.catalog)


def usage_count(world, tenants) -> int:
    rows = m.query(
        world.settings, f"SELECT count() FROM usage FINAL WHERE tenant_id IN {m.in_list(tenants)}"
    )
    return int(rows[0][0])


def wait_metered(world, tenants, count, timeout=300.0) -> None:
    """Until ClickHouse has every usage event and every 1h window has counted them all."""

    def done() -> bool:
        try:
            if usage_count(world, tenants) != count:
                return False
            rows = m.query(
                world.settings,
                "SELECT sum(requests) FROM usage_windows FINAL WHERE window = '1h' "
                f"AND tenant_id IN {m.in_list(tenants)}",
            )
            return int(rows[0][0] or 0) == count
        except Exception:  # the sink may not have created the tables yet
            return False

    wait_for(done, timeout, f"{count} metered requests in ClickHouse")


def test_totals_in_clickhouse_are_exact_and_a_replay_changes_nothing(world, serde):
    tenants = m.tenants(3)
    results = m.synthetic_results(tenants, 3000, start=m.recent_start(timedelta(minutes=2)))
    m.send_results(world.settings, serde, results)
    start_processor(world, "meter")
    start_processor(world, "sink")
    wait_metered(world, tenants, len(results))

    per_tenant = m.expected(results, lambda r: r.tenant_id)
    rows = m.query(
        world.settings,
        "SELECT tenant_id, count(), countIf(status != 'ok'), sum(input_tokens), "
        "sum(cached_input_tokens), sum(output_tokens), sum(cost) FROM usage FINAL "
        f"WHERE tenant_id IN {m.in_list(tenants)} GROUP BY tenant_id",
    )
    assert {r[0]: tuple(r[1:]) for r in rows} == {t: v.row() for t, v in per_tenant.items()}
    total_cost = sum((v.cost for v in per_tenant.values()), Decimal(0))
    assert sum(r[6] for r in rows) == total_cost  # to the nano-dollar, so to the cent

    per_minute = m.expected(results, lambda r: (r.tenant_id, r.model, m.minute(r.completed_at)))
    windows = m.query(
        world.settings,
        "SELECT tenant_id, model, window_start, requests, errors, input_tokens, "
        "cached_input_tokens, output_tokens, cost FROM usage_windows FINAL "
        f"WHERE window = '1m' AND tenant_id IN {m.in_list(tenants)}",
    )
    assert {(t, mo, ws.replace(tzinfo=UTC)): tuple(rest) for t, mo, ws, *rest in windows} == {
        k: v.row() for k, v in per_minute.items()
    }

    budgets = m.query(
        world.settings,
        "SELECT tenant_id, requests, tokens, cost FROM budget_status FINAL "
        f"WHERE period = 'day' AND tenant_id IN {m.in_list(tenants)}",
    )
    assert {r[0]: tuple(r[1:]) for r in budgets} == {
        t: (v.requests, v.input_tokens + v.output_tokens, v.cost) for t, v in per_tenant.items()
    }
    results_rows = m.query(
        world.settings,
        f"SELECT count(), sum(e2e_ms) FROM results FINAL WHERE tenant_id IN {m.in_list(tenants)}",
    )
    assert results_rows[0] == (len(results), sum(r.e2e_ms for r in results))

    # Replay: stop the sink, rewind its group to the beginning, start it again.
    sink_group = f"{world.settings.runner.group_prefix}.sink"
    stop_all(world)
    world.processes.clear()
    topics, _ = sink_topics(world.catalog)
    admin = kafka.admin(world.settings)
    client = kafka.consumer(world.settings, sink_group)
    ends = kafka.end_offsets(client, physical(world, topics))
    client.close()
    rewind = [TopicPartition(tp.topic, tp.partition, 0) for tp in ends]
    for future in admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(sink_group, rewind)]
    ).values():
        future.result()
    restarted = datetime.now(UTC)
    start_processor(world, "sink")
    wait_for(
        lambda: kafka.group_lag(world.settings, sink_group, physical(world, topics)) == 0,
        300,
        "the sink's replay",
    )
    replayed = m.query(
        world.settings,
        f"SELECT max(ingested_at) FROM usage WHERE tenant_id IN {m.in_list(tenants)}",
    )[0][0]
    assert replayed.replace(tzinfo=UTC) >= restarted.replace(microsecond=0)  # rows came again...
    again = m.query(
        world.settings,
        "SELECT tenant_id, count(), countIf(status != 'ok'), sum(input_tokens), "
        "sum(cached_input_tokens), sum(output_tokens), sum(cost) FROM usage FINAL "
        f"WHERE tenant_id IN {m.in_list(tenants)} GROUP BY tenant_id",
    )
    assert sorted(again) == sorted(rows)  # ...and every request still counts once
    # The materialized view, recomputed from the deduplicated table, agrees.
    db = clickhouse.open_warehouse(world.settings, database="sluice")
    try:
        db.command("SYSTEM REFRESH VIEW cost_per_tenant_day")
        db.command("SYSTEM WAIT VIEW cost_per_tenant_day")
        view = db.query(
            "SELECT tenant_id, sum(requests), sum(cost) FROM cost_per_tenant_day "
            f"WHERE tenant_id IN {m.in_list(tenants)} GROUP BY tenant_id"
        ).rows
    finally:
        db.close()
    assert {r[0]: (r[1], r[2]) for r in view} == {
        t: (v.requests, v.cost) for t, v in per_tenant.items()
    }


def test_meter_killed_mid_window_restarts_with_exact_windows_and_budgets(world, serde):
    tenants = m.tenants(2)
    start = m.recent_start(timedelta(minutes=2))
    results = m.synthetic_results(tenants, 6000, start=start, step_ms=11, seed=11)
    m.send_results(world.settings, serde, results)
    probe = kafka.consumer(world.settings, "probe")
    before = sum(kafka.end_offsets(probe, [world.topic("metering.windows")]).values())
    meter = start_processor(world, "meter")

    def progressed() -> bool:
        now = sum(kafka.end_offsets(probe, [world.topic("metering.windows")]).values())
        return now - before > 3000  # well into the stream, far from its end

    wait_for(progressed, 180, "meter to be halfway")
    os.kill(meter.pid, signal.SIGKILL)
    meter.wait(30)
    probe.close()
    start_processor(world, "meter")
    group = f"{world.settings.runner.group_prefix}.meter"
    wait_for(
        lambda: kafka.group_lag(world.settings, group, physical(world, METER_INPUTS)) == 0,
        300,
        f"meter to catch up\n{process_log(world)[-3000:]}",
    )
    time.sleep(3)  # the last snapshots were flushed before the commit; let them settle

    ours = set(tenants)
    windows = m.latest(
        world.settings,
        serde,
        "metering.windows",
        key=lambda v: (v["tenant_id"], v["model"], v["window"], v["window_start"]),
        keep=lambda v: v["tenant_id"] in ours,
    )
    got = {
        (t, mo, start): (
            v["requests"],
            v["errors"],
            v["input_tokens"],
            v["cached_input_tokens"],
            v["output_tokens"],
            v["cost"],
        )
        for (t, mo, size, start), v in windows.items()
        if size == "1m"
    }
    want = m.expected(results, lambda r: (r.tenant_id, r.model, m.minute(r.completed_at)))
    assert got == {k: v.row() for k, v in want.items()}

    budgets = m.latest(
        world.settings,
        serde,
        "metering.budgets",
        key=lambda v: v["tenant_id"],
        keep=lambda v: v["tenant_id"] in ours,
    )
    per_tenant = m.expected(results, lambda r: r.tenant_id)
    every_status = m.read_values(
        world.settings, serde, "metering.budgets", lambda v: v["tenant_id"] in ours
    )
    for tenant, status in budgets.items():
        day = next(p for p in status["periods"] if p["period"] == "day")
        totals = per_tenant[tenant]
        assert (day["requests"], day["tokens"], day["cost"]) == (
            totals.requests,
            totals.input_tokens + totals.output_tokens,
            totals.cost,
        )
        # One version per counted request: a fresh budget entry starts at its first
        # event's input offset (see processors.meter.state), so count from the first.
        first = min(v["version"] for v in every_status if v["tenant_id"] == tenant)
        assert status["version"] - first == totals.requests - 1
    assert set(budgets) == ours


@pytest.fixture
def budget_world(stack, tmp_path):
    tenants = m.tenants(2)
    w = m.metering_world(
        stack,
        tmp_path,
        budgets={
            "alert_thresholds_pct": [80, 100],
            "tenants": {
                tenants[0]: {"hard": True, "day": {"usd": "0.01"}},
                tenants[1]: {"hard": True, "day": {"usd": "1000"}},
            },
        },
    )
    w.tenants = tenants  # type: ignore[attr-defined]
    register(stack, tenants)  # before guard starts: it reads the tenant registry once
    yield w
    stop_all(w)


def test_a_tenant_crossing_its_budget_is_reported_by_budget_view(budget_world):
    world = budget_world
    over, under = world.tenants  # type: ignore[attr-defined]
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    # 0.0035 USD each: the 3rd request crosses 0.01.
    results = m.gpt4o_results([over, under], 5)
    with m.budget_view(world) as view:
        assert view.wait_ready(60)
        assert view.is_over_hard_budget(over) is None
        m.send_results(world.settings, serde, results)
        start_processor(world, "meter")
        wait_for(lambda: view.is_over_hard_budget(over) is not None, 180, "the budget to be over")
        reason = view.is_over_hard_budget(over)
        assert reason == "day usd budget of 0.01 reached (0.0175)"
        wait_for(lambda: view.status(under) is not None, 60, "the other tenant's status")
        wait_for(lambda: view.status(under).periods[0].requests == 5, 60, "all its requests")
        assert view.is_over_hard_budget(under) is None

    alerts = m.read_values(
        world.settings, serde, "metering.alerts", lambda v: v["tenant_id"] in (over, under)
    )
    # one alert per threshold and period, not one per request
    assert sorted((a["tenant_id"], a["metric"], a["threshold_pct"]) for a in alerts) == [
        (over, "usd", 80),
        (over, "usd", 100),
    ]


def test_sink_pauses_while_clickhouse_fails_and_loses_nothing(world, serde):
    tenants = m.tenants(1)
    first = m.synthetic_results(tenants, 200, start=m.recent_start(timedelta(minutes=1)), seed=3)
    m.send_results(world.settings, serde, first)
    start_processor(world, "sink")

    def results_count() -> int:
        try:
            return int(
                m.query(
                    world.settings,
                    f"SELECT count() FROM results FINAL WHERE tenant_id IN {m.in_list(tenants)}",
                )[0][0]
            )
        except Exception:
            return -1

    wait_for(lambda: results_count() == 200, 180, "the first results in ClickHouse")
    # ClickHouse stops accepting inserts into the table: a real failure of the real engine.
    db = clickhouse.open_warehouse(world.settings, database="sluice")
    assert isinstance(db, clickhouse.RemoteWarehouse)  # the sink owns the database
    retries_before = process_log(world).count("retrying the batch")
    db.command("DETACH TABLE results")
    second = m.synthetic_results(tenants, 300, start=m.recent_start(timedelta(minutes=1)), seed=4)
    m.send_results(world.settings, serde, second)
    group = f"{world.settings.runner.group_prefix}.sink"
    wait_for(
        lambda: process_log(world).count("retrying the batch") > retries_before,
        120,
        "the sink to back off",
    )
    time.sleep(3)
    lag = kafka.group_lag(world.settings, group, [world.topic("inference.results")])
    assert lag >= 300, process_log(world)[-4000:]  # nothing committed
    db.command("ATTACH TABLE results")
    db.close()
    wait_for(lambda: results_count() == 500, 180, "every result once ClickHouse is back")
    rows = m.query(
        world.settings,
        "SELECT count(), sum(input_tokens) FROM results FINAL "
        f"WHERE tenant_id IN {m.in_list(tenants)}",
    )
    assert rows[0] == (500, sum(r.input_tokens for r in first + second))


def test_guard_blocks_the_requests_of_a_tenant_over_its_hard_budget(budget_world):
    """meter → metering.budgets → guard's BudgetView: the next request is budget_exceeded."""
    world = budget_world
    over, under = world.tenants  # type: ignore[attr-defined]
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    guard_env = {"SLUICE_GUARD__EMBEDDER": "none", "SLUICE_GUARD__HASH_SECRET": "x" * 32}
    start_processor(world, "guard", **guard_env)
    start_processor(world, "meter")

    # Within budget: both tenants pass.
    assert m.guard_decides(world, serde, over)[0] == "inference.requests.safe"
    assert m.guard_decides(world, serde, under)[0] == "inference.requests.safe"

    # Five gpt-4o results each: 0.0175 USD, over the first tenant's hard 0.01 USD a day.
    m.send_results(world.settings, serde, m.gpt4o_results([over, under], 5))
    with m.budget_view(world) as view:
        wait_for(lambda: view.is_over_hard_budget(over) is not None, 180, "meter's budget status")
    time.sleep(2)  # guard's own view follows the topic within a poll (0.2 s)

    assert m.guard_decides(world, serde, over) == (
        "inference.requests.blocked",
        "budget_exceeded",
    )
    assert m.guard_decides(world, serde, under)[0] == "inference.requests.safe"
