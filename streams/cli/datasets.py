"""``sluice produce``: send a JSON-lines file to a dataset's raw topic."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streams.cli import console
from streams.contracts.catalog import catalog_for
from streams.sdk.client import SluiceClient
from streams.settings import get_settings


@click.command()
@click.argument("dataset")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["envelope", "json"]),
    default="envelope",
    show_default=True,
    help="envelope: RawEvent Avro (what the SDK writes); json: each line's bytes as they are "
    "(what a generic producer or Kafka Connect writes).",
)
@click.option("--limit", type=int, default=None, help="Send only the first N lines.")
def produce(dataset: str, file: Path, fmt: str, limit: int | None) -> None:
    """Produce FILE (JSON lines) to raw.DATASET, with a progress bar and a summary.

    Lines are sent as they are, even when they are not valid JSON: validate
    decides, and the dead-letter topic keeps what it refuses.
    """
    settings = get_settings()
    catalog = catalog_for(settings)
    spec = catalog.dataset(dataset)
    lines = file.read_bytes().splitlines()
    lines = [line for line in lines if line.strip()][:limit]
    started = time.perf_counter()
    sent_bytes = 0
    with (
        SluiceClient(settings, catalog, source=f"cli:{file.name}") as client,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        raw_topic = catalog.physical(spec.raw_topic)
        task = progress.add_task(f"{file.name} → {raw_topic}", total=len(lines), rate="")
        for index, line in enumerate(lines, 1):
            key = _key(line, spec.contract.key_field)
            if fmt == "json":
                client.send_bytes(spec.raw_topic, line, key=key)
            else:
                client.send_payload(
                    dataset,
                    line.decode("utf-8", "replace"),
                    key=key,
                    attributes={"line": str(index)},
                )
            sent_bytes += len(line)
            if index % 500 == 0 or index == len(lines):
                elapsed = time.perf_counter() - started
                progress.update(task, completed=index, rate=f"{index / elapsed:,.0f} rec/s")
        client.flush()
        delivered, failed = client.delivered, client.failed
    elapsed = time.perf_counter() - started
    console.print(
        f"produced {delivered:,} records ({sent_bytes / 1e6:.1f} MB) to {raw_topic} "
        f"in {elapsed:.1f}s ({delivered / max(elapsed, 1e-9):,.0f} rec/s), {failed} failed"
    )


def _key(line: bytes, key_field: str) -> str | None:
    try:
        document = json.loads(line)
    except ValueError:
        return None
    value = document.get(key_field) if isinstance(document, dict) else None
    return None if value is None else str(value)


COMMANDS = [produce]
