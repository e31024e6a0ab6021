"""``sluice acl apply|show``: the bindings of ``schemas/acls.yaml`` onto the cluster."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable

import click
from rich.table import Table

from streams.cli import console, err_console
from streams.cli.output import cell, safe
from streams.contracts.acls import AclDeclaration, AclNames, AclPlan, Grant, load_acls, plan, scope
from streams.contracts.catalog import Catalog, catalog_for
from streams.runtime import kafka
from streams.runtime.acls import AuthorizerDisabledError, apply_plan, existing_grants
from streams.runtime.audit import Auditor, audited
from streams.settings import Settings, get_settings

_NO_AUTHORIZER = (
    "[yellow]warning:[/yellow] {reason}. Nothing was {what}: the stack may still be "
    "plaintext, where every client may do anything."
)


@click.group()
def acl() -> None:
    """Kafka ACLs: who may read and write which topic (schemas/acls.yaml)."""


@acl.command()
@click.option("--dry-run", is_flag=True, help="Print what would change and change nothing.")
def apply(*, dry_run: bool) -> None:
    """Create missing bindings; delete stale ALLOW bindings of the principals declared.

    Principals the declaration does not name, DENY bindings and the bindings of other
    deployments on the cluster (another topic or group prefix) are left as they are.
    """
    settings = get_settings()
    catalog = catalog_for(settings)
    apply_declared(settings, catalog, lambda: Auditor(settings, catalog), dry_run=dry_run)


def apply_declared(
    settings: Settings,
    catalog: Catalog,
    auditor: Callable[[], Auditor],
    *,
    dry_run: bool = False,
    table: bool = True,
) -> AclPlan | None:
    """Bring the cluster's bindings to the declaration; None when the broker keeps no ACLs.

    The auditor is built (so the audit topic is checked) before anything changes;
    exits 1 when a binding could not be created or deleted. ``table=False`` prints only
    the counts, not each binding that changes.
    """
    declaration = load_acls(settings.schemas_dir, catalog)
    names = AclNames.of(settings)
    desired = declaration.grants(catalog, names)
    admin = kafka.admin(settings)
    try:
        existing = existing_grants(admin)
    except AuthorizerDisabledError as exc:
        err_console.print(_NO_AUTHORIZER.format(reason=safe(str(exc)), what="changed"))
        return None
    changes = plan(desired, existing, declaration.manages, scope(desired, catalog, names))
    _print_plan(changes, settings, table=table)
    if dry_run:
        console.print("dry run: nothing changed")
        return changes
    built = auditor()  # before the change: one that cannot be audited is not made
    with audited(built, "acl.apply", settings.kafka.bootstrap_servers) as details:
        details["topic_prefix"] = settings.topic_prefix
        details["group_prefix"] = settings.runner.group_prefix
        details["principals"] = len(declaration.principals)
        result = apply_plan(admin, changes)
        details.update(
            {
                "bindings.created": len(result.created),
                "bindings.deleted": len(result.deleted),
                "bindings.unchanged": len(changes.kept),
                "bindings.failed": len(result.failed),
            }
        )
        for grant, reason in result.failed:
            err_console.print(
                f"[red]error:[/red] {safe(grant.principal)}: {safe(grant.describe())}: "
                f"{safe(reason)}"
            )
        if result.failed:
            sys.exit(1)
    return changes


def _print_plan(changes: AclPlan, settings: Settings, *, table: bool = True) -> None:
    if not changes.changes:
        console.print(f"ACLs on {safe(settings.kafka.bootstrap_servers)}: up to date")
        return
    if table:
        rows = Table(title=cell(f"ACL changes on {settings.kafka.bootstrap_servers}"))
        for column in ("principal", "binding", "action"):
            rows.add_column(column)
        for action, grants in (("create", changes.create), ("delete", changes.delete)):
            for grant in grants:
                rows.add_row(
                    cell(grant.principal),
                    cell(grant.describe()),
                    cell(action, "green" if action == "create" else "red"),
                )
        console.print(rows)
    console.print(f"ACLs on {safe(settings.kafka.bootstrap_servers)}: ", end="")
    console.print(
        f"{len(changes.create)} to create, {len(changes.delete)} to delete, "
        f"{len(changes.kept)} unchanged"
    )


@acl.command()
@click.option(
    "--principal",
    "principals",
    multiple=True,
    metavar="NAME",
    help="Only this principal (user name, e.g. sluice-guard); repeatable.",
)
@click.option("--all", "everyone", is_flag=True, help="Every principal, not only the declared.")
def show(*, principals: tuple[str, ...], everyone: bool) -> None:
    """The bindings the cluster has, per principal, and whether the declaration has them."""
    settings = get_settings()
    catalog = catalog_for(settings)
    declaration = load_acls(settings.schemas_dir, catalog)
    names = AclNames.of(settings)
    desired = set(declaration.grants(catalog, names))
    try:
        existing = existing_grants(kafka.admin(settings))
    except AuthorizerDisabledError as exc:
        err_console.print(_NO_AUTHORIZER.format(reason=safe(str(exc)), what="shown"))
        return
    wanted = {p if p.startswith("User:") else f"User:{p}" for p in principals}
    shown = [
        g
        for g in existing
        if (g.principal in wanted if wanted else everyone or declaration.manages(g.principal))
    ]
    _print_bindings(shown, desired, declaration, scope(desired, catalog, names))


def _status(
    grant: Grant, desired: set[Grant], declaration: AclDeclaration, ours: Callable[[Grant], bool]
) -> str:
    """declared; undeclared (apply deletes it); another deployment's; or unmanaged."""
    if grant in desired:
        return "declared"
    if not declaration.manages(grant.principal):
        return "unmanaged"
    if grant.permission != "ALLOW":
        return "kept (deny)"
    return "undeclared" if ours(grant) else "elsewhere"


def _print_bindings(
    shown: Iterable[Grant],
    desired: set[Grant],
    declaration: AclDeclaration,
    ours: Callable[[Grant], bool],
) -> None:
    by_principal: dict[str, list[Grant]] = defaultdict(list)
    for grant in shown:
        by_principal[grant.principal].append(grant)
    if not by_principal:
        console.print("no bindings")
        return
    for principal in sorted(by_principal):
        table = Table(title=cell(principal))
        for column in ("permission", "operation", "resource", "name", "pattern", "status"):
            table.add_column(column, overflow="fold")
        for grant in by_principal[principal]:
            status = _status(grant, desired, declaration, ours)
            table.add_row(
                cell(grant.permission),
                cell(grant.operation),
                cell(grant.resource),
                cell(grant.name),
                cell(grant.pattern),
                cell(status, "yellow" if status == "undeclared" else ""),
            )
        console.print(table)


COMMANDS = [acl]
