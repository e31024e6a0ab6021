"""Signed records: an Ed25519 signature over the exact bytes a writer produced, in a header.

Some records are decisions that only one party may make, and their readers must not
trust whoever could write to the topic:

* guard's verdict lets a request reach the models, so infer verifies that every record
  on ``inference.requests.safe`` was signed by guard (``GUARD_VERDICT``);
* meter's budget records decide whether a tenant is blocked, so guard verifies that
  each was signed by meter (``METER_BUDGET``);
* a tenant's request is billed to that tenant, so guard verifies that it was signed
  with that tenant's key (``TENANT_REQUEST``): identity comes from the key, not from
  the ``tenant_id`` a producer writes.

Topic ACLs restrict who may write; the signature lets the reader check it as well,
without trusting the broker's configuration. Each scheme has its own two headers:

* ``sluice.<signer>.signature``: base64 of the Ed25519 signature;
* ``sluice.<signer>.key-id``: a fingerprint of the public key, so that keys can rotate: a
  reader holds the current public key and the previous ones, and picks by id.

and its own domain string inside what is signed, so a signature made under one scheme
never verifies under another.

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


@dataclass(frozen=True)
class Scheme:
    """Who signs what: the signer's name (in the headers) and the domain of the signature."""

    signer: str
    domain: bytes

    @property
    def signature_header(self) -> str:
        """The header that carries the signature."""
        return f"sluice.{self.signer}.signature"

    @property
    def key_id_header(self) -> str:
        """The header that names the signing key."""
        return f"sluice.{self.signer}.key-id"


GUARD_VERDICT = Scheme("guard", b"sluice.guard.verdict.v1\x00")
METER_BUDGET = Scheme("meter", b"sluice.meter.budget.v1\x00")
TENANT_REQUEST = Scheme("tenant", b"sluice.tenant.request.v1\x00")
SIGNATURE_HEADER = GUARD_VERDICT.signature_header
KEY_ID_HEADER = GUARD_VERDICT.key_id_header
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
    """A record whose signature is missing, malformed, by an unknown key, or wrong.

    ``reason`` is one word for metrics labels: ``unsigned``, ``malformed``,
    ``unknown_key`` or ``bad_signature``.
    """

    def __init__(self, message: str, *, reason: str = "bad_signature") -> None:
        super().__init__(message)
        self.reason = reason


def signed_message(
    topic: str, key: bytes | None, value: bytes, scheme: Scheme = GUARD_VERDICT
) -> bytes:
    """The bytes a signature covers: the scheme, the logical topic, the key and the value."""
    # A missing key and an empty one differ (a flag byte); lengths keep fields apart.
    key_part = b"\x00" if key is None else b"\x01" + len(key).to_bytes(8, "big") + key
    name = topic.encode("utf-8")
    return (
        scheme.domain
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
    scheme: Scheme = GUARD_VERDICT

    @classmethod
    def from_secret(
        cls, secret: str | None, setting: str, scheme: Scheme = GUARD_VERDICT
    ) -> Signer:
        """The signer of the private key in ``setting``; a clear error when there is none."""
        if secret is None or not secret.strip():
            raise SigningKeyError(f"{setting} is not set; {MAKE_KEYPAIR}")
        private = Ed25519PrivateKey.from_private_bytes(_decode(secret, setting))
        return cls(private, public_key_id(_raw_public(private.public_key())), scheme)

    def headers(self, topic: str, key: bytes | None, value: bytes) -> Headers:
        """The signature and key-id headers of one record of ``topic`` (logical name)."""
        signature = self.private.sign(signed_message(topic, key, value, self.scheme))
        return [
            (self.scheme.signature_header, base64.b64encode(signature)),
            (self.scheme.key_id_header, self.key_id.encode("ascii")),
        ]


@dataclass(frozen=True)
class Verifier:
    """Checks signatures against the public keys it holds, by key id."""

    keys: dict[str, Ed25519PublicKey]
    scheme: Scheme = GUARD_VERDICT

    @classmethod
    def from_settings(
        cls, public_keys: Sequence[str], setting: str, scheme: Scheme = GUARD_VERDICT
    ) -> Verifier:
        """The verifier of the public keys in ``setting``; a clear error when there are none."""
        if not public_keys:
            raise SigningKeyError(
                f"{setting} is not set (a JSON list of public keys); {MAKE_KEYPAIR}"
            )
        keys: dict[str, Ed25519PublicKey] = {}
        for index, text in enumerate(public_keys):
            raw = _decode(text, f"{setting}[{index}]")
            keys[public_key_id(raw)] = Ed25519PublicKey.from_public_bytes(raw)
        return cls(keys, scheme)

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
        signature_name, key_id_name = self.scheme.signature_header, self.scheme.key_id_header
        signature_b64 = ident_bytes = None
        for name, data in headers:
            if name == signature_name:
                signature_b64 = data
            elif name == key_id_name:
                ident_bytes = data
        if signature_b64 is None:
            raise UnverifiedError(
                f"no {signature_name} header: not signed by {self.scheme.signer}",
                reason="unsigned",
            )
        if ident_bytes is None:
            raise UnverifiedError(
                f"no {key_id_name} header: the signing key is not named", reason="malformed"
            )
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if len(signature) != _SIGNATURE_BYTES:
            raise UnverifiedError(
                f"malformed {signature_name} header (not a base64 signature)", reason="malformed"
            )
        ident = ident_bytes.decode("ascii", errors="replace")
        public = self.keys.get(ident)
        if public is None:
            # A key id is a fingerprint we print only if it looks like one.
            shown = ident if len(ident) == 16 and ident.isalnum() else "malformed"
            raise UnverifiedError(
                f"signed by an unknown key ({key_id_name}: {shown})", reason="unknown_key"
            )
        try:
            public.verify(signature, signed_message(topic, key, value or b"", self.scheme))
        except InvalidSignature:
            raise UnverifiedError(
                f"the signature of key {ident} does not verify: the value, key or topic "
                f"changed after {self.scheme.signer} signed it",
                reason="bad_signature",
            ) from None
        return ident
