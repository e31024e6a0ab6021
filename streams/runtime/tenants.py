"""The tenant registry: who the tenants are, the keys that prove it, and their pseudonym key ids.

A tenant is known by a credential, never by the ``tenant_id`` a producer writes. The
registry is one YAML file that guard reads at start (``SLUICE_GUARD__TENANTS_PATH``)::

    version: 1
    tenants:
      acme:
        pseudonym_key_id: 3f0c9a0e5b7d4c21a8e6f1d2c3b4a596
        public_keys:
          - MCowBQYDK2VwAyEA...   # base64 of a raw 32-byte Ed25519 public key

* ``public_keys``: the Ed25519 keys whose signatures (``streams.runtime.signing``,
  scheme ``TENANT_REQUEST``) prove a request is the tenant's. Several keys let a
  tenant rotate: the new one is added, the old one removed once no producer uses it.
  Public keys are not secret.
* ``pseudonym_key_id``: random (128 bits or more, hex), made when the tenant is
  registered. guard derives the tenant's pseudonym key from the platform secret and
  this id, so knowing a tenant's id is not enough to compute its pseudonyms. It is
  not a key, but it must not be guessable: keep the file readable by guard only (0600).

Tenant ids are exact: ``NorthBank`` and ``northbank`` are two ids, and only a
registered one can be authenticated. Every problem is reported at load, naming the
tenant and the field, so a guard with a broken registry never starts.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.errors import ConfigurationError
from streams.runtime.signing import (
    TENANT_REQUEST,
    SigningKeyError,
    Verifier,
)

#: What a tenant id may be: it names files and metric labels, so no path separators.
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Shortest pseudonym key id, in hex digits (128 bits).
MIN_PSEUDONYM_KEY_ID_HEX = 32
_HEX = re.compile(r"[0-9a-f]+")
REGISTRY_VERSION = 1
TENANTS_PATH_SETTING = "SLUICE_GUARD__TENANTS_PATH"

log = logging.getLogger("sluice.tenants")


class TenantRegistryError(ConfigurationError, ValueError):
    """The tenant registry is missing or invalid; the message names the tenant and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantEntry(_Strict):
    """One registered tenant: its public keys (newest first) and its pseudonym key id."""

    pseudonym_key_id: str
    public_keys: list[str] = Field(min_length=1)

    @field_validator("pseudonym_key_id")
    @classmethod
    def _random_enough(cls, value: str) -> str:
        if len(value) < MIN_PSEUDONYM_KEY_ID_HEX or not _HEX.fullmatch(value):
            raise ValueError(
                f"must be at least {MIN_PSEUDONYM_KEY_ID_HEX} lowercase hex digits "
                "(e.g. `python -c 'import secrets; print(secrets.token_hex(16))'`)"
            )
        return value


class _RegistryFile(_Strict):
    version: int = REGISTRY_VERSION
    tenants: dict[str, TenantEntry] = Field(default_factory=dict)


