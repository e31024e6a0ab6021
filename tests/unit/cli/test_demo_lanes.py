"""The demo's verdict on infer's lanes: embeddings in the mixed burst against embeddings alone."""

from __future__ import annotations

from typing import Any

import pytest

from streams.cli import console
from streams.cli.demo.inference import _report_lanes


def results(model: str, e2e_ms: list[float], status: str = "ok") -> list[dict[str, Any]]:
    return [{"model": model, "e2e_ms": ms, "status": status} for ms in e2e_ms]


@pytest.mark.parametrize(
    ("mixed", "alone", "expected"),
    [
        (
            [100, 120, 140],
            80.0,
            "120 ms in the mixed burst, 80 ms alone: 1.5x (target: within 2x; met)",
        ),
        (
            [100, 400, 900],
            80.0,
            "400 ms in the mixed burst, 80 ms alone: 5.0x (target: within 2x; not met)",
        ),
    ],
)
def test_the_embeddings_p50_is_compared_with_the_2x_target(
    mixed: list[float], alone: float, expected: str
) -> None:
    # Generations and failed embeddings do not count: only ok embeddings' latency.
    burst = (
        results("minilm", mixed) + results("textgen", [20_000]) + results("minilm", [1], "error")
    )
    with console.capture() as captured:
        _report_lanes(burst, alone)
    assert expected in " ".join(captured.get().split())


def test_no_embedding_result_says_so_rather_than_dividing_by_zero() -> None:
    with console.capture() as captured:
        _report_lanes(results("textgen", [10]), 0.0)
    assert "no ok embedding results" in captured.get()
