"""API keys of the OpenAI-compatible gateway: their format, their hash, their registry.

A key is ``sk-sluice-<key id>-<secret>``:

* ``<key id>``: 16 lowercase hex digits, random. It is not secret: it names the
  key's record, so the gateway finds it with one dict read instead of hashing the
  presented key against every record, and operators name it (``sluice keys revoke``)
  without ever seeing the secret again.
* ``<secret>``: 32 random bytes, base64url without padding (43 characters). It may
  contain ``-``; the id never does, so a key splits unambiguously at the first ``-``
  after the prefix.

The registry keeps, per key id, the key's tenant, user, priority and name and an
HMAC-SHA256 of the whole key under a server-side *pepper*, never the key. A slow
password hash (argon2, bcrypt) protects low-entropy passwords from guessing; a
256-bit random secret cannot be guessed, so slowness would buy nothing and cost
tens of milliseconds of CPU on every request the gateway serves. The pepper (32
random bytes, a file apart from the registry) keeps a leaked registry from being
usable to check candidate keys offline, and ties the hashes to one deployment.

Verification compares digests in constant time and does the same work for an
unknown id, a revoked key and a wrong secret, so the answer's timing says nothing.

The registry file (``<state dir>/secrets/api-keys.yaml``)::

    version: 1
    keys:
      3f0c9a0e5b7d4c21:
        tenant: acme
        user: checkout-service      # optional, an opaque id (never an email or a name)
        priority: normal            # high | normal | low
        name: ci                    # optional label
        hash: 9b1d...               # hex HMAC-SHA256(pepper, key)
        created_at: '2026-12-01T17:00:00+00:00'
        revoked_at: null
        requests_per_minute: 60     # optional: the key's own rate limits; left out, the
        tokens_per_minute: 100000   # key_default of schemas/rate_limits.yaml applies

The rate-limit fields are written only when a key has them, so a registry without
them reads as it always did (and older gateways still read it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.errors import ConfigurationError
from streams.llm.rate_limits import Rate

KEY_PREFIX = "sk-sluice-"
KEY_ID_HEX = 16
SECRET_BYTES = 32
PEPPER_BYTES = 32
REGISTRY_VERSION = 1
Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")

_KEY_ID = re.compile(rf"[0-9a-f]{{{KEY_ID_HEX}}}")
# base64url of 32 bytes without padding is exactly 43 characters.
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
#: An end-user id carried on requests: opaque, short, no spaces (guard blocks personal data).
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: A key's label: printable, short; it is shown in tables and on the audit trail.
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:-]{0,63}")
# The longest header value worth parsing: anything longer is not a key.
_MAX_PRESENTED = len(KEY_PREFIX) + KEY_ID_HEX + 1 + 43


class ApiKeyError(ConfigurationError, ValueError):
    """The API-key registry or its pepper is missing or invalid, or a key request is wrong."""


@dataclass(frozen=True)
class PresentedKey:
    """A key split into its id and its secret (a syntactically valid key, not a verified one)."""

    key_id: str
    secret: str

    @property
    def text(self) -> str:
        """The key as a client sends it."""
        return f"{KEY_PREFIX}{self.key_id}-{self.secret}"


def parse_key(text: str) -> PresentedKey | None:
    """The id and secret of ``text``, or None when it is not a Sluice key."""
    if len(text) != _MAX_PRESENTED or not text.startswith(KEY_PREFIX):
        return None
    key_id, dash, secret = text[len(KEY_PREFIX) :].partition("-")
    if not dash or not _KEY_ID.fullmatch(key_id) or not _SECRET.fullmatch(secret):
        return None
    return PresentedKey(key_id, secret)


def key_id_of(text: str) -> str:
    """The key id ``text`` is, or names (a whole key pasted by mistake gives its id).

    Checked before a command records it anywhere: a pasted key's secret must never
    reach the audit trail or a log line.
    """
    key = parse_key(text)
    if key is not None:
        return key.key_id
    if not _KEY_ID.fullmatch(text):
        raise ApiKeyError(
            f"not a key id: an id is {KEY_ID_HEX} lowercase hex digits (`sluice keys list` "
            "shows them)"
        )
    return text


def new_key() -> PresentedKey:
    """A fresh key: a random id and 32 random bytes of secret."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return PresentedKey(secrets.token_hex(KEY_ID_HEX // 2), secret)


