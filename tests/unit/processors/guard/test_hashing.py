from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from processors.guard.hashing import (
    HashSecretError,
    TenantHasher,
    UnregisteredTenantError,
    canonical,
)
from processors.guard.settings import GuardSettings
from tests.support.guard import SECRET, unit_key_ids

#: Two tenants' pseudonym key ids as a registry holds them (random, made at registration).
KEY_IDS = {"acme": "0f" * 16, "globex": "a1" * 16}


def test_tokens_are_stable_within_a_tenant_and_differ_across_tenants() -> None:
    hasher = TenantHasher(SecretStr(SECRET), unit_key_ids)
    a1 = hasher.token("acme", "PERSON", "Maria Gonzalez")
    assert re.fullmatch(r"<PERSON_[a-z2-7]{26}>", a1)  # 130 bits of the HMAC, base32
    assert hasher.token("acme", "PERSON", "Maria Gonzalez") == a1
    assert (
        TenantHasher(SECRET, unit_key_ids).token("acme", "PERSON", "Maria Gonzalez") == a1
    )  # restart
    assert hasher.token("globex", "PERSON", "Maria Gonzalez") != a1
    assert hasher.token("acme", "PERSON", "Mario Gonzalez") != a1
    assert (
        TenantHasher("another-secret-0123456789", unit_key_ids).token(
            "acme", "PERSON", "Maria Gonzalez"
        )
        != a1
    )


def test_tenant_keys_are_derived_not_shared() -> None:
    hasher = TenantHasher(SECRET, unit_key_ids)
    assert hasher.tenant_key("acme") != hasher.tenant_key("globex")
    assert SECRET.encode() not in hasher.tenant_key("acme")


def test_spelling_variants_share_a_token() -> None:
    hasher = TenantHasher(SECRET, unit_key_ids)
    assert hasher.token("t", "PHONE_NUMBER", "+1 (415) 555-0134") == hasher.token(
        "t", "PHONE_NUMBER", "+1 415 555 0134"
    )
    assert hasher.token("t", "EMAIL_ADDRESS", "Ana@Example.com") == hasher.token(
        "t", "EMAIL_ADDRESS", "ana@example.com"
    )
    assert canonical("IBAN_CODE", "de89 3704 0044 0532 0130 00") == "DE89370400440532013000"


@pytest.mark.parametrize("secret", [None, "", "short"])
def test_missing_or_short_secret_is_refused_with_instructions(secret: str | None) -> None:
    with pytest.raises(HashSecretError, match="SLUICE_GUARD__HASH_SECRET"):
        TenantHasher(secret, unit_key_ids)


def test_secret_comes_from_the_environment_and_stays_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_GUARD__HASH_SECRET", SECRET)
    settings = GuardSettings()
    assert settings.hash_secret is not None
    assert settings.hash_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


def test_a_token_is_130_bits_of_the_hmac_in_base32() -> None:
    import base64
    import hashlib
    import hmac

    hasher = TenantHasher(SECRET, unit_key_ids)
    key = hasher.tenant_key("acme")
    digest = hmac.new(key, b"EMAIL_ADDRESS\x00ana@example.com", hashlib.sha256).digest()
    expected = base64.b32encode(digest).decode().lower()[:26]
    assert hasher.token("acme", "EMAIL_ADDRESS", "Ana@Example.com") == f"<EMAIL_ADDRESS_{expected}>"


def test_a_hundred_thousand_values_get_a_hundred_thousand_tokens() -> None:
    # 32-bit tokens would collide here about once (100,000^2 / 2^33 = 1.2 expected pairs);
    # at 130 bits the chance of any collision among 10^9 values is below 4e-22.
    hasher = TenantHasher(SECRET, unit_key_ids)
    tokens = {hasher.token("acme", "US_SSN", f"{i:09d}") for i in range(100_000)}
    assert len(tokens) == 100_000


def test_a_tenants_key_comes_from_its_pseudonym_key_id_not_its_tenant_id() -> None:
    hasher = TenantHasher(SECRET, KEY_IDS.get)
    acme = hasher.token("acme", "PERSON", "Maria Gonzalez")
    assert acme != hasher.token("globex", "PERSON", "Maria Gonzalez")
    # Whoever knows only the tenant id cannot make acme's tokens: the key id is random.
    by_id = TenantHasher(SECRET, lambda tenant: tenant.encode().hex().ljust(32, "0"))
    assert by_id.token("acme", "PERSON", "Maria Gonzalez") != acme
    # A new key id (a re-registered tenant) gives new tokens; the same one the same.
    assert TenantHasher(SECRET, {"acme": "0e" * 16}.get).token("acme", "PERSON", "Maria") != (
        hasher.token("acme", "PERSON", "Maria")
    )
    assert TenantHasher(SECRET, dict(KEY_IDS).get).token("acme", "PERSON", "Maria Gonzalez") == acme


def test_an_unregistered_tenant_has_no_pseudonyms() -> None:
    hasher = TenantHasher(SECRET, KEY_IDS.get)
    for tenant in ("initech", "Acme", "ACME"):  # ids are exact: wrong case is another id
        with pytest.raises(UnregisteredTenantError) as caught:
            hasher.token(tenant, "PERSON", "Maria Gonzalez")
        assert tenant not in str(caught.value)
