"""Where the gateway's API keys live, how they are made and revoked, and how a gateway reads them.

One directory (``<state dir>/secrets/`` on the local stack, a mounted secret in
production) holds:

* ``api-keys.yaml``: the registry (``streams.gateway.keys``), 0600;
* ``api-key-pepper``: the pepper its hashes are made with, 0600;
* ``api-keys.lock``: held while a command changes the registry, so that two
  commands never lose each other's change.

A running gateway re-reads the registry when the file changes (checked at most
every ``check_every_s``), so a revoked key stops working within seconds, without a
restart.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from streams.gateway.keys import (
    ApiKeyError,
    ApiKeyRecord,
    ApiKeyRegistry,
    Priority,
    ensure_pepper,
    key_hash,
    load_pepper,
    new_key,
    utc_now,
)

REGISTRY_FILE = "api-keys.yaml"
PEPPER_FILE = "api-key-pepper"
LOCK_FILE = "api-keys.lock"

log = logging.getLogger("sluice.gateway.keys")


@dataclass(frozen=True)
class Created:
    """A key just made: its id, its record and the key itself (shown once, never stored)."""

    key_id: str
    record: ApiKeyRecord
    key: str


@dataclass(frozen=True)
class KeyStore:
    """The API-key files in one secrets directory."""

    directory: Path

    @property
    def registry_path(self) -> Path:
        """The registry file."""
        return self.directory / REGISTRY_FILE

    @property
    def pepper_path(self) -> Path:
        """The pepper file."""
        return self.directory / PEPPER_FILE

    def registry(self) -> ApiKeyRegistry:
        """The registry as it is on disk (empty when no key was made yet)."""
        return ApiKeyRegistry.load(self.registry_path)

    def create(
        self,
        tenant: str,
        known_tenants: Collection[str],
        *,
        user: str | None = None,
        priority: Priority = "normal",
        name: str | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> Created:
        """A new key for ``tenant``, which must be one of ``known_tenants``.

        ``requests_per_minute`` and ``tokens_per_minute`` are the key's own rate limits;
        None leaves the ``key_default`` of ``rate_limits.yaml`` to apply.
        """
        if tenant not in known_tenants:
            raise ApiKeyError(
                f"tenant {tenant[:128]} is not in the tenant registry: a key proves a registered "
                f"tenant only (`sluice tenants add {tenant[:128]}` registers it)"
            )
        with self._locked():
            pepper = ensure_pepper(self.pepper_path)
            registry = self.registry()
            key = new_key()
            while key.key_id in registry.keys:  # 64 random bits: practically never
                key = new_key()
            try:
                record = ApiKeyRecord(
                    tenant=tenant,
                    user=user,
                    priority=priority,
                    name=name,
                    requests_per_minute=requests_per_minute,
                    tokens_per_minute=tokens_per_minute,
                    hash=key_hash(pepper, key),
                    created_at=utc_now(),
                )
            except ValidationError as exc:
                # Each problem names the field and what it allows, never the value given.
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
                raise ApiKeyError(f"cannot make the key: {problems}") from None
            registry.with_key(key.key_id, record).save(self.registry_path)
        return Created(key.key_id, record, key.text)

    def revoke(self, key_id: str) -> tuple[ApiKeyRecord, bool]:
        """Revoke ``key_id``; its record, and whether it was live until now."""
        with self._locked():
            registry, changed = self.registry().revoked(key_id, utc_now())
            if changed:
                registry.save(self.registry_path)
        return registry.keys[key_id], changed

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class LiveKeys:
    """The registry a gateway authenticates with, re-read when its file changes.

    A registry that fails to load keeps the last good one in use (and says so in the
    log): a half-edited file must not lock every client out, nor let anyone in.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.check_every_s = check_every_s
        self.clock = clock
        # Both fail at start, with a message that says what to do: a gateway with no
        # pepper or a broken registry does not start.
        self.pepper = load_pepper(store.pepper_path)
        self._stamp = self._file_stamp()
        self._registry = store.registry()
        self._checked_at = clock()

    def authenticate(self, presented: str) -> tuple[str, ApiKeyRecord] | None:
        """The id and record of the live key ``presented`` is, or None."""
        self._refresh()
        return self._registry.authenticate(self.pepper, presented)

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._checked_at < self.check_every_s:
            return
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            registry = self.store.registry()
        except ApiKeyError as exc:
            log.error("keeping the previous API keys: %s", exc)
            return
        self._registry, self._stamp = registry, stamp
        log.info("API keys reloaded: %d keys", len(registry.keys))

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = self.store.registry_path.stat()
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino
