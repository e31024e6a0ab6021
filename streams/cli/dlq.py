"""``sluice dlq show|replay``: what was refused and why; send it back after a fix."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from rich.markup import escape

from streams.cli import console
from streams.contracts.catalog import catalog_for
from streams.runtime.dlq_replay import dlq_topic_name, read_recent, replay
from streams.settings import Settings, get_settings


@click.group()
def dlq() -> None:
    """Dead-letter topics: <input topic>.dlq."""


@dlq.command()
@click.argument("topic")
@click.option("--limit", default=20, show_default=True, help="How many recent records.")
def show(topic: str, limit: int) -> None:
    """List the most recent records of TOPIC's dead-letter topic with their reasons.

    TOPIC may be the dead-letter topic itself or the input topic it belongs to.
    Payloads are not printed (they may hold personal data): the reason, where the
    record came from and its size are.
    """
    settings = get_settings()
    name = _physical(settings, dlq_topic_name(topic))
    letters = read_recent(settings, name, limit)
    if not letters:
        console.print(f"{name} is empty")
        return
    console.print(f"[bold]{name}[/bold]: last {len(letters)} records (payloads not shown)")
    for d in letters:
        when = datetime.fromtimestamp(d.timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        replays = f", replayed {d.replays}x" if d.replays else ""
        console.print(
            f"[cyan]{d.info.topic}[{d.info.partition}]@{d.info.offset}[/cyan] {when} "
            f"{d.info.processor}/{d.info.stage} [yellow]{d.info.error_class}[/yellow] "
            f"{d.size} B{replays}"
        )
        console.print(f"    {escape(d.info.message)}", soft_wrap=True)


@dlq.command(name="replay")
@click.argument("topic")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed; send nothing.")
def replay_command(topic: str, dry_run: bool) -> None:
    """Send TOPIC's dead-letter records back to their original topics, once each.

    Run it after fixing the contract or the producer. Each record is replayed at
    most once (progress is committed with the replayed records); one that fails
    again returns to the DLQ with its replay count.
    """
    settings = get_settings()
    name = _physical(settings, dlq_topic_name(topic))
    with console.status(f"replaying {name}") as status:
        summary = replay(
            settings,
            name,
            dry_run=dry_run,
            progress=lambda n: status.update(f"replayed {n:,} records from {name}"),
        )
    verb = "would replay" if dry_run else "replayed"
    targets = (
        ", ".join(f"{n:,} to {t}" for t, n in (summary.by_target or {}).items()) or "nothing new"
    )
    console.print(f"{verb} {summary.replayed:,} records: {targets}")
    if summary.skipped:
        console.print(f"skipped {summary.skipped} records without a sluice.error.topic header")


def _physical(settings: Settings, topic: str) -> str:
    """A catalog topic's cluster name; any other name is taken as a cluster name."""
    catalog = catalog_for(settings)
    return catalog.physical(topic) if topic in catalog.topics else topic


COMMANDS = [dlq]
