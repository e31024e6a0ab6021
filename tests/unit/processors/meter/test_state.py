from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from processors.meter import state as meter
from processors.meter.usage import usage_of
from streams.contracts.records import InferenceResult
from streams.errors import ImplausibleTimestamp
from streams.llm.budgets import BudgetConfig
from streams.llm.pricing import load_prices
from streams.settings import PROJECT_ROOT

PRICES = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
BUDGETS = BudgetConfig.model_validate(
    {"tenants": {"acme": {"hard": True, "day": {"usd": "0.001", "tokens": 100_000}}}}
)
T0 = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 5, 12, tzinfo=UTC)


def usage(i, *, tenant="acme", model="gpt-4o-mini", at=None, status="ok", tokens=(1000, 100)):
    result = InferenceResult(
        request_id=f"r{i}",
        tenant_id=tenant,
        model=model,
        status=status,
        request_created_at=T0,
        completed_at=at or T0 + timedelta(seconds=i),
        input_tokens=tokens[0],
        output_tokens=tokens[1],
    )
    return usage_of(result, PRICES)


def run(state, events, *, start_offset=0, partition=0, now=NOW):
    outputs = []
    for offset, event in enumerate(events, start=start_offset):
        outputs.append(
            meter.apply(state, event, partition=partition, offset=offset, budgets=BUDGETS, now=now)
        )
    return outputs


def windows(state, size):
    return {k: v for k, v in state.items() if k.startswith("w|") and v["w"] == size}


def test_usage_prices_a_result_exactly():
    u = usage(0)
    assert u.cost == Decimal("0.000210000")  # 1000 x 1.5e-7 + 100 x 6e-7
    assert u.total_tokens == 1100
    assert u.priced


def test_windows_and_budget_add_up():
    state = {}
    events = [usage(i) for i in range(120)]  # two minutes of one request per second
    out = run(state, events)
    minute = windows(state, "1m")
    assert sorted(v["req"] for v in minute.values()) == [60, 60]
    (hour,) = windows(state, "1h").values()
    assert hour["req"] == 120
    assert Decimal(hour["cost"]) == Decimal("0.000210000") * 120
    budget = out[-1].budget
    day = budget.periods[0]
    assert day.tokens == 120 * 1100
    assert day.cost == Decimal("0.025200000")
    assert budget.version == 120


def test_replaying_the_same_offsets_counts_nothing_twice():
    state = {}
    events = [usage(i) for i in range(50)]
    run(state, events)
    before = {k: dict(v) for k, v in state.items()}
    outputs = run(state, events)  # at-least-once: the same records again, same offsets
    assert state == before
    assert all(not o.duplicate for o in outputs)  # re-emitted, not dropped: snapshots resent
    assert outputs[-1].windows[1]["requests"] == 50


def test_a_crash_between_keys_is_completed_on_replay():
    state = {}
    events = [usage(i) for i in range(10)]
    run(state, events[:9])
    # offset 9 reached its seen entry and the minute window, then the worker died
    crashed = dict(state)
    meter.apply(crashed, events[9], partition=0, offset=9, budgets=BUDGETS, now=NOW)
    partial = {
        k: v
        for k, v in crashed.items()
        if k.startswith("s|") or (k.startswith("w|") and "|1m|" in k)
    }
    state.update(partial)
    assert state != crashed  # the hour window and the budget missed offset 9
    run(state, events[9:], start_offset=9)  # the replay
    reference = {}
    run(reference, events)
    assert {k: v["req"] for k, v in state.items() if k.startswith("w|")} == {
        k: v["req"] for k, v in reference.items() if k.startswith("w|")
    }
    assert (
        state[meter.budget_key("acme")]["periods"] == reference[meter.budget_key("acme")]["periods"]
    )


def test_a_repeated_usage_event_at_another_offset_is_a_duplicate():
    state = {}
    run(state, [usage(1)])
    (again,) = run(state, [usage(1)], start_offset=7)
    assert again.duplicate
    assert state[meter.budget_key("acme")]["v"] == 1


def test_alerts_fire_once_per_threshold_and_period():
    state = {}
    # 0.001 USD day budget; each request costs 0.00021 USD: 80% at the 4th, 100% at the 5th
    outputs = run(state, [usage(i) for i in range(8)])
    alerts = [a for o in outputs for a in o.alerts]
    assert [(a["metric"], a["threshold_pct"], a["request_id"]) for a in alerts] == [
        ("usd", 80, "r3"),
        ("usd", 100, "r4"),
    ]
    assert alerts[1]["alert_id"] == f"acme|day|{int(T0.replace(hour=0).timestamp() * 1000)}|usd|100"
    # next day: spend restarts, alerts fire again
    tomorrow = T0 + timedelta(days=1)
    later = NOW + timedelta(days=1)
    outputs = run(state, [usage(100 + i, at=tomorrow) for i in range(5)], start_offset=8, now=later)
    assert [a["threshold_pct"] for o in outputs for a in o.alerts] == [80, 100]
    day = outputs[-1].budget.periods[0]
    assert day.requests == 5
    assert day.period_start == tomorrow.replace(hour=0)


