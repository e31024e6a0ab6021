from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from processors.guard.hashing import HashSecretError, TenantHasher, canonical
from processors.guard.settings import GuardSettings
from tests.support.guard import SECRET


def test_tokens_are_stable_within_a_tenant_and_differ_across_tenants() -> None:
    hasher = TenantHasher(SecretStr(SECRET))
    a1 = hasher.token("acme", "PERSON", "Maria Gonzalez")
    assert re.fullmatch(r"<PERSON_[0-9a-f]{8}>", a1)
    assert hasher.token("acme", "PERSON", "Maria Gonzalez") == a1
    assert TenantHasher(SECRET).token("acme", "PERSON", "Maria Gonzalez") == a1  # restart
    assert hasher.token("globex", "PERSON", "Maria Gonzalez") != a1
    assert hasher.token("acme", "PERSON", "Mario Gonzalez") != a1
    assert TenantHasher("another-secret-0123456789").token("acme", "PERSON", "Maria Gonzalez") != a1


def test_tenant_keys_are_derived_not_shared() -> None:
    hasher = TenantHasher(SECRET)
    assert hasher.tenant_key("acme") != hasher.tenant_key("globex")
    assert SECRET.encode() not in hasher.tenant_key("acme")


def test_spelling_variants_share_a_token() -> None:
    hasher = TenantHasher(SECRET)
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
        TenantHasher(secret)


def test_secret_comes_from_the_environment_and_stays_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_GUARD__HASH_SECRET", SECRET)
    settings = GuardSettings()
    assert settings.hash_secret is not None
    assert settings.hash_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
