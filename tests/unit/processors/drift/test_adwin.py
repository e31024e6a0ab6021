"""The ADWIN port with explicit state is river's ADWIN: same detections, and exact restarts."""

from __future__ import annotations

import json
import random

import pytest
from river import drift

from processors.drift.adwin import Adwin


def detections(detector, values) -> list[int]:
    found = []
    for index, value in enumerate(values):
        if isinstance(detector, Adwin):
            if detector.update(value):
                found.append(index)
        else:
            detector.update(value)
            if detector.drift_detected:
                found.append(index)
    return found


def streams() -> dict[str, list[float]]:
    rng = random.Random(1)
    return {
        "mean shift": [rng.gauss(0, 1) for _ in range(5000)]
        + [rng.gauss(1, 1) for _ in range(5000)],
        "variance": [rng.gauss(0, 1) for _ in range(5000)] + [rng.gauss(0, 3) for _ in range(5000)],
        "river's docstring": rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000),
        "stable": [rng.random() for _ in range(50_000)],
        "small shift": [rng.random() for _ in range(20_000)]
        + [rng.random() + 0.1 for _ in range(20_000)],
        "alternating": [rng.gauss((i // 3000) % 2, 1) for i in range(30_000)],
    }


@pytest.mark.parametrize("name", list(streams()))
@pytest.mark.parametrize("delta", [0.002, 1e-4])
def test_same_detections_as_river(name, delta):
    values = streams()[name]
    ours = detections(Adwin(delta=delta), values)
    theirs = detections(drift.ADWIN(delta=delta), values)
    assert ours == theirs


def test_restart_from_state_continues_exactly():
    values = streams()["alternating"]
    uninterrupted = detections(Adwin(), values)
    detector = Adwin()
    first = detections(detector, values[:10_001])
    # Through JSON, as the checkpoint travels.
    restored = Adwin.from_state(json.loads(json.dumps(detector.state())))
    second = [10_001 + i for i in detections(restored, values[10_001:])]
    assert first + second == uninterrupted
    assert restored.width == Adwin.from_state(restored.state()).width


def test_unknown_state_version_is_refused():
    state = Adwin().state()
    state["v"] = 99
    with pytest.raises(ValueError, match="version"):
        Adwin.from_state(state)