def key_hash(pepper: bytes, key: PresentedKey) -> str:
    """HMAC-SHA256 of the whole key under the pepper, hex (what the registry stores)."""
    return hmac.new(pepper, key.text.encode("ascii"), hashlib.sha256).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKeyRecord(_Strict):
    """What the registry knows of one key: whose it is, and its hash (never the key)."""

    tenant: str = Field(min_length=1)
    user: str | None = None
    priority: Priority = "normal"
    name: str | None = None
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime
    revoked_at: datetime | None = None
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)

    @field_validator("user")
    @classmethod
    def _opaque_user(cls, value: str | None) -> str | None:
        if value is not None and not USER_ID.fullmatch(value):
            raise ValueError(
                "a user id is 1 to 128 letters, digits, '.', '_', ':' or '-' (an opaque id, "
                "never an email or a name)"
            )
        return value

    @field_validator("name")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and not KEY_NAME.fullmatch(value):
            raise ValueError("a key name is 1 to 64 letters, digits, spaces, '.', '_', ':' or '-'")
        return value

    @property
    def revoked(self) -> bool:
        """True once the key was revoked: it authenticates nothing any more."""
        return self.revoked_at is not None

    @property
    def own_rate(self) -> Rate:
        """The key's own rate limits (None where it has none: the ``key_default`` applies)."""
        return Rate(
            requests_per_minute=self.requests_per_minute, tokens_per_minute=self.tokens_per_minute
        )

    def to_file(self) -> dict[str, Any]:
        """The record as the registry file holds it (rate limits only when the key has them)."""
        data = self.model_dump(mode="json")
        for optional in _WRITTEN_WHEN_SET:
            if data[optional] is None:
                del data[optional]
        return data


# Fields added after the first registries: left out when unset, so a registry file
# stays readable by a gateway that predates them.
_WRITTEN_WHEN_SET = ("requests_per_minute", "tokens_per_minute")


class _RegistryFile(_Strict):
    version: int = REGISTRY_VERSION
    keys: dict[str, ApiKeyRecord] = Field(default_factory=dict)


