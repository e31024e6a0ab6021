"""The local stack's tenants: a signing keypair and a pseudonym key id for each, made once.

Producers prove which tenant they write for by signing each request with the tenant's
private key (``streams.sdk``); guard checks the signature against the tenant registry
(``streams.runtime.tenants``). In production both come from the deployment's secret
store. The local stack keeps them under ``<state dir>/secrets/`` (0600):

* ``tenants/<tenant>.key``: the tenant's private key (what its producers hold);
* ``tenants.yaml``: the registry guard reads (``SLUICE_GUARD__TENANTS_PATH``).

``sluice up`` registers every tenant the shipped configuration names; ``sluice
tenants add/list/rotate`` manage the rest. Several processes may register at once
(tests, the demo): every change happens under a file lock and is written atomically.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from streams.errors import ConfigurationError
from streams.runtime.signing import new_keypair, public_key_of
from streams.runtime.tenants import (
    TENANTS_PATH_SETTING,
    TenantEntry,
    TenantRegistry,
    check_tenant_id,
)
from streams.settings import Settings

TENANT_REGISTRY_FILE = "tenants.yaml"
TENANT_KEYS_DIR = "tenants"
#: The tenants the demo sends requests for (``sluice demo``: the sample tickets' tenants),
#: registered by ``sluice up``.
DEMO_TENANTS = ("globex", "acme", "initech", "umbrella", "hooli", "stark-industries")
#: Bits of randomness in a pseudonym key id.
PSEUDONYM_KEY_ID_BYTES = 16


class UnknownTenantError(ConfigurationError):
    """A command names a tenant the local registry does not hold."""


def tenant_registry_path(settings: Settings) -> Path:
    """Where the local stack keeps the tenant registry guard reads."""
    return settings.stack.root / "secrets" / TENANT_REGISTRY_FILE


def tenant_key_path(settings: Settings, tenant: str) -> Path:
    """Where the local stack keeps ``tenant``'s private signing key."""
    return settings.stack.root / "secrets" / TENANT_KEYS_DIR / f"{check_tenant_id(tenant)}.key"


def local_registry(settings: Settings) -> TenantRegistry:
    """The local registry (empty when none was made yet)."""
    path = tenant_registry_path(settings)
    return TenantRegistry.load(path) if path.is_file() else TenantRegistry.empty()


def tenant_signing_key(settings: Settings, tenant: str) -> str:
    """``tenant``'s private key (base64), as the SDK's ``SLUICE_TENANT__SIGNING_KEY`` takes it."""
    path = tenant_key_path(settings, tenant)
    if not path.is_file():
        raise UnknownTenantError(
            f"tenant {tenant} has no key in {path.parent}: register it with "
            f"`sluice tenants add {tenant}`"
        )
    return path.read_text(encoding="ascii").strip()


def configured_tenants(settings: Settings) -> list[str]:
    """The tenants the shipped configuration names: guard policy, budgets, the demo."""
    named: set[str] = set(DEMO_TENANTS)
    for path in (
        settings.project_root / "schemas" / "guard" / "policy.yaml",
        settings.schemas_dir / "budgets.yaml",
    ):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # guard and meter report their own files' problems, with context
        tenants = data.get("tenants") if isinstance(data, dict) else None
        if isinstance(tenants, dict):
            named |= {str(t) for t in tenants}
    return sorted(named)


def ensure_tenants(settings: Settings, tenants: Iterable[str]) -> list[str]:
    """Register each of ``tenants`` that is not yet; the ones registered now."""
    made = []
    with _locked(settings):
        registry = local_registry(settings)
        for tenant in tenants:
            if registry.entry(tenant) is None or not tenant_key_path(settings, tenant).is_file():
                registry = _register(settings, registry, tenant)
                made.append(tenant)
        if made:
            registry.save(tenant_registry_path(settings))
    return made


def add_tenant(settings: Settings, tenant: str) -> bool:
    """Register ``tenant`` (a keypair and a pseudonym key id); False when it already was."""
    return bool(ensure_tenants(settings, [tenant]))


def rotate_tenant(settings: Settings, tenant: str, *, retire: bool = False) -> list[str]:
    """A new signing key for ``tenant``; its public keys afterwards, newest first.

    The old public key stays in the registry, so requests signed before the rotation
    (in flight, in a dead-letter topic, mirrored) still verify. ``retire`` makes no new
    key and drops every public key but the current one: run it once no producer signs
    with an old key. The pseudonym key id never changes (it would change every token).
    """
    with _locked(settings):
        registry = local_registry(settings)
        entry = registry.entry(tenant)
        if entry is None:
            raise UnknownTenantError(
                f"tenant {tenant} is not registered in {tenant_registry_path(settings)}: "
                f"`sluice tenants add {tenant}` registers it"
            )
        if retire:
            keys = [public_key_of(tenant_signing_key(settings, tenant))]
        else:
            private, public = new_keypair()
            _write_private(tenant_key_path(settings, tenant), private)
            keys = [public, *(k for k in entry.public_keys if k != public)]
        updated = TenantEntry(pseudonym_key_id=entry.pseudonym_key_id, public_keys=keys)
        registry.with_tenant(tenant, updated).save(tenant_registry_path(settings))
    return keys


def local_tenant_registry(settings: Settings, processor: str) -> dict[str, str]:
    """``SLUICE_GUARD__TENANTS_PATH`` for guard and guard-stream, when the stack has a registry."""
    path = tenant_registry_path(settings)
    if processor in ("guard", "guard-stream") and path.is_file():
        return {TENANTS_PATH_SETTING: str(path.resolve())}
    return {}


def _register(settings: Settings, registry: TenantRegistry, tenant: str) -> TenantRegistry:
    """``registry`` with ``tenant`` in it, its private key on disk (kept if there is one)."""
    path = tenant_key_path(settings, tenant)
    if path.is_file():
        public = public_key_of(path.read_text(encoding="ascii").strip())
    else:
        private, public = new_keypair()
        _write_private(path, private)
    entry = registry.entry(tenant)
    if entry is None:
        entry = TenantEntry(
            pseudonym_key_id=secrets.token_hex(PSEUDONYM_KEY_ID_BYTES), public_keys=[public]
        )
    elif public not in entry.public_keys:
        entry = TenantEntry(
            pseudonym_key_id=entry.pseudonym_key_id, public_keys=[public, *entry.public_keys]
        )
    return registry.with_tenant(tenant, entry)


def _write_private(path: Path, private: str) -> None:
    """Write a private key (0600 from the first byte), replacing any older one atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(private + "\n")
    os.replace(temporary, path)


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Hold the registry's lock: `sluice up`, tests and the CLI may change it at once."""
    lock = tenant_registry_path(settings).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
