"""Signed records: an Ed25519 signature over the exact bytes a processor wrote, in a header.

guard's verdict is what lets a request reach the models, so ``inference.requests.safe``
must hold only what guard wrote. Topic ACLs restrict who may write it; the signature
lets the reader (infer) check it as well, without trusting the broker's configuration:

* ``sluice.guard.signature``: base64 of the Ed25519 signature;
* ``sluice.guard.key-id``: a fingerprint of the public key, so that keys can rotate: a
  reader holds the current public key and the previous ones, and picks by id.

What is signed is the topic's logical name, the record key and the value bytes exactly
as produced (the Confluent wire format: schema id and Avro body, verdict included), each
length-prefixed so that no byte can move from one to another. A record copied to another
topic, given another key or changed in any byte does not verify. Headers other than
these two are not signed: they carry trace context, which is not a decision.

The writer holds the private key (base64 of the raw 32 bytes); readers hold only public
keys (base64 of the raw 32 bytes), so a reader cannot sign what the writer did not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from streams.errors import ConfigurationError, SluiceError
from streams.runtime.spec import Headers

SIGNATURE_HEADER = "sluice.guard.signature"
KEY_ID_HEADER = "sluice.guard.key-id"
_DOMAIN = b"sluice.guard.verdict.v1\x00"
_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
MAKE_KEYPAIR = (
    "`sluice up` keeps a keypair for the local stack in <state dir>/secrets/; otherwise make "
    'one with `python -c "from streams.runtime.signing import new_keypair; print(*new_keypair())"` '
    "(private key, then public key)"
)


class SigningKeyError(ConfigurationError):
    """A signing or verifying key that is missing or malformed."""


class UnverifiedError(SluiceError, ValueError):
    """A record whose signature is missing, malformed, by an unknown key, or wrong."""


def signed_message(topic: str, key: bytes | None, value: bytes) -> bytes:
    """The bytes a signature covers: the logical topic, the key and the value, framed."""
    # A missing key and an empty one differ (a flag byte); lengths keep fields apart.
    key_part = b"\x00" if key is None else b"\x01" + len(key).to_bytes(8, "big") + key
    name = topic.encode("utf-8")
    return (
        _DOMAIN
        + len(name).to_bytes(8, "big")
        + name
        + key_part
        + len(value).to_bytes(8, "big")
        + value
    )


def public_key_id(public: bytes) -> str:
    """A short fingerprint of a raw public key, which names it in headers."""
    return hashlib.sha256(b"sluice.guard.key-id\x00" + public).hexdigest()[:16]


def new_keypair() -> tuple[str, str]:
    """A fresh (private, public) keypair, base64 of the raw bytes as the settings take them."""
    private = Ed25519PrivateKey.generate()
    return _b64(private.private_bytes_raw()), _b64(_raw_public(private.public_key()))


def public_key_of(private: str) -> str:
    """The public key (base64) of a private key (base64)."""
    key = Ed25519PrivateKey.from_private_bytes(_decode(private, "private key"))
    return _b64(_raw_public(key.public_key()))


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _decode(text: str, setting: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _KEY_BYTES:
        raise SigningKeyError(
            f"{setting} is not base64 of a raw {_KEY_BYTES}-byte Ed25519 key; {MAKE_KEYPAIR}"
        )
    return raw


@dataclass(frozen=True)
class Signer:
    """Signs records with one private key; the runner calls it after serialising an output."""

    private: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_secret(cls, secret: str | None, setting: str) -> Signer:
        """The signer of the private key in ``setting``; a clear error when there is none."""
        if secret is None or not secret.strip():
            raise SigningKeyError(f"{setting} is not set; {MAKE_KEYPAIR}")
        private = Ed25519PrivateKey.from_private_bytes(_decode(secret, setting))
        return cls(private, public_key_id(_raw_public(private.public_key())))

    def headers(self, topic: str, key: bytes | None, value: bytes) -> Headers:
        """The signature and key-id headers of one record of ``topic`` (logical name)."""
        signature = self.private.sign(signed_message(topic, key, value))
        return [
            (SIGNATURE_HEADER, base64.b64encode(signature)),
            (KEY_ID_HEADER, self.key_id.encode("ascii")),
        ]


@dataclass(frozen=True)
class Verifier:
    """Checks signatures against the public keys it holds, by key id."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def from_settings(cls, public_keys: Sequence[str], setting: str) -> Verifier:
        """The verifier of the public keys in ``setting``; a clear error when there are none."""
        if not public_keys:
            raise SigningKeyError(
                f"{setting} is not set (a JSON list of public keys); {MAKE_KEYPAIR}"
            )
        keys: dict[str, Ed25519PublicKey] = {}
        for index, text in enumerate(public_keys):
            raw = _decode(text, f"{setting}[{index}]")
            keys[public_key_id(raw)] = Ed25519PublicKey.from_public_bytes(raw)
        return cls(keys)

    def verify(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]],
    ) -> str:
        """The key id that signed this record; ``UnverifiedError`` saying why it did not.

        Reasons name the header or key id at fault, never a value.
        """
        signature_b64 = ident_bytes = None
        for name, data in headers:
            if name == SIGNATURE_HEADER:
                signature_b64 = data
            elif name == KEY_ID_HEADER:
                ident_bytes = data
        if signature_b64 is None:
            raise UnverifiedError(f"no {SIGNATURE_HEADER} header: not signed by guard")
        if ident_bytes is None:
            raise UnverifiedError(f"no {KEY_ID_HEADER} header: the signing key is not named")
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if len(signature) != _SIGNATURE_BYTES:
            raise UnverifiedError(f"malformed {SIGNATURE_HEADER} header (not a base64 signature)")
        ident = ident_bytes.decode("ascii", errors="replace")
        public = self.keys.get(ident)
        if public is None:
            # A key id is a fingerprint we print only if it looks like one.
            shown = ident if len(ident) == 16 and ident.isalnum() else "malformed"
            raise UnverifiedError(f"signed by an unknown key ({KEY_ID_HEADER}: {shown})")
        try:
            public.verify(signature, signed_message(topic, key, value or b""))
        except InvalidSignature:
            raise UnverifiedError(
                f"the signature of key {ident} does not verify: the value, key or topic "
                "changed after guard signed it"
            ) from None
        return ident
