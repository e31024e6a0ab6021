"""``sluice keys``: the API keys clients present to the OpenAI-compatible gateway.

A key proves one registered tenant (``sluice tenants``), and carries the end-user id
and priority the gateway puts on that tenant's requests. The registry keeps an HMAC
of each key, never the key: ``create`` prints it once, and nobody can show it again.
``create`` and ``revoke`` change who the gateway lets in, so each is recorded on
``audit.events`` (key id, tenant, priority; never the key) and refused when it
cannot be.
"""

from __future__ import annotations

from typing import cast

import click
from rich.table import Table

from streams.cli import console
from streams.cli.output import cell, safe
from streams.contracts.catalog import catalog_for
from streams.gateway.key_store import KeyStore
from streams.gateway.keys import PRIORITIES, Priority, key_id_of
from streams.runtime.audit import Auditor, audited
from streams.settings import Settings, get_settings
from streams.stack.tenant_keys import local_registry

GATEWAY_RELOADS = "running gateways re-read the key registry within seconds; no restart needed"


def key_store(settings: Settings) -> KeyStore:
    """The local stack's API-key files, beside its tenant registry."""
    return KeyStore(settings.stack.root / "secrets")


@click.group()
def keys() -> None:
    """API keys of the OpenAI-compatible gateway (each proves one tenant)."""


@keys.command()
@click.option("--tenant", required=True, help="The registered tenant the key proves.")
@click.option(
    "--user",
    default=None,
    help="Opaque end-user id put on the key's requests (never an email or a name).",
)
@click.option(
    "--priority",
    type=click.Choice(PRIORITIES),
    default="normal",
    show_default=True,
    help="Scheduling priority of the key's requests.",
)
@click.option("--name", default=None, help="A label to recognise the key by in `keys list`.")
@click.option(
    "--requests-per-minute",
    type=click.IntRange(min=1),
    default=None,
    help="The key's own limit of calls per minute at the gateway "
    "(default: key_default of rate_limits.yaml).",
)
@click.option(
    "--tokens-per-minute",
    type=click.IntRange(min=1),
    default=None,
    help="The key's own limit of tokens (input and max output) per minute at the gateway "
    "(default: key_default of rate_limits.yaml).",
)
def create(  # click passes options by keyword
    *,
    tenant: str,
    user: str | None,
    priority: str,
    name: str | None,
    requests_per_minute: int | None,
    tokens_per_minute: int | None,
) -> None:
    """Make an API key for TENANT; the key is printed once and never stored."""
    settings = get_settings()
    store = key_store(settings)
    # Built first: a key that could not be audited is refused before it is made.
    auditor = Auditor(settings, catalog_for(settings))
    with audited(auditor, "keys.create", tenant) as details:
        created = store.create(
            tenant,
            local_registry(settings).tenants.keys(),
            user=user,
            priority=cast(Priority, priority),
            name=name,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )
        details.update(key_id=created.key_id, priority=priority, with_user=user is not None)
        if requests_per_minute is not None:
            details.update(requests_per_minute=requests_per_minute)
        if tokens_per_minute is not None:
            details.update(tokens_per_minute=tokens_per_minute)
    console.print(
        f"API key {created.key_id} for tenant {safe(tenant)} (priority {priority}) in "
        f"{store.registry_path}\n"
        "Copy it now: it is shown only this once (the registry keeps a hash):"
    )
    # Printed alone on its line, unwrapped, so that it can be copied whole.
    click.echo(created.key)


@keys.command(name="list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
def list_keys(tenant: str | None) -> None:
    """Every API key's id, tenant, user, priority, name, rate limits and state (never a key).

    A rate limit shown as ``default`` is the ``key_default`` of ``rate_limits.yaml``.
    """
    store = key_store(get_settings())
    table = Table(title=f"API keys in {store.registry_path}")
    columns = ("key id", "tenant", "user", "priority", "name", "req/min", "tok/min")
    for column in (*columns, "created", "state"):
        table.add_column(column)
    for key_id, record in sorted(store.registry().keys.items(), key=lambda kv: kv[1].created_at):
        if tenant is not None and record.tenant != tenant:
            continue
        state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "live"
        table.add_row(
            key_id,
            cell(record.tenant),
            cell(record.user or ""),
            record.priority,
            cell(record.name or ""),
            _per_minute(record.requests_per_minute),
            _per_minute(record.tokens_per_minute),
            f"{record.created_at:%Y-%m-%d %H:%M}",
            state,
        )
    console.print(table)


@keys.command()
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke the API key KEY_ID: the gateway refuses it from then on."""
    key_id = key_id_of(key_id)  # before anything records it: never a pasted secret
    settings = get_settings()
    store = key_store(settings)
    auditor = Auditor(settings, catalog_for(settings))
    with audited(auditor, "keys.revoke", key_id) as details:
        record, changed = store.revoke(key_id)
        details.update(tenant=record.tenant, revoked_now=changed)
    if changed:
        console.print(
            f"revoked API key {key_id} of tenant {safe(record.tenant)}; {GATEWAY_RELOADS}"
        )
    else:
        console.print(f"API key {key_id} was already revoked")


def _per_minute(limit: int | None) -> str:
    return "default" if limit is None else str(limit)


COMMANDS = [keys]
