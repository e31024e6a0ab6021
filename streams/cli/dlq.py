"""``sluice dlq show|replay``: what was refused and why; send it back after a fix."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import click
from rich.text import Text

from streams.cli import console
from streams.cli.output import plain, safe
from streams.contracts.catalog import catalog_for
from streams.runtime.audit import Auditor, audited
from streams.runtime.dlq_replay import (
    DeadLetter,
    ReplaySummary,
    ReplayTarget,
    dlq_topic_name,
    read_recent,
    replay,
    replay_target,
)
from streams.runtime.sealing import Keyring
from streams.settings import DeadLetterSettings, Settings, get_settings
from streams.stack.secrets import local_dead_letter_key


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
    record came from and its size are, and, for an encrypted payload, the id of the
    key it is encrypted with.
    """
    settings = get_settings()
    name = _physical(settings, dlq_topic_name(topic))
    letters = read_recent(settings, name, limit)
    if not letters:
        console.print(f"{safe(name)} is empty")
        return
    console.print(f"[bold]{safe(name)}[/bold]: last {len(letters)} records (payloads not shown)")
    for line in letter_lines(letters):
        console.print(line, soft_wrap=True)


def letter_lines(letters: Sequence[DeadLetter]) -> list[Text]:
    """Two lines per dead letter: where it came from and what refused it; then the reason.

    Every header value is the producer's to choose (anyone who can write to a topic
    writes any header), so each is a ``Text`` (never markup) with its control
    characters shown as escapes, and a newline in a value cannot start a line of its own.
    """
    lines = []
    for d in letters:
        when = datetime.fromtimestamp(d.timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        replays = f", replayed {d.replays}x" if d.replays else ""
        sealed = f", encrypted (key {plain(d.key_id)})" if d.key_id is not None else ""
        info = d.info
        lines.append(
            Text.assemble(
                (f"{plain(info.topic)}[{info.partition}]@{info.offset}", "cyan"),
                f" {when} {plain(info.processor)}/{plain(info.stage)} ",
                (plain(info.error_class), "yellow"),
                f" {d.size} B{sealed}{replays}",
            )
        )
        lines.append(Text(f"    {plain(info.message)}"))
    return lines


@dlq.command(name="replay")
@click.argument("topic")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed; send nothing.")
@click.option(
    "--to",
    "to",
    metavar="TOPIC",
    default=None,
    help="Send every record to this catalog topic instead of the one the dead-letter "
    "topic belongs to (whatever its sluice.error.topic header says).",
)
def replay_command(topic: str, dry_run: bool, to: str | None) -> None:
    """Send TOPIC's dead-letter records back to the topic they were refused on, once each.

    The dead-letter topic X.dlq is replayed into X only: a record whose
    sluice.error.topic header names another topic is skipped and counted, never
    sent (anyone who can write to the dead-letter topic can write that header).
    --to sends every record to another catalog topic instead. Run it after fixing
    the contract or the producer. Each record is replayed at most once (progress
    is committed with the replayed records); one that fails again returns to the
    DLQ with its replay count. Encrypted dead letters (prompt topics) are decrypted
    with SLUICE_DEAD_LETTERS__ENCRYPTION_KEY (or an older key of
    SLUICE_DEAD_LETTERS__PREVIOUS_KEYS); the local stack's key is used when neither is set.
    """
    settings = get_settings()
    name = _physical(settings, dlq_topic_name(topic))
    catalog = catalog_for(settings)
    target = replay_target(catalog, name, to)
    keyring = replay_keyring(settings)
    logical = catalog.logical(name)
    if logical in catalog.topics and catalog.topic(logical).encrypted:
        keyring.require(f"{name} keeps its payloads encrypted")
    if dry_run:  # sends nothing, so there is nothing to audit
        _replay(settings, name, target, keyring, dry_run=True)
        return
    # Built before the replay: one that could not be audited is refused before it sends.
    auditor = Auditor(settings, catalog)
    with audited(auditor, "dlq.replay", name) as details:
        if to is not None:
            details["to"] = to
        summary = _replay(settings, name, target, keyring, dry_run=False)
        details.update(replay_details(summary))


def _replay(
    settings: Settings, name: str, target: ReplayTarget, keyring: Keyring, *, dry_run: bool
) -> ReplaySummary:
    with console.status(f"replaying {safe(name)}") as status:
        summary = replay(
            settings,
            name,
            target,
            dry_run=dry_run,
            progress=lambda n: status.update(f"replayed {n:,} records from {safe(name)}"),
            keyring=keyring,
        )
    for line in summary_lines(summary, dry_run=dry_run):
        console.print(line, soft_wrap=True)
    return summary


def replay_details(summary: ReplaySummary) -> dict[str, object]:
    """What the audit trail keeps of a replay: counts per topic, never a record."""
    details: dict[str, object] = {"replayed": summary.replayed, "skipped": summary.skipped}
    details["foreign"] = sum(summary.foreign.values())
    details["targets"] = ", ".join(f"{t}={n}" for t, n in sorted(summary.by_target.items()))
    return details


def summary_lines(summary: ReplaySummary, *, dry_run: bool) -> list[Text]:
    """What a replay sent, skipped and refused, as lines safe to print."""
    verb = "would replay" if dry_run else "replayed"
    targets = (
        ", ".join(f"{n:,} to {plain(t)}" for t, n in summary.by_target.items()) or "nothing new"
    )
    lines = [Text(f"{verb} {summary.replayed:,} records: {targets}")]
    if summary.skipped:
        lines.append(
            Text(f"skipped {summary.skipped:,} records without a sluice.error.topic header")
        )
    if summary.foreign:
        named = ", ".join(f"{n:,} naming {plain(t)}" for t, n in summary.foreign.items())
        total = sum(summary.foreign.values())
        outcome = (
            "would not send them (--to TOPIC sends every record to a catalog topic you choose)"
            if dry_run
            else "not sent, and a later replay does not see them again"
        )
        lines.append(
            Text(
                f"{'would skip' if dry_run else 'skipped'} {total:,} records whose "
                f"sluice.error.topic header names another topic ({named}): {outcome}",
                style="yellow",
            )
        )
    return lines


def replay_keyring(settings: Settings) -> Keyring:
    """The dead-letter keys of the settings; the local stack's key when none is set."""
    configured = settings.dead_letters
    if configured.encryption_key is None and not configured.previous_keys:
        local = local_dead_letter_key(settings)
        if local:
            configured = DeadLetterSettings.model_validate(
                {"encryption_key": next(iter(local.values()))}
            )
    return Keyring.from_settings(configured)


def _physical(settings: Settings, topic: str) -> str:
    """A catalog topic's cluster name; any other name is taken as a cluster name."""
    catalog = catalog_for(settings)
    return catalog.physical(topic) if topic in catalog.topics else topic


COMMANDS = [dlq]
