"""The pure parts of bench/gateway_latency.py: levels, the closed loop's window, the table."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import pytest
import yaml

from bench.gateway_latency import (
    DIRECT,
    GATEWAY,
    OK,
    LevelResult,
    closed_loop,
    gateway_call,
    parse_concurrency,
    report_lines,
    ticket_texts,
    unlimited_rate_limits,
)
from streams.llm.rate_limits import load_rate_limits
from streams.settings import PROJECT_ROOT


class VirtualClock:
    """Time that moves only when a fake call says so: the loop's arithmetic, exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_call(clock: VirtualClock, seconds: float, outcomes: dict[str, str] | None = None):
    sent: list[str] = []

    async def call(text: str) -> str:
        sent.append(text)
        clock.now += seconds
        await asyncio.sleep(0)
        return (outcomes or {}).get(text, OK)

    return call, sent


def test_levels_are_parsed_in_order_and_bad_ones_refused():
    assert parse_concurrency("1,10,100") == [1, 10, 100]
    assert parse_concurrency("32") == [32]
    for bad in ("", "0,1", "1,1", "-3", "ten"):
        with pytest.raises(ValueError, match="--concurrency"):
            parse_concurrency(bad)


def test_only_calls_answered_in_the_window_count():
    clock = VirtualClock()
    call, sent = fake_call(clock, 1.0)
    result = asyncio.run(
        closed_loop(
            call, ["a"], target=DIRECT, concurrency=1, warmup_s=2.0, duration_s=5.0, clock=clock
        )
    )
    # Answered at 1, 2, ..., 7: the window is (2, 7], so 3, 4, 5, 6, 7 count.
    assert len(sent) == 7
    assert result.latencies_ms == [1000.0] * 5
    assert result.rate == pytest.approx(1.0)
    assert result.p(50) == result.p(99) == pytest.approx(1000.0)
    assert not result.failures


def test_failed_calls_are_counted_by_reason_and_not_timed():
    clock = VirtualClock()
    call, _ = fake_call(clock, 1.0, outcomes={"busy": "http 429"})
    result = asyncio.run(
        closed_loop(
            call,
            ["fine", "busy"],
            target=GATEWAY,
            concurrency=1,
            warmup_s=0.0,
            duration_s=4.0,
            clock=clock,
        )
    )
    assert len(result.latencies_ms) == 2
    assert result.failures == Counter({"http 429": 2})
    assert result.rate == pytest.approx(0.5), "requests/s counts answered calls only"


def test_each_client_sends_its_own_texts():
    clock = VirtualClock()
    call, sent = fake_call(clock, 0.5)
    texts = [f"t{i}" for i in range(6)]
    asyncio.run(
        closed_loop(
            call, texts, target=DIRECT, concurrency=3, warmup_s=0.0, duration_s=3.0, clock=clock
        )
    )
    assert sent[:3] == ["t0", "t1", "t2"], "three clients start at once"
    assert set(sent) == set(texts)


def test_a_loop_without_texts_is_refused():
    with pytest.raises(ValueError, match="no texts"):
        asyncio.run(
            closed_loop(
                fake_call(VirtualClock(), 1.0)[0],
                [],
                target=DIRECT,
                concurrency=1,
                warmup_s=0.0,
                duration_s=1.0,
            )
        )


def _level(target: str, concurrency: int, latencies: list[float], window_s: float = 10.0):
    return LevelResult(target, concurrency, window_s, latencies_ms=latencies)


def test_the_table_shows_each_targets_percentiles_rates_and_what_the_gateway_adds():
    results = [
        _level(DIRECT, 1, [2.0] * 99 + [12.0]),
        _level(GATEWAY, 1, [30.0] * 99 + [80.0]),
        _level(DIRECT, 10, [5.0] * 400),
        _level(GATEWAY, 10, [40.0] * 300),
    ]
    results[3].failures["http 504"] = 3
    lines = report_lines(results)
    rows = {int(line.split("|")[0]): line.split("|")[1:] for line in lines[2:4]}
    direct, gateway, added = (cell.split() for cell in rows[1])
    assert direct == ["2.0", "2.1", "10.0"]  # p50, p99 (interpolated), requests/s
    assert gateway == ["30.0", "30.5", "10.0"]
    assert added == ["+28.0", "+28.4"]
    assert [cell.split() for cell in rows[10]] == [
        ["5.0", "5.0", "40.0"],
        ["40.0", "40.0", "30.0"],
        ["+35.0", "+35.0"],
    ]
    assert "highest sustained direct: 40.0 requests/s at 10 clients" in lines
    assert "highest sustained gateway: 30.0 requests/s at 10 clients" in lines
    assert lines[-1] == "failed gateway at 10 clients: http 504 3"


