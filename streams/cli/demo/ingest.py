"""The demo's ingestion step through Kafka Connect's FileStream source."""

from __future__ import annotations

import time
from pathlib import Path

import click
from confluent_kafka import TopicPartition

from streams.cli import console
from streams.cli.demo.support import read_new
from streams.runtime.waiting import wait_until
from streams.sdk.connect_client import ConnectClient, ConnectError, load_connector
from streams.settings import Settings


def connect_client(settings: Settings, via: str) -> ConnectClient | None:
    """The Connect worker to ingest through, or None to produce with the SDK."""
    if via == "sdk":
        return None
    client = ConnectClient.from_settings(settings)
    try:
        client.statuses()
    except ConnectError:
        if via == "connect":
            raise
        console.print(
            f"   no Kafka Connect worker at {client.shown_url}: producing with the SDK instead"
        )
        return None
    return client


def ingest_with_connect(
    settings: Settings,
    client: ConnectClient,
    *,
    raw_topic: str,
    lines: list[str],
    subset: bool,
    before: dict[TopicPartition, int],
) -> None:
    """Apply the shipped FileStream connector under a fresh name, await every line, delete it.

    A source connector's offsets are kept per connector name, so a new name per run
    reads the file from its start: the demo counts only its own run.
    """
    connector_file = settings.project_root / "connectors" / "support-tickets-file.json"
    variables: dict[str, str] = {}
    if subset:  # the worker reads files itself: give it just these rows
        path = settings.stack.root / "demo" / f"support_tickets-{len(lines)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in lines))
        variables["SLUICE_TICKETS_FILE"] = str(path)
    name = f"support-tickets-file-demo-{int(time.time())}"
    connector = load_connector(
        connector_file, settings, variables=variables, overrides={"topic": raw_topic}, name=name
    )
    console.print(
        f"[bold]2. ingesting[/bold] {len(lines):,} lines of {Path(connector.config['file']).name} "
        f"through Kafka Connect (connector [cyan]{name}[/cyan], FileStream source) to {raw_topic}"
    )
    client.apply(connector)
    try:
        done = 0
        with console.status("waiting for Connect to ingest the file") as status:

            def ingested() -> bool:
                nonlocal done
                done = len(read_new(settings, raw_topic, before))
                if done >= len(lines):
                    return True
                try:
                    state = client.status(name)
                except ConnectError:
                    state = None  # just created: the worker has not written a status yet
                if state is not None and state.failed:
                    raise click.ClickException(
                        f"connector {name} failed; `sluice connect status {name}` shows why"
                    )
                status.update(f"Connect ingested {done:,} of {len(lines):,} lines")
                return False

            if not wait_until(ingested, 600, interval=1.0):
                raise click.ClickException(
                    f"Connect ingested {done:,} of {len(lines):,} lines in 600s; "
                    f"see {settings.stack.root / 'logs' / 'connect.log'}"
                )
    finally:
        client.delete(name)
