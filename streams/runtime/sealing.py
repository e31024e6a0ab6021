"""Encrypted dead letters: the original bytes under AES-256-GCM, the key named in a header.

Dead-letter topics of a data class marked ``encrypted`` (``schemas/topics.yaml``: the
dead letters of raw prompts, for one) would otherwise keep a person's prompt in the
clear for as long as the topic keeps anything. Their value is ``nonce (12 bytes) ||
ciphertext || tag`` and two headers say how to open it:

* ``sluice.dlq.cipher``: ``AES-256-GCM``;
* ``sluice.dlq.key-id``: a fingerprint of the key (not the key), so that keys can
  rotate: a reader holds the current key and the previous ones, and picks by id.

The key id and the cipher are the associated data, so a record whose headers were
swapped does not open. Keys are base64 of 32 random bytes, from
``SLUICE_DEAD_LETTERS__ENCRYPTION_KEY`` (and ``__PREVIOUS_KEYS`` for old ones).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.errors import ConfigurationError, SluiceError
from streams.runtime.dead_letters import SEALING_PREFIX
from streams.runtime.spec import Headers
from streams.settings import DeadLetterSettings

CIPHER = "AES-256-GCM"
CIPHER_HEADER = SEALING_PREFIX + "cipher"
KEY_ID_HEADER = SEALING_PREFIX + "key-id"
KEY_SETTING = "SLUICE_DEAD_LETTERS__ENCRYPTION_KEY"
PREVIOUS_KEYS_SETTING = "SLUICE_DEAD_LETTERS__PREVIOUS_KEYS"
_NONCE_BYTES = 12
_KEY_BYTES = 32


class DeadLetterKeyError(ConfigurationError):
    """No key, a malformed key, or not the key a dead letter was encrypted with."""


class SealedPayloadError(SluiceError, ValueError):
    """An encrypted dead letter that does not open: altered, truncated, or not encrypted."""


def key_id(key: bytes) -> str:
    """A fingerprint of ``key`` that names it in headers without revealing it."""
    return hashlib.sha256(b"sluice.dlq.key-id\x00" + key).hexdigest()[:16]


def new_key() -> str:
    """A fresh key, base64 as the settings take it."""
    return base64.b64encode(os.urandom(_KEY_BYTES)).decode("ascii")


def _decode_key(text: str, setting: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != _KEY_BYTES:
        raise DeadLetterKeyError(
            f"{setting} is not base64 of {_KEY_BYTES} bytes; make a key with "
            "`openssl rand -base64 32`"
        )
    return key


def header(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The last value of header ``name``, as text, or None."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = (value or b"").decode("utf-8", errors="replace")
    return found


def sealed_key_id(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """The key id of an encrypted dead letter; None when the record is not encrypted."""
    items = list(headers or ())
    if header(items, CIPHER_HEADER) is None:
        return None
    return header(items, KEY_ID_HEADER) or "?"


@dataclass(frozen=True)
class Keyring:
    """The current key (encrypts and decrypts) and previous ones (decrypt only), by id."""

    current: bytes | None = None
    keys: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: DeadLetterSettings) -> Keyring:
        """The keys of ``SLUICE_DEAD_LETTERS__*``; a malformed one fails now, naming it."""
        current = None
        keys: dict[str, bytes] = {}
        for index, secret in enumerate(settings.previous_keys):
            key = _decode_key(secret.get_secret_value(), f"{PREVIOUS_KEYS_SETTING}[{index}]")
            keys[key_id(key)] = key
        if settings.encryption_key is not None:
            current = _decode_key(settings.encryption_key.get_secret_value(), KEY_SETTING)
            keys[key_id(current)] = current
        return cls(current, keys)

    def require(self, why: str) -> bytes:
        """The current key; a clear error naming the setting when there is none."""
        if self.current is None:
            raise DeadLetterKeyError(
                f"{why}, and {KEY_SETTING} is not set. Set it to base64 of 32 random bytes "
                "(`openssl rand -base64 32`); `sluice up` keeps one for the local stack in "
                "<state dir>/secrets/dead-letter-key."
            )
        return self.current

    def seal(self, plaintext: bytes) -> tuple[bytes, Headers]:
        """``plaintext`` encrypted with the current key, and the headers that name it."""
        current = self.require("an encrypted dead letter is to be written")
        ident = key_id(current)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + AESGCM(current).encrypt(nonce, plaintext, _aad(ident))
        return sealed, [(CIPHER_HEADER, CIPHER.encode()), (KEY_ID_HEADER, ident.encode())]

    def open(self, sealed: bytes, headers: Iterable[tuple[str, bytes | None]] | None) -> bytes:
        """The original bytes of an encrypted dead letter; a clear error if they do not open."""
        items = list(headers or ())
        cipher = header(items, CIPHER_HEADER)
        if cipher != CIPHER:
            raise SealedPayloadError(
                f"dead letter is not encrypted with {CIPHER} ({CIPHER_HEADER}: {cipher!r})"
            )
        ident = header(items, KEY_ID_HEADER) or ""
        key = self.keys.get(ident)
        if key is None:
            if not self.keys:
                self.require("the dead letter is encrypted")
            known = ", ".join(sorted(self.keys))
            raise DeadLetterKeyError(
                f"the dead letter is encrypted with key {ident!r}, which is neither "
                f"{KEY_SETTING} nor one of {PREVIOUS_KEYS_SETTING} (key ids held: {known}); "
                "set the key that encrypted it"
            )
        if len(sealed) <= _NONCE_BYTES:
            raise SealedPayloadError("encrypted dead letter is truncated")
        nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return AESGCM(key).decrypt(nonce, body, _aad(ident))
        except InvalidTag:
            raise SealedPayloadError(
                f"encrypted dead letter does not open with key {ident}: it was altered or "
                "truncated after it was written"
            ) from None


def _aad(ident: str) -> bytes:
    return f"{CIPHER}|{ident}".encode()
