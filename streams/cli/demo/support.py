"""Helpers the demo steps share: processes, waiting for consumer groups, reading new records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import click
from confluent_kafka import KafkaException, TopicPartition

from streams.cli import console
from streams.runtime import kafka
from streams.runtime.spec import InputRecord
from streams.runtime.waiting import wait_until
from streams.settings import Settings


@contextmanager
def processors(
    settings: Settings,
    names: list[str],
    env: Mapping[str, str] | None = None,
    *,
    label: str = "",
) -> Iterator[None]:
    """Run each processor as its own `sluice run` process for the duration of the block.

    ``label`` tells apart a second instance of a processor (infer's embeddings lane):
    its log is ``demo-<name>-<label>.log``.
    """
    logs = settings.stack.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for name in names:
            shown = f"{name}-{label}" if label else name
            log = logs / f"demo-{shown}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "streams", "run", name, "--metrics-port", "0"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(env or {})},
                )
            processes.append((shown, process, log))
            console.print(
                f"   started processor [cyan]{shown}[/cyan] (pid {process.pid}, log {log})"
            )
        yield
    finally:
        for _, process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process, log in processes:
            try:
                code = process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                code = -9
            if code not in (0, -signal.SIGTERM):
                console.print(f"[red]{name} exited with {code}[/red]; see {log}")


def wait_caught_up(
    settings: Settings, processor: str, topics: list[str], timeout: float = 600
) -> None:
    """Block until ``processor``'s consumer group has committed everything in ``topics``."""
    group = f"{settings.runner.group_prefix}.{processor}"
    with console.status(f"waiting for {processor} to catch up") as status:

        def caught_up() -> bool:
            lag = kafka.pending_records(settings, group, topics)
            status.update(f"waiting for {processor}: {lag:,} records to go")
            return lag == 0

        if wait_until(caught_up, timeout, interval=1.0):
            return
    raise click.ClickException(
        f"{processor} did not catch up within {timeout:.0f}s; see .sluice/logs/demo-{processor}.log"
    )


def end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    """Where ``topics`` end now: the demo counts only what comes after."""
    client = kafka.consumer(settings, f"{settings.runner.group_prefix}.demo-reader")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                return kafka.end_offsets(client, topics)
            except KafkaException:
                # Topics created a moment ago may not have a leader yet.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        client.close()


def read_new(settings: Settings, topic: str, since: dict[TopicPartition, int]) -> list[InputRecord]:
    """Committed records of ``topic`` after the offsets in ``since``."""
    client = kafka.consumer(settings, f"{settings.runner.group_prefix}.demo-reader")
    try:
        ends = kafka.end_offsets(client, [topic])
        starts = {tp: since.get(tp, 0) for tp in ends}
        client.assign([TopicPartition(tp.topic, tp.partition, o) for tp, o in starts.items()])
        records: list[InputRecord] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = client.position(list(ends))
            # A partition nothing was read from has no position yet: it is where it started.
            done = [
                (p.offset if p.offset >= 0 else starts[TopicPartition(p.topic, p.partition)])
                >= ends[TopicPartition(p.topic, p.partition)]
                for p in positions
            ]
            if all(done):
                break
            records += [kafka.record_of(m) for m in client.consume(1000, 0.5) if m.error() is None]
        return records
    finally:
        client.close()
