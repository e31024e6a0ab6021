"""Keyed pseudonyms: the same value gives the same token within a tenant, another across tenants.

A plain hash of a name or an e-mail address can be reversed by hashing
candidate values; a keyed HMAC cannot without the key. Each tenant gets its
own key, derived from one platform secret (``SLUICE_GUARD__HASH_SECRET``) and
the tenant id, so tokens cannot be joined across tenants and no key is ever
stored in a file.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

from pydantic import SecretStr

from processors.guard.policy import Entity
from streams.errors import ConfigurationError

MIN_SECRET_CHARS = 16
TOKEN_HEX_CHARS = 8
_KEY_LABEL = b"sluice.guard.hash.v1\x00"
_NON_DIGIT = re.compile(r"\D")
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")
_SPACES = re.compile(r"\s+")


class HashSecretError(ConfigurationError, ValueError):
    """The hash secret is missing or too short."""


def canonical(entity: str, value: str) -> str:
    """Return the form of ``value`` that is hashed, so trivial spelling variants share a token.

    ``+1 (415) 555-0133`` and ``+1 415 555 0133`` are one phone number, and
    ``Ana@Example.com`` and ``ana@example.com`` one address.
    """
    value = unicodedata.normalize("NFKC", value)
    if entity in (Entity.PHONE_NUMBER, Entity.CREDIT_CARD, Entity.US_SSN):
        return _NON_DIGIT.sub("", value)
    if entity == Entity.IBAN_CODE:
        return _NON_ALNUM.sub("", value).upper()
    if entity in (Entity.EMAIL_ADDRESS, Entity.PERSON):
        return _SPACES.sub(" ", value).strip().casefold()
    return value.strip()


class TenantHasher:
    """Makes ``<ENTITY_xxxxxxxx>`` tokens with a per-tenant HMAC-SHA256 key."""

    def __init__(self, secret: SecretStr | str | None) -> None:
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if not raw or len(raw) < MIN_SECRET_CHARS:
            raise HashSecretError(
                "guard needs a hash secret of at least "
                f"{MIN_SECRET_CHARS} characters to pseudonymize values: set "
                "SLUICE_GUARD__HASH_SECRET, e.g. to the output of "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`, and keep it the "
                "same across restarts (changing it changes every token)."
            )
        self._secret = raw.encode("utf-8")
        self._keys: dict[str, bytes] = {}

    def tenant_key(self, tenant: str) -> bytes:
        """Return the HMAC key of ``tenant`` (HMAC of the tenant id under the platform secret)."""
        key = self._keys.get(tenant)
        if key is None:
            mac = hmac.new(self._secret, _KEY_LABEL + tenant.encode("utf-8"), hashlib.sha256)
            key = mac.digest()
            self._keys[tenant] = key
        return key

    def token(self, tenant: str, entity: str, value: str) -> str:
        """Return the stable token of ``value`` for ``tenant``, e.g. ``<PERSON_3f9a1c2b>``."""
        message = entity.encode("utf-8") + b"\x00" + canonical(entity, value).encode("utf-8")
        digest = hmac.new(self.tenant_key(tenant), message, hashlib.sha256).hexdigest()
        return f"<{entity}_{digest[:TOKEN_HEX_CHARS]}>"
