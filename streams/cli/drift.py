"""``sluice drift``: what the drift processor raised, and starting its detectors afresh."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from streams.cli import console
from streams.cli.output import cell
from streams.contracts.catalog import catalog_for
from streams.errors import TransientError
from streams.profiling.topics import read_history
from streams.runtime import kafka
from streams.runtime.audit import Auditor, audited
from streams.settings import get_settings

ALERTS_TOPIC = "drift.alerts"
STATE_TOPIC = "drift.state"


@click.group()
def drift() -> None:
    """Drift alerts and detector state."""


@drift.command()
@click.option(
    "--limit", type=int, default=20, show_default=True, help="Most recent alerts to show."
)
@click.option(
    "--signal", "prefix", default="", help="Only signals starting with this (e.g. model:)."
)
def alerts(limit: int, prefix: str) -> None:
    """The most recent drift alerts: what drifted, which detector, how much, where."""
    settings = get_settings()
    catalog = catalog_for(settings)
    found, _ = read_history(settings, catalog, ALERTS_TOPIC)
    found = [a for a in found if a["signal"].startswith(prefix)]
    found.sort(key=lambda a: a["detected_at"])
    console.print(alert_table(found[-limit:], f"drift alerts ({len(found)} in all)"))


def alert_table(found: list[dict[str, Any]], title: str) -> Table:
    """A table of alerts, one row each, narrow enough for a terminal.

    Signal names and categories come from the data: every cell is a ``Text``.
    """
    table = Table(title=cell(title))
    for column in ("at", "signal", "detector", "change", "window", "severity"):
        table.add_column(column)
    for alert in found:
        when = alert["detected_at"]
        when = when if isinstance(when, datetime) else datetime.fromtimestamp(when / 1000, UTC)
        end = alert["window_end"]
        table.add_row(
            when.strftime("%H:%M:%S"),
            cell(f"{alert['signal_name']}\n({alert['subject']})"),
            cell(
                f"{alert['detector']} ({alert['stream']})\n"
                f"{alert['statistic']:.3g} > {alert['threshold']:.3g}"
            ),
            cell(change(alert["reference"], alert["current"])),
            f"{alert['window_size']:,} values\nto p{end['partition']}@{end['offset']}",
            cell(alert["severity"]),
        )
    return table


def change(reference: dict[str, Any], current: dict[str, Any]) -> str:
    """Reference -> current, in the terms of the signal: a mean, or the category that moved most."""
    ref_top, cur_top = reference.get("top") or {}, current.get("top") or {}
    if ref_top or cur_top:
        new = [n for n in cur_top if n not in ref_top]
        names = new or sorted(set(ref_top) | set(cur_top))
        moved = max(names, key=lambda n: abs(cur_top.get(n, 0.0) - ref_top.get(n, 0.0)))
        return f"{moved}: {ref_top.get(moved, 0.0):.0%} -> {cur_top.get(moved, 0.0):.0%}"
    if reference.get("mean") is None or current.get("mean") is None:
        return "-"
    text = f"mean {reference['mean']:.4g} -> {current['mean']:.4g}"
    if reference.get("std") is not None and current.get("std") is not None:
        text += f"\nsd {reference['std']:.3g} -> {current['std']:.3g}"
    return text


@drift.command()
@click.option("--signal", "prefix", default="", help="Only signals starting with this.")
@click.confirmation_option(prompt="Stop `sluice run drift` first. Forget the detectors' history?")
def reset(prefix: str) -> None:
    """Delete drift's checkpoints (tombstones on drift.state): signals start afresh.

    Needed after a change of detector layout that a new version cannot read, or
    to re-learn warm-up references. Profiles on drift.profiles are kept.
    """
    from processors.drift.store import read_latest  # noqa: PLC0415

    settings = get_settings()
    catalog = catalog_for(settings)
    topic = catalog.physical(STATE_TOPIC)
    # Built first: a reset that could not be audited is refused before it deletes anything.
    auditor = Auditor(settings, catalog)
    with audited(auditor, "drift.reset", prefix or "*") as details:
        keys = [k for k in read_latest(settings, topic, lambda v: {}, 60) if k.startswith(prefix)]
        producer = kafka.producer(settings)
        for key in keys:
            producer.produce(topic, None, key=key)
        remaining = producer.flush(30)
        details.update(signals=len(keys), unacknowledged=remaining)
        if remaining:
            raise TransientError(
                f"{remaining} of {len(keys)} tombstones on {topic} were not acknowledged within "
                "30s; run `sluice drift reset` again"
            )
        console.print(f"reset {len(keys)} signal(s)")


COMMANDS = [drift]