def test_late_event_of_a_closed_day_counts_in_windows_not_budget():
    state = {}
    later = NOW + timedelta(days=1)
    run(state, [usage(0, at=T0 + timedelta(days=1))], now=later)
    (out,) = run(state, [usage(1, at=T0)], start_offset=1, now=later)
    assert out.budget.periods[0].requests == 1  # the day of T0 + 1 only
    assert any(w["window_start"] == T0.replace(minute=0) for w in out.windows)


def test_errors_are_counted_and_unknown_models_cost_nothing():
    state = {}
    (out,) = run(state, [usage(0, model="mystery", status="error")])
    assert out.windows[0]["errors"] == 1
    assert out.windows[0]["cost"] == Decimal(0)


def test_sweep_drops_only_this_partitions_final_windows_and_old_request_ids():
    state = {}
    run(state, [usage(0)], partition=0)
    run(state, [usage(1, tenant="other")], partition=1)
    dropped = meter.sweep(
        state,
        partition=0,
        offset=5000,
        now=T0 + timedelta(days=5),
        dedup_records=1000,
        retention_ms=86_400_000,
    )
    assert sorted(k[:2] for k in dropped) == ["s|", "w|", "w|"]
    assert meter.budget_key("acme") in state
    assert any(k.startswith("s|") for k in state)  # partition 1's entry stays
    kept = meter.sweep(
        state, partition=1, offset=900, now=T0, dedup_records=1000, retention_ms=86_400_000
    )
    assert kept == []


def test_an_event_for_a_final_window_is_metered_but_not_windowed():
    state = {}
    old = T0 - timedelta(days=3)
    (out,) = run(state, [usage(0, at=old)])
    assert out.late == 2 and out.windows == []
    assert out.budget is not None  # still billed in its own (past) period
    assert not any(k.startswith("w|") for k in state)


# -- event time bounded by meter's own clock ----------------------------------------
@pytest.mark.parametrize(
    ("at", "bound"),
    [
        (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "max_future_s"),
        (NOW + timedelta(days=1, seconds=1), "max_future_s"),
        (datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), "earliest"),
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "earliest"),
    ],
)
def test_an_absurd_date_is_refused_and_leaves_the_state_untouched(at, bound):
    """Dead-lettered by the app (ImplausibleTimestamp): it opens no period, far or past."""
    state = {}
    with pytest.raises(ImplausibleTimestamp) as refused:
        run(state, [usage(0, at=at)])
    assert state == {}, "nothing counted, not even the request id: a replay counts it"
    assert refused.value.details == {"field": "completed_at", "bound": bound}
    assert "completed_at" in refused.value.message
    assert refused.value.error_class == "ImplausibleTimestamp"


def test_the_future_bound_is_meters_setting():
    ahead = NOW + timedelta(hours=2)
    with pytest.raises(ImplausibleTimestamp, match="3600 s"):
        meter.check_plausible(ahead, NOW, max_future_ms=3_600_000)
    assert meter.check_plausible(ahead, NOW) == ahead  # within the default day
    naive = datetime(2026, 3, 5, 11)
    assert meter.check_plausible(naive, NOW) == naive.replace(tzinfo=UTC)


def test_the_edges_of_plausible_are_metered():
    assert meter.check_plausible(meter.EARLIEST, NOW) == meter.EARLIEST
    edge = NOW + timedelta(milliseconds=meter.DEFAULT_MAX_FUTURE_MS)
    assert meter.check_plausible(edge, NOW) == edge


def test_a_result_from_the_near_future_is_metered_at_arrival_in_the_current_period():
    state = {}
    ahead = NOW + timedelta(hours=1)
    (out,) = run(state, [usage(0, at=ahead)])
    assert out.clamped
    starts = {v["s"] for k, v in state.items() if k.startswith("w|")}
    assert starts == {meter.window_start(NOW, "1m"), meter.window_start(NOW, "1h")}
    assert out.budget is not None and out.budget.periods[0].period_start.date() == NOW.date()


def test_an_event_slightly_ahead_of_meters_clock_keeps_its_time():
    state = {}
    ahead = NOW + timedelta(minutes=4)
    (out,) = run(state, [usage(0, at=ahead)])
    assert not out.clamped
    assert {v["s"] for k, v in state.items() if k.startswith("w|")} == {
        meter.window_start(ahead, "1m"),
        meter.window_start(ahead, "1h"),
    }