def test_a_level_without_answers_shows_dashes_and_few_answers_are_flagged():
    lines = report_lines([_level(DIRECT, 100, [3.0] * 5), _level(GATEWAY, 100, [])])
    cells = lines[2].split("|")
    assert cells[2].split() == ["-", "-", "0.0"]
    assert cells[3].split() == ["-", "-"]
    assert "highest sustained direct: 0.5 requests/s at 100 clients (few answers: noise)" in lines


def test_a_level_measured_for_one_target_only_is_left_out():
    lines = report_lines(
        [_level(DIRECT, 1, [1.0]), _level(DIRECT, 10, [1.0]), _level(GATEWAY, 10, [9.0])]
    )
    assert [line.split("|")[0].strip() for line in lines[2:3]] == ["10"]
    assert lines[3] == ""


def test_the_summary_holds_the_numbers_of_the_json_file():
    level = _level(GATEWAY, 10, [10.0, 20.0], window_s=4.0)
    level.failures["timeout"] = 1
    summary = level.summary()
    assert json.loads(json.dumps(summary)) == {
        "target": "gateway",
        "concurrency": 10,
        "window_s": 4.0,
        "answered": 2,
        "requests_per_s": 0.5,
        "p50_ms": 15.0,
        "p99_ms": pytest.approx(19.9),
        "failures": {"timeout": 1},
    }


def test_the_bench_tenants_rate_limits_are_lifted_and_the_others_kept(tmp_path):
    shipped = (PROJECT_ROOT / "schemas" / "rate_limits.yaml").read_text()
    lifted = unlimited_rate_limits(shipped, "acme")
    data = yaml.safe_load(lifted)
    assert data["tenants"]["acme"] == {"requests_per_minute": None, "tokens_per_minute": None}
    assert data["key_default"] == {"requests_per_minute": None, "tokens_per_minute": None}
    assert data["default"] == yaml.safe_load(shipped)["default"]
    path = tmp_path / "rate_limits.yaml"
    path.write_text(lifted)
    limits = load_rate_limits(path)  # still a valid declaration
    assert limits.tenants["acme"].requests_per_minute is None
    with pytest.raises(ValueError, match="mapping"):
        unlimited_rate_limits("- a list\n", "acme")


def test_ticket_texts_are_the_bodies_of_the_sample_and_broken_lines_are_skipped():
    lines = [
        json.dumps({"subject": "s", "body": "Hello support, it broke."}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"body": "  "}),
        json.dumps({"body": 42}),
    ]
    assert ticket_texts(lines) == ["Hello support, it broke."]
    sample = PROJECT_ROOT / "schemas/datasets/support_tickets/sample.jsonl"
    assert len(ticket_texts(sample.read_text().splitlines())) > 100


def test_a_gateway_call_is_ok_only_for_one_vector_of_the_models_size():
    def answer(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["input"]
        assert request.url.path == "/v1/embeddings"
        assert json.loads(request.content)["model"] == "minilm"
        bodies = {
            "fine": (200, {"data": [{"embedding": [0.1] * 4}]}),
            "short": (200, {"data": [{"embedding": [0.1] * 3}]}),
            "two": (200, {"data": [{"embedding": [0.1] * 4}] * 2}),
            "limited": (429, {"error": {"type": "rate_limit_error"}}),
            "odd": (200, ["not", "a", "mapping"]),
        }
        status, body = bodies[text]
        return httpx.Response(status, json=body)

    async def outcomes() -> list[str]:
        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(base_url="http://gw", transport=transport) as client:
            call = gateway_call(client, dims=4)
            return [await call(t) for t in ("fine", "short", "two", "limited", "odd")]

    assert asyncio.run(outcomes()) == [OK, "bad body", "bad body", "http 429", "bad body"]
