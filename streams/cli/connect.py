"""``sluice connect apply|status|delete|restart``: connectors on a Kafka Connect worker."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from streams.cli import console
from streams.cli.output import cell, plain, safe
from streams.contracts.catalog import catalog_for
from streams.runtime.audit import Auditor, audited
from streams.runtime.waiting import wait_until
from streams.sdk.connect_client import ConnectClient, ConnectError, ConnectorStatus, load_connector
from streams.settings import get_settings

_STATE_STYLE = {"RUNNING": "green", "FAILED": "red", "PAUSED": "yellow", "UNASSIGNED": "yellow"}


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        result[key] = value
    return result


@click.group()
def connect() -> None:
    """Kafka Connect connectors (files, databases) that feed raw.<dataset> topics."""


@connect.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Connector name (default: the file's); offsets are kept per name.")
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="SLUICE_NAME=VALUE",
    help="Value of a ${SLUICE_NAME} placeholder in the file (repeatable).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one connector setting after placeholders are filled (repeatable).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    help="Wait until the connector and its tasks run (or fail, then show why).",
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def apply(
    *,
    file: Path,
    name: str | None,
    variables: tuple[str, ...],
    overrides: tuple[str, ...],
    wait: bool,
    timeout: float,
) -> None:
    """Create or update the connector in FILE (idempotent: PUT /connectors/<name>/config)."""
    settings = get_settings()
    var_pairs, set_pairs = _pairs(variables, "--var"), _pairs(overrides, "--set")
    connector = load_connector(file, settings, variables=var_pairs, overrides=set_pairs, name=name)
    # Built first: a connector change that could not be audited is refused before it is made.
    auditor = Auditor(settings, catalog_for(settings))
    with audited(auditor, "connect.apply", connector.name) as details:
        # The names of what was set, never the values: a --var is often a password.
        details.update(file=file.name, vars=",".join(sorted(var_pairs)))
        details["set"] = ",".join(sorted(set_pairs))
        client = ConnectClient.from_settings(settings)
        details["worker"] = client.shown_url
        created = client.apply(connector)
        verb = "created" if created else "updated"
        details["change"] = verb
        console.print(
            f"connector [cyan]{safe(connector.name)}[/cyan] {verb} on {safe(client.shown_url)}"
        )
        if not wait:
            return
        status = _await_running(client, connector.name, timeout)
        details["state"] = status.state
        _print_statuses([status], traces=True)
        if status.failed:
            raise click.ClickException(
                f"connector {connector.name!r} failed (trace above); fix the cause, then "
                f"`sluice connect apply` again or `sluice connect restart {connector.name}`"
            )


def _await_running(client: ConnectClient, name: str, timeout: float) -> ConnectorStatus:
    latest: list[ConnectorStatus | None] = [None]

    def settled() -> bool:
        try:
            status = client.status(name)
        except ConnectError:
            status = None  # the worker has not written the first status yet
        latest[0] = status
        return status is not None and (status.healthy or status.failed)

    with console.status(f"waiting for {name} to run"):
        wait_until(settled, timeout, interval=0.5)
    if (status := latest[0]) is None:
        raise ConnectError(f"connector {name!r} has no status after {timeout:.0f}s")
    return status


@connect.command()
@click.argument("name", required=False)
@click.option("--trace/--no-trace", default=True, help="Show the stack trace of failed tasks.")
def status(name: str | None, trace: bool) -> None:
    """Connectors, their tasks and states; the trace of any that failed."""
    client = ConnectClient.from_settings(get_settings())
    statuses = [client.status(name)] if name else client.statuses()
    if not statuses:
        console.print(
            f"no connectors on {safe(client.shown_url)} (add one with `sluice connect apply`)"
        )
        return
    _print_statuses(statuses, traces=trace)
    if any(s.failed for s in statuses):
        raise SystemExit(1)


@connect.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete a connector (its source offsets stay: a new one of that name resumes)."""
    settings = get_settings()
    auditor = Auditor(settings, catalog_for(settings))
    with audited(auditor, "connect.delete", name) as details:
        client = ConnectClient.from_settings(settings)
        details["worker"] = client.shown_url
        client.delete(name)
        console.print(f"connector [cyan]{safe(name)}[/cyan] deleted from {safe(client.shown_url)}")


@connect.command()
@click.argument("name")
def restart(name: str) -> None:
    """Restart a connector and its failed tasks."""
    client = ConnectClient.from_settings(get_settings())
    client.restart(name)
    console.print(f"connector [cyan]{safe(name)}[/cyan] restarting (failed tasks included)")


def connector_table(statuses: list[ConnectorStatus]) -> Table:
    """Connectors with their state and tasks, as `sluice status` shows them too.

    Every value is the worker's: cells are ``Text``, never markup.
    """
    table = Table(title="connectors")
    for column in ("connector", "type", "state", "tasks", "worker"):
        table.add_column(column)
    for item in statuses:
        tasks = Text(", ").join(
            Text.assemble(f"{plain(t.id)}: ", _styled(t.state)) for t in item.tasks
        )
        table.add_row(
            cell(item.name),
            cell(item.type),
            _styled(item.state),
            tasks if item.tasks else "none yet",
            cell(item.worker),
        )
    return table


def _styled(state: str) -> Text:
    return cell(state, _STATE_STYLE.get(state, ""))


def _print_statuses(statuses: list[ConnectorStatus], *, traces: bool) -> None:
    console.print(connector_table(statuses))
    if not traces:
        return
    for item in statuses:
        if item.state == "FAILED" and item.trace:
            console.print(
                f"[red]{safe(item.name)} failed:[/red]\n{safe(_short(item.trace), multiline=True)}"
            )
        for task in item.tasks:
            if task.state == "FAILED":
                console.print(
                    f"[red]{safe(item.name)} task {safe(task.id)} failed:[/red]\n"
                    f"{safe(_short(task.trace), multiline=True)}"
                )


def _short(trace: str, lines: int = 25) -> str:
    """The top of a Java trace: its first lines and every 'Caused by'."""
    all_lines = trace.strip().splitlines()
    head = all_lines[:lines]
    causes = [line for line in all_lines[lines:] if line.startswith("Caused by")]
    return "\n".join(head + causes)


COMMANDS = [connect]