@dataclass(frozen=True)
class ApiKeyRegistry:
    """Every key's record, by key id."""

    keys: Mapping[str, ApiKeyRecord]

    def __post_init__(self) -> None:
        for key_id in self.keys:
            if not _KEY_ID.fullmatch(key_id):
                raise ApiKeyError(
                    f"keys: {key_id[:32]!r} is not a key id ({KEY_ID_HEX} lowercase hex digits)"
                )

    # -- authenticating -------------------------------------------------------------------
    def authenticate(self, pepper: bytes, presented: str) -> tuple[str, ApiKeyRecord] | None:
        """The id and record of the live key ``presented`` is, or None.

        An unparseable key, an unknown id, a revoked key and a wrong secret all answer
        None after the same work (one HMAC and one constant-time comparison).
        """
        key = parse_key(presented)
        record = self.keys.get(key.key_id) if key is not None else None
        # Hash something in every case, so that timing does not tell the cases apart.
        digest = key_hash(pepper, key if key is not None else _NO_KEY)
        expected = record.hash if record is not None else _NO_HASH
        matches = hmac.compare_digest(digest.encode("ascii"), expected.encode("ascii"))
        if key is None or record is None or not matches or record.revoked:
            return None
        return key.key_id, record

    # -- changing (a new registry; ``save`` writes the file) ------------------------------
    def with_key(self, key_id: str, record: ApiKeyRecord) -> ApiKeyRegistry:
        """This registry with a new key; a key id is never reused."""
        if key_id in self.keys:
            raise ApiKeyError(f"key id {key_id} is already in the registry")
        return ApiKeyRegistry({**self.keys, key_id: record})

    def revoked(self, key_id: str, when: datetime) -> tuple[ApiKeyRegistry, bool]:
        """This registry with ``key_id`` revoked, and whether it was live until now.

        The record stays (revoked), so the id is never reused and ``keys list`` still
        shows who the key was for.
        """
        record = self.keys.get(key_id)
        if record is None:
            raise ApiKeyError(
                f"no key with id {key_id[:32]} in the registry (`sluice keys list` shows the ids)"
            )
        if record.revoked:
            return self, False
        return ApiKeyRegistry({**self.keys, key_id: replace_record(record, when)}), True

    # -- files ----------------------------------------------------------------------------
    def to_yaml(self) -> str:
        """The registry file's text."""
        data = {
            "version": REGISTRY_VERSION,
            "keys": {key_id: record.to_file() for key_id, record in sorted(self.keys.items())},
        }
        header = (
            "# Sluice gateway API keys: who each key is for, and an HMAC of the key under the\n"
            "# pepper (never the key). Managed by `sluice keys`; keep it 0600.\n"
        )
        return header + yaml.safe_dump(data, sort_keys=False)

    def save(self, path: Path) -> None:
        """Write the registry to ``path`` (0600), atomically: a reader sees the old or the new."""
        write_private(path, self.to_yaml())

    @classmethod
    def from_mapping(cls, data: Any, source: str = "API-key registry") -> ApiKeyRegistry:
        """Validate a parsed registry document."""
        try:
            spec = _RegistryFile.model_validate(data if data is not None else {})
        except ValidationError as exc:
            problems = "\n".join(
                f"  - {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ApiKeyError(f"{source} is not a valid API-key registry:\n{problems}") from None
        if spec.version != REGISTRY_VERSION:
            raise ApiKeyError(
                f"{source}: version {spec.version} is not supported (this Sluice reads "
                f"version {REGISTRY_VERSION})"
            )
        try:
            return cls(spec.keys)
        except ApiKeyError as exc:
            raise ApiKeyError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> ApiKeyRegistry:
        """Read and validate the registry at ``path`` (an empty one when there is no file)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls({})
        except OSError as exc:
            raise ApiKeyError(f"cannot read the API-key registry {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ApiKeyError(f"{path} is not valid YAML: {exc}") from None
        return cls.from_mapping(data, str(path))


def replace_record(record: ApiKeyRecord, revoked_at: datetime) -> ApiKeyRecord:
    """``record``, revoked at ``revoked_at``."""
    return record.model_copy(update={"revoked_at": revoked_at})


def load_pepper(path: Path) -> bytes:
    """The pepper at ``path`` (base64 of 32 bytes), refusing one that others may read."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise ApiKeyError(
            f"cannot read the API-key pepper {path}: `sluice keys create` makes it with the "
            "first key; a gateway needs the same file as the command that made its keys"
        ) from None
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ApiKeyError(f"the API-key pepper {path} is readable by others: chmod 600 it")
    try:
        pepper = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        pepper = b""
    if len(pepper) != PEPPER_BYTES:
        raise ApiKeyError(f"the API-key pepper {path} is not base64 of {PEPPER_BYTES} bytes")
    return pepper


def ensure_pepper(path: Path) -> bytes:
    """The pepper at ``path``, made (32 random bytes, 0600) when there is none yet."""
    if not path.exists():
        write_private(path, base64.b64encode(secrets.token_bytes(PEPPER_BYTES)).decode() + "\n")
    return load_pepper(path)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0600 from the first byte), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def utc_now() -> datetime:
    """Now, UTC, to the second (what the registry records)."""
    return datetime.now(UTC).replace(microsecond=0)


# Hashed in place of an unparseable key, and compared against for an unknown id.
_NO_KEY = PresentedKey("0" * KEY_ID_HEX, "A" * 43)
_NO_HASH = "0" * 64