def check_tenant_id(tenant: str) -> str:
    """``tenant`` if it is a valid tenant id; ``TenantRegistryError`` saying what is allowed."""
    if not TENANT_ID.fullmatch(tenant):
        raise TenantRegistryError(
            "a tenant id is 1 to 128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return tenant


@dataclass(frozen=True)
class TenantRegistry:
    """The validated registry: tenants by id, and the tenant of each signing key id."""

    tenants: Mapping[str, TenantEntry]

    def __post_init__(self) -> None:
        owners: dict[str, str] = {}
        pseudonyms: dict[str, str] = {}
        for tenant, entry in self.tenants.items():
            if not TENANT_ID.fullmatch(tenant):
                raise TenantRegistryError(
                    f"tenants: {tenant[:64]!r} is not a valid tenant id (letters, digits, "
                    "'.', '_' or '-', starting with a letter or digit, at most 128)"
                )
            other = pseudonyms.setdefault(entry.pseudonym_key_id, tenant)
            if other != tenant:
                raise TenantRegistryError(
                    f"tenants.{tenant}.pseudonym_key_id is also {other}'s: each tenant needs "
                    "its own, or their pseudonyms would be the same"
                )
            where = f"tenants.{tenant}.public_keys"
            try:
                key_ids = Verifier.from_settings(entry.public_keys, where, TENANT_REQUEST).keys
            except SigningKeyError as exc:
                raise TenantRegistryError(str(exc)) from None
            for key_id in key_ids:
                owner = owners.setdefault(key_id, tenant)
                if owner != tenant:
                    raise TenantRegistryError(
                        f"{where}: key {key_id} is also a key of tenant {owner}; a key proves "
                        "one tenant only"
                    )
        # Frozen: set once here, so that every lookup afterwards is a dict read.
        object.__setattr__(self, "_owners", owners)

    # -- reading ------------------------------------------------------------------------
    def entry(self, tenant: str) -> TenantEntry | None:
        """The entry of ``tenant`` (exact id), or None when it is not registered."""
        return self.tenants.get(tenant)

    def pseudonym_key_id(self, tenant: str) -> str | None:
        """The pseudonym key id of ``tenant``, or None when it is not registered."""
        entry = self.tenants.get(tenant)
        return entry.pseudonym_key_id if entry is not None else None

    def verifier(self) -> Verifier:
        """A verifier of every registered tenant's public keys (scheme ``TENANT_REQUEST``)."""
        keys = [k for entry in self.tenants.values() for k in entry.public_keys]
        if not keys:
            return Verifier({}, TENANT_REQUEST)
        return Verifier.from_settings(keys, "the tenant registry", TENANT_REQUEST)

    def tenant_of_key(self, key_id: str) -> str | None:
        """The tenant whose public key has id ``key_id``, or None."""
        owners: dict[str, str] = self._owners  # type: ignore[attr-defined]
        return owners.get(key_id)

    # -- changing (a new registry; the file is written by ``save``) ----------------------
    def with_tenant(self, tenant: str, entry: TenantEntry) -> TenantRegistry:
        """This registry with ``tenant`` added or replaced."""
        return TenantRegistry({**self.tenants, check_tenant_id(tenant): entry})

    def to_yaml(self) -> str:
        """The registry file's text."""
        data = {
            "version": REGISTRY_VERSION,
            "tenants": {
                tenant: {"pseudonym_key_id": e.pseudonym_key_id, "public_keys": list(e.public_keys)}
                for tenant, e in sorted(self.tenants.items())
            },
        }
        header = (
            "# Sluice tenant registry: the public keys that prove each tenant's requests, and\n"
            "# each tenant's pseudonym key id. Managed by `sluice tenants`; keep it 0600.\n"
        )
        return header + yaml.safe_dump(data, sort_keys=False)

    def save(self, path: Path) -> None:
        """Write the registry to ``path`` (0600), atomically: a reader sees the old or the new."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(self.to_yaml())
        os.replace(temporary, path)

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Any, source: str = "tenant registry") -> TenantRegistry:
        """Validate a parsed registry document."""
        try:
            spec = _RegistryFile.model_validate(data if data is not None else {})
        except ValidationError as exc:
            raise TenantRegistryError(
                f"{source} is not a valid tenant registry:\n{_explain(exc)}"
            ) from None
        if spec.version != REGISTRY_VERSION:
            raise TenantRegistryError(
                f"{source}: version {spec.version} is not supported (this Sluice reads "
                f"version {REGISTRY_VERSION})"
            )
        try:
            return cls(spec.tenants)
        except TenantRegistryError as exc:
            raise TenantRegistryError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: Path | None) -> TenantRegistry:
        """Read and validate the registry at ``path``; a clear error when there is none."""
        if path is None:
            raise TenantRegistryError(
                f"{TENANTS_PATH_SETTING} is not set: guard authenticates every request with "
                "its tenant's key from the tenant registry. `sluice up` keeps one in "
                "<state dir>/secrets/tenants.yaml (`sluice tenants add <id>` registers a tenant)."
            )
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TenantRegistryError(
                f"cannot read the tenant registry {path}: {exc.strerror}. Set "
                f"{TENANTS_PATH_SETTING} to the registry file (`sluice tenants list` shows "
                "the local one)."
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TenantRegistryError(f"{path} is not valid YAML: {exc}") from None
        registry = cls.from_mapping(data, str(path))
        _warn_if_shared(path)
        return registry

    @classmethod
    def empty(cls) -> TenantRegistry:
        """A registry with no tenant."""
        return cls({})


def _warn_if_shared(path: Path) -> None:
    """Say so when others may read the registry: its pseudonym key ids must not leak."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "the tenant registry %s is readable by others (mode %o): its pseudonym key ids, "
            "with the hash secret, make tenants' pseudonyms; chmod 600 it",
            path,
            mode,
        )


def _explain(exc: ValidationError) -> str:
    """One line per problem, with where it is in the file (tenant and field)."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)
