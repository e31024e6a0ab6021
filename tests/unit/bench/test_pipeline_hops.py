"""The pure parts of bench/pipeline_hops.py: hops from create times, stages from metrics."""

from __future__ import annotations

import pytest

from bench.pipeline_hops import hop_latencies, hop_lines, parse_stage_totals, stage_lines

STAMPS = {
    "inference.requests": {"a": 1_000, "b": 2_000, "refused": 3_000},
    "inference.requests.safe": {"a": 1_100, "b": 2_300},
    "inference.responses": {"a": 1_150, "b": 2_400},
    "inference.results": {"a": 1_400, "b": 2_500},
}


def test_each_hop_is_the_gap_between_the_records_two_stages_produced() -> None:
    hops = hop_latencies(STAMPS)
    assert hops["guard, input side"] == [100.0, 300.0]
    assert hops["infer"] == [50.0, 100.0]
    assert hops["guard, output side"] == [250.0, 100.0]
    assert hops["requests → results"] == [400.0, 500.0]


def test_a_request_missing_from_a_topic_is_left_out_of_every_hop() -> None:
    hops = hop_latencies(STAMPS)
    assert all(len(values) == 2 for values in hops.values())  # not "refused"
    assert all(v == [] for v in hop_latencies({"inference.requests": {"a": 1}}).values())


def test_the_table_gives_the_gateway_what_the_client_saw_beyond_kafka() -> None:
    lines = hop_lines(hop_latencies(STAMPS), client_p50_ms=480.0)
    gateway = next(line for line in lines if line.startswith("gateway:"))
    # client p50 480 minus the p50 of requests → results (400 and 500: 450)
    assert gateway.split()[5] == "30.0"
    assert not any(line.startswith("gateway:") for line in hop_lines(hop_latencies(STAMPS), None))


METRICS_BEFORE = """
# HELP sluice_batch_stage_seconds Where a batch's time goes.
# TYPE sluice_batch_stage_seconds histogram
sluice_batch_stage_seconds_sum{processor="guard",stage="fill"} 1.0
sluice_batch_stage_seconds_count{processor="guard",stage="fill"} 10.0
sluice_batch_stage_seconds_sum{processor="guard",stage="process"} 2.0
sluice_batch_stage_seconds_count{processor="guard",stage="process"} 10.0
sluice_batch_stage_seconds_sum{processor="guard",stage="commit"} 0.5
sluice_batch_stage_seconds_count{processor="guard",stage="commit"} 10.0
# HELP sluice_batch_size Records per batch.
# TYPE sluice_batch_size histogram
sluice_batch_size_sum{processor="guard"} 50.0
sluice_batch_size_count{processor="guard"} 10.0
"""
METRICS_AFTER = (
    METRICS_BEFORE.replace('fill"} 1.0', 'fill"} 1.5')
    .replace('"process"} 2.0', '"process"} 6.0')
    .replace('"commit"} 0.5', '"commit"} 0.9')
    .replace("} 10.0", "} 30.0")
    .replace("} 50.0", "} 250.0")
)


def test_stage_means_are_over_the_batches_of_the_window_only() -> None:
    before, after = parse_stage_totals(METRICS_BEFORE), parse_stage_totals(METRICS_AFTER)
    assert before.seconds[("guard", "process")] == pytest.approx(2.0)
    [header, guard] = stage_lines(before, after)
    assert header.split()[:3] == ["processor", "batches", "records/batch"]
    # 20 batches, 200 records; fill 0.5 s, process 4 s, commit 0.4 s over them
    assert guard.split() == ["guard", "20", "10.0", "25.0", "200.0", "20.0"]


def test_a_processor_without_batches_in_the_window_is_not_listed() -> None:
    totals = parse_stage_totals(METRICS_BEFORE)
    assert stage_lines(totals, totals) == [stage_lines(totals, totals)[0]]
