"""``sluice up``, ``sluice down``, ``sluice status``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import httpx
from rich.table import Table

from streams.cli import console
from streams.cli.output import cell, safe
from streams.settings import Settings, get_settings
from streams.stack import Stack, component_names

_STATE_STYLE = {"healthy": "green", "starting": "yellow", "dead": "red", "stopped": "dim"}


@click.command()
@click.option(
    "--only",
    multiple=True,
    help="Start only these components (kafka, registry, connect, triton); default: "
    "SLUICE_STACK__COMPONENTS, which lists all four.",
)
def up(only: tuple[str, ...]) -> None:
    """Start the local stack (fetching it from Maven Central and PyPI the first time)."""
    settings = get_settings()
    stack = Stack(settings, list(only) or None)
    with console.status("starting the local stack") as status:
        transient = tuple(
            f"{c.title}: {word}"
            for c in stack.components
            for word in ("downloaded", "Collecting", "Downloading")
        )

        def report(message: str) -> None:
            if message.startswith(transient):  # per-file progress: one updating line
                status.update(safe(message))
            else:
                console.print(safe(message, multiline=True))

        stack.up(report)
    console.print(f"[green]stack is up[/green] (state in {settings.stack.root})")


@click.command()
@click.option("--purge", is_flag=True, help="Also delete data and logs (downloads are kept).")
def down(purge: bool) -> None:
    """Stop exactly what `sluice up` started; data is kept unless --purge."""
    # Every component, not only the configured ones: stop what an earlier `up --only` started.
    Stack(get_settings(), component_names()).down(
        lambda message: console.print(safe(message, multiline=True)), purge=purge
    )


@click.command()
def status() -> None:
    """Show each component, its address and health, and the running processors."""
    settings = get_settings()
    table = Table(title=f"Sluice local stack ({settings.stack.root})")
    for column in ("component", "state", "address", "pid", "detail"):
        table.add_column(column)
    dead = []
    configured = set(settings.stack.components)
    statuses = Stack(settings, component_names()).status()
    for item in statuses:
        if item.name not in configured and item.state == "stopped":
            continue  # left out by SLUICE_STACK__COMPONENTS and not running: not news
        style = _STATE_STYLE.get(item.state, "")
        detail = item.detail if item.state != "dead" else "see below"
        table.add_row(
            item.title,
            cell(item.state, style),
            cell(item.address),
            str(item.pid or ""),
            cell(detail),  # may quote a log line
        )
        if item.state == "dead":
            dead.append(item)
    console.print(table)
    for item in dead:
        console.print(
            f"[red]{item.title} died.[/red] Last lines of its log:\n"
            f"{safe(item.detail, multiline=True)}"
        )
        console.print("Run `sluice up` to start it again.")
    if any(item.name == "connect" and item.state == "healthy" for item in statuses):
        _connectors(settings)
    _processors(settings.stack.root / "run" / "processors")


def _connectors(settings: Settings) -> None:
    """The Connect worker's connectors, their state and tasks (details: `sluice connect status`)."""
    from streams.cli.connect import connector_table  # noqa: PLC0415
    from streams.sdk.connect_client import ConnectClient, ConnectError  # noqa: PLC0415

    try:
        connectors = ConnectClient(f"http://127.0.0.1:{settings.stack.connect_port}", 5).statuses()
    except ConnectError as exc:
        console.print(f"[yellow]connectors: {safe(exc)}[/yellow]")
        return
    if not connectors:
        console.print("no connectors (add one with `sluice connect apply connectors/<name>.json`)")
        return
    console.print(connector_table(connectors))
    if any(c.failed for c in connectors):
        console.print("[red]a connector failed[/red]: `sluice connect status` shows why")


def _processors(directory: Path) -> None:
    entries = []
    for path in sorted(directory.glob("*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not Path(f"/proc/{info['pid']}").exists():
            path.unlink(missing_ok=True)
            continue
        entries.append(info)
    if not entries:
        console.print("no processors running (start one with `sluice run <processor>`)")
        return
    table = Table(title="processors")
    for column in ("processor", "instance", "pid", "inputs", "records in", "lag", "metrics"):
        table.add_column(column)
    for info in entries:
        port = info.get("metrics_port")
        records, lag = _scrape(port) if port else (None, None)
        uptime = max(1.0, time.time() - info["started_at"])
        rate = f"{records:,.0f} ({records / uptime:,.0f}/s avg)" if records is not None else "?"
        table.add_row(
            cell(info["processor"]),
            cell(info["instance"]),
            str(info["pid"]),
            cell(", ".join(info["inputs"])),
            rate,
            f"{lag:,.0f}" if lag is not None else "?",
            f"http://127.0.0.1:{port}/metrics" if port else "off",
        )
    console.print(table)


def _scrape(port: int) -> tuple[float | None, float | None]:
    """Records consumed and total consumer lag, from a processor's metrics endpoint."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None, None
    records = lag = 0.0
    for line in text.splitlines():
        if line.startswith("sluice_records_in_total{"):
            records += float(line.rsplit(" ", 1)[1])
        elif line.startswith("sluice_consumer_lag{"):
            lag += float(line.rsplit(" ", 1)[1])
    return records, lag


COMMANDS = [up, down, status]
