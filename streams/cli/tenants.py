"""``sluice tenants``: the local stack's tenants, the keys that prove them, their rotation.

guard authenticates each request by its tenant's signature (see
``streams.runtime.tenants``); these commands manage the local registry under
``<state dir>/secrets/``. A private key is never printed: ``add`` says where it is,
and a producer reads it from there (``SLUICE_TENANT__SIGNING_KEY``). ``add`` and
``rotate`` change who guard believes, so each is recorded on ``audit.events`` (tenant
and public key ids, never a key) and refused when it cannot be.
"""

from __future__ import annotations

import base64

import click
from rich.table import Table

from streams.cli import console
from streams.cli.output import cell, safe
from streams.contracts.catalog import catalog_for
from streams.runtime.audit import Auditor, audited
from streams.runtime.signing import public_key_id
from streams.settings import get_settings
from streams.stack.tenant_keys import (
    add_tenant,
    local_registry,
    rotate_tenant,
    tenant_key_path,
    tenant_registry_path,
)

RESTART_GUARD = "guard reads the registry at start: restart it (`sluice run guard`) to apply"


@click.group()
def tenants() -> None:
    """Tenants of the local stack and their request-signing keys."""


@tenants.command()
@click.argument("tenant")
def add(tenant: str) -> None:
    """Register TENANT: a signing keypair and a random pseudonym key id (ids are exact)."""
    settings = get_settings()
    # Built first: a registration that could not be audited is refused before it is made.
    auditor = Auditor(settings, catalog_for(settings))
    with audited(auditor, "tenants.add", tenant) as details:
        made = add_tenant(settings, tenant)
        details.update(registered=made)
    path = tenant_key_path(settings, tenant)
    if not made:
        console.print(f"tenant {safe(tenant)} is already registered; its private key is {path}")
        return
    console.print(
        f"registered tenant {safe(tenant)} in {tenant_registry_path(settings)}\n"
        f"private key (0600, give it only to this tenant's producers): {safe(path)}\n"
        f"producers: SLUICE_TENANT__ID={safe(tenant)} "
        f"SLUICE_TENANT__SIGNING_KEY=$(cat {safe(path)})\n"
        f"{RESTART_GUARD}\n"
        f"Kafka: the next `sluice up` makes its login, tenant-{safe(tenant)}; list it under "
        "`tenants:` in schemas/acls.yaml and run `sluice acl apply` to let it write"
    )


@tenants.command(name="list")
def list_tenants() -> None:
    """Every registered tenant and the ids of its public keys (newest first)."""
    settings = get_settings()
    registry = local_registry(settings)
    table = Table(title=f"tenants in {tenant_registry_path(settings)}")
    table.add_column("tenant")
    table.add_column("key ids (newest first)")
    table.add_column("private key here")
    for tenant, entry in sorted(registry.tenants.items()):
        ids = ", ".join(_key_id(k) for k in entry.public_keys)
        here = "yes" if tenant_key_path(settings, tenant).is_file() else "no"
        table.add_row(cell(tenant), ids, here)
    console.print(table)


@tenants.command()
@click.argument("tenant")
@click.option(
    "--retire",
    is_flag=True,
    help="Make no new key: drop every public key but the current one (once no producer "
    "signs with an old key).",
)
def rotate(tenant: str, retire: bool) -> None:
    """A new signing key for TENANT; the old public key keeps verifying until --retire."""
    settings = get_settings()
    auditor = Auditor(settings, catalog_for(settings))
    action = "tenants.retire" if retire else "tenants.rotate"
    with audited(auditor, action, tenant) as details:
        keys = rotate_tenant(settings, tenant, retire=retire)
        details.update(key_ids=" ".join(_key_id(k) for k in keys))
    what = "retired its older keys" if retire else "made a new signing key"
    console.print(
        f"tenant {safe(tenant)}: {what}; accepted key ids now "
        f"{', '.join(_key_id(k) for k in keys)}; private key: {tenant_key_path(settings, tenant)}\n"
        f"{RESTART_GUARD}"
    )


def _key_id(public: str) -> str:
    return public_key_id(base64.b64decode(public))


COMMANDS = [tenants]
