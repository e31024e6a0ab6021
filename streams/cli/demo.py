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
from confluent_kafka import KafkaException, TopicPartition
from rich.table import Table

from streams import kafka, registry
from streams.catalog import Catalog, load_catalog
from streams.cli import console
from streams.client import SluiceClient
from streams.connect import ConnectClient, ConnectError, load_connector
from streams.dlq import parse_error_headers
from streams.processor import InputRecord
from streams.settings import Settings, get_settings

DATASET = "support_tickets"


@click.command()
@click.option(
    "--rows", type=int, default=None, help="Send only the first N rows of the sample dataset."
)
@click.option(
    "--via",
    type=click.Choice(["auto", "connect", "sdk"]),
    default="auto",
    show_default=True,
    help="Ingest with Kafka Connect's FileStream source, or produce with the SDK; "
    "auto takes Connect when a worker answers.",
)
def demo(rows: int | None, via: str) -> None:
    """Push the sample dataset through the pipeline and print what happened.

    Needs a running stack (`sluice up`); applies the schemas itself.
    """
    settings = get_settings()
    catalog = load_catalog(settings.schemas_dir)
    specs = list(catalog.topics.values())
    kafka.ensure_topics(kafka.admin(settings), specs)
    registry.apply(settings.registry, catalog, specs)
    console.print("[bold]1. contracts applied[/bold]: topics created, schemas registered")

    dataset = catalog.dataset(DATASET)
    sample = settings.schemas_dir / "datasets" / DATASET / "sample.jsonl"
    lines = [line for line in sample.read_text().splitlines() if line.strip()][:rows]
    before = _ends(settings, [dataset.raw_topic, dataset.validated_topic, dataset.dlq_topic])
    connect = _connect_client(settings, via)

    with _processors(settings, ["validate"]):
        started = time.perf_counter()
        if connect is not None:
            _ingest_with_connect(
                settings,
                connect,
                raw_topic=dataset.raw_topic,
                lines=lines,
                rows=rows,
                before=before,
            )
            _wait_processed(
                settings, [dataset.validated_topic, dataset.dlq_topic], before, len(lines)
            )
        else:
            console.print(
                f"[bold]2. producing[/bold] {len(lines):,} raw events to {dataset.raw_topic}"
            )
            with SluiceClient(settings, catalog, source=f"demo:{sample.name}") as client:
                for line in lines:
                    client.send_payload(DATASET, line, key=_key(line))
            _wait_caught_up(settings, catalog, "validate", [dataset.raw_topic])
        elapsed = time.perf_counter() - started

    validated = _read_new(settings, dataset.validated_topic, before)
    dead = _read_new(settings, dataset.dlq_topic, before)
    _report_validate(len(lines), validated, dead, elapsed)


def _connect_client(settings: Settings, via: str) -> ConnectClient | None:
    """The Connect worker to ingest through, or None to produce with the SDK."""
    if via == "sdk":
        return None
    client = ConnectClient.from_settings(settings)
    try:
        client.statuses()
    except ConnectError:
        if via == "connect":
            raise
        console.print(f"   no Kafka Connect worker at {client.url}: producing with the SDK instead")
        return None
    return client


def _ingest_with_connect(
    settings: Settings,
    client: ConnectClient,
    *,
    raw_topic: str,
    lines: list[str],
    rows: int | None,
    before: dict[TopicPartition, int],
) -> None:
    """Apply the shipped FileStream connector under a fresh name, await every line, delete it.

    A source connector's offsets are kept per connector name, so a new name per run
    reads the file from its start: the demo counts only its own run.
    """
    connector_file = settings.project_root / "connectors" / "support-tickets-file.json"
    variables: dict[str, str] = {}
    if rows is not None:  # the worker reads files itself: give it just these rows
        subset = settings.stack.root / "demo" / f"{DATASET}-{rows}.jsonl"
        subset.parent.mkdir(parents=True, exist_ok=True)
        subset.write_text("".join(f"{line}\n" for line in lines))
        variables["SLUICE_TICKETS_FILE"] = str(subset)
    name = f"support-tickets-file-demo-{int(time.time())}"
    connector = load_connector(
        connector_file,
        settings,
        variables=variables,
        overrides={"topic": raw_topic},
        name=name,
    )
    console.print(
        f"[bold]2. ingesting[/bold] {len(lines):,} lines of {Path(connector.config['file']).name} "
        f"through Kafka Connect (connector [cyan]{name}[/cyan], FileStream source) "
        f"to {raw_topic}"
    )
    client.apply(connector)
    try:
        deadline = time.monotonic() + 600
        with console.status("waiting for Connect to ingest the file") as status:
            while (done := len(_read_new(settings, raw_topic, before))) < len(lines):
                try:
                    state = client.status(name)
                except ConnectError:
                    state = None  # just created: the worker has not written a status yet
                if state is not None and state.failed:
                    raise click.ClickException(
                        f"connector {name} failed; `sluice connect status {name}` shows why"
                    )
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"Connect ingested {done:,} of {len(lines):,} lines in 600s; "
                        f"see {settings.stack.root / 'logs' / 'connect.log'}"
                    )
                status.update(f"Connect ingested {done:,} of {len(lines):,} lines")
                time.sleep(1)
    finally:
        client.delete(name)


def _wait_processed(
    settings: Settings,
    outputs: list[str],
    before: dict[TopicPartition, int],
    expected: int,
    timeout: float = 600,
) -> None:
    """Wait until validate wrote one output (validated or dead letter) per raw record.

    Connect writes the raw topic in transactions, and the commit marker after the
    last record keeps a consumer group's lag at one per partition for good (nothing
    follows it to consume), so lag cannot say "done" here; the outputs can.
    """
    deadline = time.monotonic() + timeout
    with console.status("waiting for validate") as status:
        while (done := sum(len(_read_new(settings, t, before)) for t in outputs)) < expected:
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"validate handled {done:,} of {expected:,} records in {timeout:.0f}s; "
                    f"see {settings.stack.root / 'logs' / 'demo-validate.log'}"
                )
            status.update(f"waiting for validate: {expected - done:,} records to go")
            time.sleep(1)


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
    settings: Settings, catalog: Catalog, processor: str, topics: list[str], timeout: float = 600
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
            # A partition nothing was read from has no position yet: it is where it started.
            if all(
                (p.offset if p.offset >= 0 else starts[TopicPartition(p.topic, p.partition)])
                >= ends[TopicPartition(p.topic, p.partition)]
                for p in positions
            ):
                break
            records += [kafka.record_of(m) for m in client.consume(1000, 0.5) if m.error() is None]
        return records
    finally:
        client.close()


COMMANDS = [demo]
