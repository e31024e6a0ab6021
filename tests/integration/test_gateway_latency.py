"""bench/gateway_latency.py end to end, briefly: it starts guard, infer and the gateway,
measures both targets at each level, writes its table and numbers, and stops what it started.

The real run (30 s per level, 1, 10 and 100 clients) is bench/README.md's; this one only
proves that the script works on the stack, so that a long run does not fail at its end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from streams.settings import Settings

pytest.importorskip("uvicorn", reason="the gateway's HTTP stack: pip install 'sluice[gateway]'")


def test_the_bench_measures_both_targets_at_each_level(triton: Settings, tmp_path) -> None:
    out = tmp_path / "gateway_latency.txt"
    logs = tmp_path / "logs"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gateway_latency",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--concurrency",
            "1,4",
            "--guard-embedder",
            "none",
            "--logs",
            str(logs),
            "--out",
            str(out),
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert [(n["target"], n["concurrency"]) for n in numbers] == [
        ("direct", 1),
        ("gateway", 1),
        ("direct", 4),
        ("gateway", 4),
    ]
    for level in numbers:
        assert level["answered"] > 0 and level["failures"] == {}, level
        assert 0 < level["p50_ms"] <= level["p99_ms"], level
    gateway_p50 = [n["p50_ms"] for n in numbers if n["target"] == "gateway"]
    direct_p50 = [n["p50_ms"] for n in numbers if n["target"] == "direct"]
    assert min(gateway_p50) > min(direct_p50), "the pipeline cannot be faster than its model"
    # Each gateway level says where its time went: every hop of the path was timed.
    for level in (n for n in numbers if n["target"] == "gateway"):
        hops = level["hops_ms"]
        assert {"guard, input side", "infer", "guard, output side"} <= set(hops), level
        assert all(h["n"] > 0 and 0 <= h["p50"] <= h["p99"] for h in hops.values()), hops
    table = out.read_text()
    assert "where the time goes at 4 clients" in table and "commit ms" in table
    assert "highest sustained gateway:" in table and "highest sustained direct:" in table
    # Each process it started wrote its log where it was asked to.
    assert {p.name for p in logs.iterdir()} == {"guard.log", "infer.log", "gateway.log"}
