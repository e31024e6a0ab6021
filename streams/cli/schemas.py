"""``sluice schemas apply|check``: the topic catalog onto the cluster and the registry."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable

import click
from rich.table import Table
from rich.text import Text

from streams.cli import console, err_console
from streams.cli.acl import apply_declared
from streams.cli.output import cell, safe
from streams.contracts import registry
from streams.contracts.catalog import Catalog, catalog_for
from streams.runtime import kafka
from streams.runtime.audit import Auditor, audited
from streams.settings import Settings, get_settings, without_password


@click.group()
def schemas() -> None:
    """Topics and Avro schemas from schemas/ (the source of truth)."""


@schemas.command()
@click.option(
    "--acls/--no-acls",
    default=True,
    help="Also apply schemas/acls.yaml once the topics exist (as `sluice acl apply`).",
)
def apply(*, acls: bool) -> None:
    """Create the catalog's topics, register its schemas and apply its ACLs, idempotently.

    An incompatible schema change is refused with the registry's reason and
    nothing is registered. ACLs come last, so a new topic and the bindings that let
    its processors reach it appear in one command.
    """
    settings = get_settings()
    catalog = catalog_for(settings)
    target = settings.kafka.bootstrap_servers
    # The audit topic and its schema are among what this command creates: the auditor is
    # built once they exist, and records the outcome either way.
    with audited(lambda: Auditor(settings, catalog), "schemas.apply", target) as details:
        details["registry"] = without_password(settings.registry.url)
        details["topic_prefix"] = settings.topic_prefix
        _apply(settings, catalog, details)
        details["acls"] = "skipped"
        if acls:
            # Its own acl.apply event: every ACL change is on the trail under one action.
            applied = apply_declared(settings, catalog, lambda: Auditor(settings, catalog))
            details["acls"] = "applied" if applied is not None else "no authorizer"


def _apply(settings: Settings, catalog: Catalog, details: dict[str, object]) -> None:
    specs = list(catalog.topics.values())
    topic_changes = kafka.ensure_topics(kafka.admin(settings), specs)
    details.update(_counts("topics", (c.action for c in topic_changes)))
    table = Table(title=cell(f"topics on {settings.kafka.bootstrap_servers}"))
    for column in ("topic", "partitions", "value", "action"):
        table.add_column(column)
    failed = False
    for change in topic_changes:
        spec = catalog.topics[catalog.logical(change.topic)]
        action = change.action + (f" ({change.detail})" if change.detail else "")
        failed |= change.action == "error"
        table.add_row(
            cell(change.topic),
            str(spec.partitions),
            cell(spec.value),
            cell(action, "red" if change.action == "error" else ""),  # the broker's words
        )
    console.print(table)
    if failed:
        err_console.print("[red]error:[/red] some topics could not be created (see above)")
        sys.exit(1)
    subject_changes = registry.apply(settings.registry, catalog, specs)
    details.update(_counts("subjects", (sc.action for sc in subject_changes)))
    table = Table(title=cell(f"subjects on {without_password(settings.registry.url)}"))
    for column in ("subject", "schema", "version", "id", "action"):
        table.add_column(column)
    for sc in subject_changes:
        table.add_row(
            cell(sc.subject), cell(sc.schema), str(sc.version), str(sc.schema_id), cell(sc.action)
        )
    console.print(table)


def _counts(kind: str, actions: Iterable[str]) -> dict[str, int]:
    """How many topics or subjects each action touched, e.g. ``topics.created: 3``."""
    return dict(sorted(Counter(f"{kind}.{a.replace('-', '_')}" for a in actions).items()))


@schemas.command()
def check() -> None:
    """Say what `apply` would change, and fail on an incompatible schema (for CI)."""
    settings = get_settings()
    catalog = catalog_for(settings)
    planned = registry.plan(settings.registry, catalog, catalog.topics.values())
    refused = False
    for change in planned:
        if change.action == "refused":
            refused = True
            console.print(
                f"[red]{safe(change.subject)}: refused[/red]: {safe(change.detail, multiline=True)}"
            )
        else:
            console.print(Text(f"{change.subject}: {change.action}"))
    if refused:
        sys.exit(1)


COMMANDS = [schemas]
