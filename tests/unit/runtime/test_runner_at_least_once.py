"""The runner's at-least-once mode: offsets are committed only after every record was delivered."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import TransientError
from streams.runtime.runner import Runner
from streams.runtime.spec import InputRecord, Output, ProcessorSpec
from streams.settings import Settings

TOPIC = "inference.chunks.raw"


def _spec() -> ProcessorSpec[Any, Any]:
    return ProcessorSpec(
        name="echo",
        description="test",
        inputs=lambda catalog, settings: [TOPIC],
        outputs=lambda catalog, settings: ["inference.chunks"],
        process_batch=lambda records, ctx: [[Output("inference.chunks", r.value)] for r in records],
        at_least_once=True,
    )


class Steps:
    """Records the order of what the runner asked of its clients."""

    def __init__(self, *, undelivered: int = 0, left: int = 0) -> None:
        self.log: list[str] = []
        self.undelivered, self.left = undelivered, left
        self.runner: Runner | None = None

    # the pipeline
    def run(self, batch: list[InputRecord], out: Any) -> dict[tuple[str, str], int]:
        for record in batch:
            out.produce("inference.chunks", record.value, record.key, [])
        return {("inference.chunks", ""): len(batch)}

    # the producer
    def produce(self, topic: str, **_kwargs: Any) -> None:
        self.log.append(f"produce {topic}")

    def flush(self, _timeout: float) -> int:
        self.log.append("flush")
        assert self.runner is not None
        for _ in range(self.undelivered):
            self.runner._delivered(_Error(), None)
        return self.left

    # the consumer
    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        assert not asynchronous
        self.log.append(f"commit {[(tp.topic, tp.partition, tp.offset) for tp in offsets]}")


class _Error:
    def str(self) -> str:
        return "broker down"


def _runner(steps: Steps) -> Runner:
    runner = Runner(_spec(), Settings(), config=object())
    runner.pipeline = steps  # type: ignore[assignment]
    runner.producer = steps  # type: ignore[assignment]
    runner.consumer = steps  # type: ignore[assignment]
    steps.runner = runner
    return runner


def _batch() -> list[InputRecord]:
    return [InputRecord(TOPIC, 0, offset, b"k", b"v", b"v", [], 0) for offset in (10, 11)]


def test_the_batch_is_flushed_then_its_offsets_are_committed() -> None:
    steps = Steps()
    _runner(steps)._commit_batch(_batch())
    assert steps.log == [
        "produce inference.chunks",
        "produce inference.chunks",
        "flush",
        "commit [('inference.chunks.raw', 0, 12)]",
    ]


@pytest.mark.parametrize(("undelivered", "left"), [(1, 0), (0, 1)])
def test_a_batch_not_all_delivered_is_not_committed(undelivered: int, left: int) -> None:
    steps = Steps(undelivered=undelivered, left=left)
    with pytest.raises(TransientError, match="not delivered"):
        _runner(steps)._commit_batch(_batch())
    assert not [step for step in steps.log if step.startswith("commit")]