def test_a_clamped_event_is_metered_at_its_arrival_so_a_replay_lands_in_the_same_window():
    arrived = NOW - timedelta(minutes=3)
    event = usage(0, at=NOW + timedelta(hours=1))
    for now in (NOW, NOW + timedelta(minutes=20)):  # first run, then the replay after a crash
        state = {}
        out = meter.apply(
            state, event, partition=0, offset=0, budgets=BUDGETS, now=now, arrived=arrived
        )
        assert out.clamped
        assert {w["window_start"] for w in out.windows} == {
            arrived.replace(second=0),
            arrived.replace(minute=0, second=0),
        }


def test_event_time_falls_back_to_now_when_the_arrival_is_implausible_too():
    ahead = NOW + timedelta(hours=3)
    far = datetime(9999, 1, 1, tzinfo=UTC)
    assert meter.event_time(ahead, NOW, arrived=far) == NOW
    assert meter.event_time(ahead, NOW, arrived=datetime(1990, 1, 1, tzinfo=UTC)) == NOW
    assert meter.event_time(ahead, NOW, arrived=None) == NOW
    assert meter.event_time(T0, NOW, arrived=far) == T0
    with pytest.raises(ImplausibleTimestamp):
        meter.event_time(far, NOW, arrived=NOW)


def test_an_event_dated_beyond_the_allowed_skew_opens_no_future_window():
    state = {}
    events = [usage(i, at=NOW + timedelta(minutes=6 + i)) for i in range(100)]
    outputs = run(state, events)
    assert all(o.clamped for o in outputs)
    ends = [v["e"] for k, v in state.items() if k.startswith("w|")]
    assert max(ends) <= meter.window_start(NOW, "1h") + meter.WINDOWS["1h"]
    assert len(ends) == 2  # the current minute and the current hour


def test_budgets_of_finished_periods_are_swept_and_a_new_entry_versions_above_the_old():
    """State holds the tenants active this month, not every tenant id ever metered."""
    state = {}
    made_up = [usage(i, tenant=f"made-up-{i}") for i in range(1000)]
    run(state, [*made_up, usage(5000)])
    assert len([k for k in state if k.startswith("b|")]) == 1001
    old_version = state[meter.budget_key("acme")]["v"]
    # Two months later every period of March is final (two days of retention).
    later = datetime(2026, 5, 10, tzinfo=UTC)
    meter.sweep(
        state, partition=0, offset=1001, now=later, dedup_records=10, retention_ms=2 * 86_400_000
    )
    assert [k for k in state if k.startswith("b|")] == []
    (out,) = run(state, [usage(6000, at=later)], start_offset=1001, now=later)
    assert out.budget.version > old_version, "BudgetView keeps the highest version"
    # A late event of a final period opens nothing.
    run(state, [usage(6001, at=T0)], start_offset=1002, now=later)
    periods = state[meter.budget_key("acme")]["periods"]
    assert {p["s"] for p in periods.values()} >= {int(later.replace(day=1).timestamp() * 1000)}
    assert all(p["e"] > int(later.timestamp() * 1000) for p in periods.values())


def test_budgets_with_an_open_period_are_kept():
    state = {}
    run(state, [usage(1)])
    meter.sweep(
        state, partition=0, offset=1, now=NOW, dedup_records=10, retention_ms=2 * 86_400_000
    )
    assert meter.budget_key("acme") in state


def test_one_tenants_request_id_never_hides_another_tenants_request():
    # Same request id, two tenants: both are counted; a redelivery of one is not.
    state: dict = {}
    first, second, again = run(state, [usage(0), usage(0, tenant="globex"), usage(0)])
    assert not first.duplicate and not second.duplicate
    assert again.duplicate


def test_every_status_settles_the_request_it_counted() -> None:
    state: dict = {}
    outputs = run(state, [usage(i) for i in range(3)])
    assert [o.budget.settled_request_ids for o in outputs] == [("r0",), ("r1",), ("r2",)]
    # Re-sent for a replayed event (its first status may be lost with the crash).
    (replayed,) = run(state, [usage(1)], start_offset=1)
    assert replayed.budget.settled_request_ids == ("r1",)
    # A repeated event at another offset was settled by its first status: none here.
    (repeated,) = run(state, [usage(0)], start_offset=3)
    assert repeated.duplicate and repeated.budget is None


def test_a_late_event_of_a_closed_period_still_settles_its_request() -> None:
    state: dict = {}
    run(state, [usage(0, at=NOW)])
    (late,) = run(state, [usage(1, at=NOW - timedelta(days=1))], start_offset=1)
    assert late.budget.settled_request_ids == ("r1",)
