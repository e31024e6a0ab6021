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
from typing import Any

import click
from confluent_kafka import TopicPartition
from rich.table import Table

from streams import kafka, registry
from streams.catalog import Catalog, load_catalog
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
    catalog = load_catalog(settings.schemas_dir)
    specs = list(catalog.topics.values())
    kafka.ensure_topics(kafka.admin(settings), specs)
    registry.apply(settings.registry, catalog, specs)
    console.print("[bold]1. contracts applied[/bold]: topics created, schemas registered")

    dataset = catalog.dataset(DATASET)
    sample = settings.schemas_dir / "datasets" / DATASET / "sample.jsonl"
    lines = [line for line in sample.read_text().splitlines() if line.strip()][:rows]
    before = _ends(settings, [dataset.validated_topic, dataset.dlq_topic])

    analytics = _has_clickhouse()
    names = ["validate", "sink"] if analytics else ["validate"]
    since_ms = int(time.time() * 1000)
    with _processors(settings, names):
        console.print(f"[bold]2. producing[/bold] {len(lines):,} raw events to {dataset.raw_topic}")
        started = time.perf_counter()
        with SluiceClient(settings, catalog, source=f"demo:{sample.name}") as client:
            for line in lines:
                client.send_payload(DATASET, line, key=_key(line))
        _wait_caught_up(settings, catalog, "validate", [dataset.raw_topic])
        elapsed = time.perf_counter() - started

        validated = _read_new(settings, dataset.validated_topic, before)
        dead = _read_new(settings, dataset.dlq_topic, before)
        _report_validate(len(lines), validated, dead, elapsed)
        if analytics:
            _report_analytics(settings, dataset.dlq_topic, since_ms, len(dead))
        else:
            console.print("analytics skipped: install the ClickHouse client, pip install '.[sink]'")


def _has_clickhouse() -> bool:
    try:
        import clickhouse_connect  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _report_analytics(settings: Settings, dlq_topic: str, since_ms: int, dead: int) -> None:
    """What ClickHouse knows, queried through the running sink: DLQ reasons, cost, latency."""
    from streams.cli.sql import warehouse  # noqa: PLC0415 (needs the sink extra)

    console.print("[bold]3. analytics[/bold] from ClickHouse (`sluice sql`), sunk by the sink")
    # The topic name comes from the catalog and the time is an int: safe to format.
    this_run = f"dlq_topic = '{dlq_topic}' AND ts >= fromUnixTimestamp64Milli({since_ms})"
    db = _wait_sunk(settings, warehouse, this_run, dead)
    try:
        sql = (
            "SELECT error_class, if(details['field'] != '', "  # noqa: S608
            "concat(details['field'], ': ', details['rule']), '') AS rule, count() AS records "
            f"FROM dead_letters FINAL WHERE {this_run} "
            "GROUP BY error_class, rule ORDER BY records DESC LIMIT 8"
        )
        reasons = db.query(sql)
        _print_table("dead letters of this run by reason (ClickHouse: dead_letters)", reasons)
        results = int(db.query("SELECT count() FROM results").scalar() or 0)
        if results == 0:
            console.print(
                "   no inference results in ClickHouse yet: cost per tenant and model and "
                "latency per model appear here once guard and infer produce results "
                "(and `sluice run meter` meters them)"
            )
            return
        cost = db.query(
            "SELECT tenant_id, model, count() AS requests, sum(total_tokens) AS tokens, "
            "sum(cost) AS cost_usd FROM usage FINAL GROUP BY tenant_id, model "
            "ORDER BY cost_usd DESC LIMIT 10"
        )
        _print_table("cost per tenant and model (ClickHouse: usage)", cost)
        latency = db.query(
            "SELECT model, count() AS requests, round(quantileExact(0.5)(e2e_ms), 1) AS p50_ms, "
            "round(quantileExact(0.99)(e2e_ms), 1) AS p99_ms FROM results FINAL "
            "GROUP BY model ORDER BY model"
        )
        _print_table("end-to-end latency per model (ClickHouse: results)", latency)
    finally:
        db.close()


def _wait_sunk(settings: Settings, connect: Any, where: str, expected: int) -> Any:
    """ClickHouse, once the sink has inserted this run's ``expected`` dead letters."""
    deadline = time.monotonic() + 300
    last: Exception | None = None
    with console.status("waiting for the sink to write this run's dead letters to ClickHouse"):
        while time.monotonic() < deadline:
            db = None
            try:
                db = connect(settings)
                sql = f"SELECT count() FROM dead_letters FINAL WHERE {where}"  # noqa: S608
                if int(db.query(sql).scalar() or 0) >= expected:
                    return db
            except Exception as exc:  # the sink is starting: its tables are not there yet
                last = exc
            if db is not None:
                db.close()  # never hold an embedded database the sink is waiting for
            time.sleep(1)
    raise click.ClickException(
        f"the sink did not write {expected} dead letters to ClickHouse within 300 s "
        f"({last or 'no error'}); see .sluice/logs/demo-sink.log"
    )


def _print_table(title: str, result: Any) -> None:
    table = Table(title=title)
    for column in result.columns:
        table.add_column(column)
    for row in result.rows:
        table.add_row(*(str(value) for value in row))
    console.print(table)


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
