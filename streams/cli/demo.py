"""``sluice demo``: real events through every processor, then what happened, in numbers.

The demo runs against whatever stack the settings point at (``sluice up``
first). Each processor runs as its own ``sluice run`` process, exactly as in
production; the demo only produces input, waits until every consumer group has
caught up, and reports. It counts only what this run produced, so it can be run
again and again on the same stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from confluent_kafka import TopicPartition
from rich.table import Table

from streams import kafka, registry
from streams.catalog import catalog_for
from streams.cli import console
from streams.client import SluiceClient
from streams.dlq import parse_error_headers
from streams.processor import InputRecord
from streams.settings import Settings, get_settings

DATASET = "support_tickets"


@click.command()
@click.option(
    "--rows", type=int, default=None, help="Send only the first N rows of the sample dataset."
)
def demo(rows: int | None) -> None:
    """Push the sample dataset through the pipeline and print what happened.

    Needs a running stack (`sluice up`); applies the schemas itself.
    """
    settings = get_settings()
    catalog = catalog_for(settings)
    specs = list(catalog.topics.values())
    kafka.ensure_topics(kafka.admin(settings), specs)
    registry.apply(settings.registry, catalog, specs)
    console.print("[bold]1. contracts applied[/bold]: topics created, schemas registered")

    dataset = catalog.dataset(DATASET)
    sample = settings.schemas_dir / "datasets" / DATASET / "sample.jsonl"
    lines = [line for line in sample.read_text().splitlines() if line.strip()][:rows]
    validated_topic = catalog.physical(dataset.validated_topic)
    dlq_topic = catalog.physical(dataset.dlq_topic)
    before = _ends(settings, [validated_topic, dlq_topic])

    with _processors(settings, ["validate"]):
        raw_topic = catalog.physical(dataset.raw_topic)
        console.print(f"[bold]2. producing[/bold] {len(lines):,} raw events to {raw_topic}")
        started = time.perf_counter()
        with SluiceClient(settings, catalog, source=f"demo:{sample.name}") as client:
            for line in lines:
                client.send_payload(DATASET, line, key=_key(line))
        _wait_caught_up(settings, "validate", [raw_topic])
        elapsed = time.perf_counter() - started

    validated = _read_new(settings, validated_topic, before)
    dead = _read_new(settings, dlq_topic, before)
    _report_validate(len(lines), validated, dead, elapsed)

    try:
        from streams.cli import demo_drift  # noqa: PLC0415 (needs the drift extra)
    except ImportError as exc:
        console.print(f"skipping the drift step ({exc}): pip install -e '.[drift]'")
        return
    demo_drift.run(
        settings,
        catalog,
        lines,
        validated,
        processors=_processors,
        wait_caught_up=_wait_caught_up,
        ends=_ends,
        read_new=_read_new,
    )


def _report_validate(
    produced: int, validated: list[InputRecord], dead: list[InputRecord], elapsed: float
) -> None:
    table = Table(title="validate: support_tickets")
    table.add_column("raw events")
    table.add_column("validated")
    table.add_column("dead-lettered")
    table.add_column("throughput")
    table.add_row(
        f"{produced:,}",
        f"{len(validated):,}",
        f"{len(dead):,}",
        f"{produced / elapsed:,.0f} events/s end to end",
    )
    console.print(table)
    reasons: Counter[str] = Counter()
    for record in dead:
        info = parse_error_headers(record.headers)
        rule = info.details.get("rule")
        field = info.details.get("field")
        reasons[f"{info.error_class}" + (f" ({field}: {rule})" if rule else "")] += 1
    table = Table(title="top dead-letter reasons (sluice dlq show raw.support_tickets)")
    table.add_column("reason")
    table.add_column("records", justify="right")
    for reason, count in reasons.most_common(8):
        table.add_row(reason, str(count))
    console.print(table)
    for record in dead[:3]:
        console.print(f"  e.g. [yellow]{parse_error_headers(record.headers).message}[/yellow]")


def _key(line: str) -> str | None:
    import json  # noqa: PLC0415 (only the demo parses lines)

    try:
        value = json.loads(line).get("ticket_id")
    except (ValueError, AttributeError):
        return None
    return None if value is None else str(value)


@contextmanager
def _processors(settings: Settings, names: list[str]) -> Iterator[None]:
    """Run each processor as its own `sluice run` process for the duration of the block."""
    logs = settings.stack.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for name in names:
            log = logs / f"demo-{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "streams", "run", name, "--metrics-port", "0"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=os.environ.copy(),
                )
            processes.append((name, process, log))
            console.print(
                f"   started processor [cyan]{name}[/cyan] (pid {process.pid}, log {log})"
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


def _wait_caught_up(
    settings: Settings, processor: str, topics: list[str], timeout: float = 600
) -> None:
    group = f"{settings.runner.group_prefix}.{processor}"
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for {processor} to catch up") as status:
        while time.monotonic() < deadline:
            lag = kafka.group_lag(settings, group, topics)
            if lag == 0:
                return
            status.update(f"waiting for {processor}: {lag:,} records to go")
            time.sleep(1)
    raise click.ClickException(
        f"{processor} did not catch up within {timeout:.0f}s; see .sluice/logs/demo-{processor}.log"
    )


def _ends(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    client = kafka.consumer(settings, f"{settings.runner.group_prefix}.demo-reader")
    try:
        return kafka.end_offsets(client, topics)
    finally:
        client.close()


def _read_new(
    settings: Settings, topic: str, since: dict[TopicPartition, int]
) -> list[InputRecord]:
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
            if all(
                (p.offset or 0) >= ends[TopicPartition(p.topic, p.partition)] for p in positions
            ):
                break
            records += [kafka.record_of(m) for m in client.consume(1000, 0.5) if m.error() is None]
        return records
    finally:
        client.close()


COMMANDS = [demo]
