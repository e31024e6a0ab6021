"""Keyed pseudonyms: the same value gives the same token within a tenant, another across tenants.

A plain hash of a name or an e-mail address can be reversed by hashing
candidate values; a keyed HMAC cannot without the key. Each tenant gets its
own key, derived from one platform secret (``SLUICE_GUARD__HASH_SECRET``) and
the tenant's ``pseudonym_key_id`` from the tenant registry
(``streams.runtime.tenants``): a random id made when the tenant was registered,
not the tenant id. So tokens cannot be joined across tenants, no key is ever
stored in a file, and knowing (or claiming) a tenant's id is not enough to get
its pseudonyms: guard only hashes under the key of the tenant whose signature
it verified. A tenant the registry does not hold has no key at all
(``UnregisteredTenantError``).

A token is ``<ENTITY_`` + 26 characters of lowercase base32 (``a-z``, ``2-7``) +
``>``: the first 130 bits of the HMAC-SHA256. Two different values of one tenant
and entity type share a token with probability at most ``n**2 / 2**131`` for ``n``
distinct values (the birthday bound): below 4e-22 at a billion values, so a
token can stand for its value in joins and counts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable

from pydantic import SecretStr

from processors.guard.policy import Entity
from streams.errors import ConfigurationError, SluiceError
from streams.runtime.bounded import DEFAULT_MAX_ENTRIES, BoundedCache

MIN_SECRET_CHARS = 16
#: Characters of base32 in a token: 26 x 5 = 130 bits of the HMAC.
TOKEN_CHARS = 26
# v2: keys derive from the registry's pseudonym key id (v1 derived them from the tenant id).
_KEY_LABEL = b"sluice.guard.hash.v2\x00"
_NON_DIGIT = re.compile(r"\D")
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")
_SPACES = re.compile(r"\s+")


#: The pseudonym key id of a tenant (None: the tenant is not registered).
PseudonymKeyIds = Callable[[str], "str | None"]


class HashSecretError(ConfigurationError, ValueError):
    """The hash secret is missing or too short."""


class UnregisteredTenantError(SluiceError, KeyError):
    """A pseudonym was asked for a tenant the registry does not hold: there is no key for it."""


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
    """Makes ``<ENTITY_…>`` tokens (26 base32 characters) with a per-tenant HMAC-SHA256 key.

    ``key_ids`` gives each tenant's pseudonym key id (the tenant registry's
    ``pseudonym_key_id``). The keys of the ``max_tenants`` most recently seen tenants
    are kept; another tenant's key is derived again (one HMAC) when it comes back.
    """

    def __init__(
        self,
        secret: SecretStr | str | None,
        key_ids: PseudonymKeyIds,
        *,
        max_tenants: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
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
        self._key_ids = key_ids
        self._keys: BoundedCache[str, bytes] = BoundedCache(max_tenants)

    def tenant_key(self, tenant: str) -> bytes:
        """The HMAC key of ``tenant``: HMAC of its pseudonym key id under the platform secret.

        ``UnregisteredTenantError`` when the registry does not hold ``tenant``.
        """
        key = self._keys.get(tenant)
        if key is None:
            key_id = self._key_ids(tenant)
            if key_id is None:
                # The id is not in the message: it may be text a producer chose.
                raise UnregisteredTenantError("no pseudonym key: the tenant is not registered")
            mac = hmac.new(self._secret, _KEY_LABEL + key_id.encode("utf-8"), hashlib.sha256)
            key = mac.digest()
            self._keys[tenant] = key
        return key

    def token(self, tenant: str, entity: str, value: str) -> str:
        """Return the stable token of ``value`` for ``tenant``.

        For example ``<PERSON_k5uxo3rfz6mvxawtwq4ld2e7ya>``: 130 bits of the HMAC in
        lowercase base32, unpadded.
        """
        message = entity.encode("utf-8") + b"\x00" + canonical(entity, value).encode("utf-8")
        digest = hmac.new(self.tenant_key(tenant), message, hashlib.sha256).digest()
        text = base64.b32encode(digest).decode("ascii").lower()
        return f"<{entity}_{text[:TOKEN_CHARS]}>"
