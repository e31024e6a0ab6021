"""API keys: their format, their keyed hash, the registry and its reloading."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.gateway.key_store import KeyStore, LiveKeys
from streams.gateway.keys import (
    KEY_PREFIX,
    ApiKeyError,
    ApiKeyRecord,
    ApiKeyRegistry,
    ensure_pepper,
    key_hash,
    key_id_of,
    load_pepper,
    new_key,
    parse_key,
)

PEPPER = b"p" * 32


def test_a_new_key_has_the_prefix_an_id_and_a_256_bit_secret_and_parses_back():
    key = new_key()
    assert key.text.startswith(KEY_PREFIX)
    assert len(key.key_id) == 16 and len(key.secret) == 43
    assert parse_key(key.text) == key
    assert len({new_key().secret for _ in range(50)}) == 50


def test_a_secret_with_dashes_still_splits_at_the_first_dash_after_the_id():
    secret = "-" + "a" * 41 + "-"
    parsed = parse_key(f"{KEY_PREFIX}0123456789abcdef-{secret}")
    assert parsed is not None and parsed.key_id == "0123456789abcdef" and parsed.secret == secret


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-proj-abc",
        KEY_PREFIX + "0123456789ABCDEF-" + "a" * 43,  # upper-case id
        KEY_PREFIX + "0123456789abcde-" + "a" * 44,  # short id
        KEY_PREFIX + "0123456789abcdef-" + "a" * 42,  # short secret
        KEY_PREFIX + "0123456789abcdef-" + "a" * 42 + "=",  # not base64url
        KEY_PREFIX + "0123456789abcdef-" + "a" * 43 + "x" * 10_000,
    ],
)
def test_anything_else_is_not_a_key(text):
    assert parse_key(text) is None


def _registry(**overrides) -> tuple[ApiKeyRegistry, str, str]:
    key = new_key()
    record = ApiKeyRecord(
        tenant="acme",
        hash=key_hash(PEPPER, key),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **overrides,
    )
    return ApiKeyRegistry({key.key_id: record}), key.key_id, key.text


def test_a_live_key_authenticates_as_its_record():
    registry, key_id, text = _registry(user="svc-1", priority="high")
    found = registry.authenticate(PEPPER, text)
    assert found is not None
    assert found[0] == key_id and found[1].tenant == "acme" and found[1].priority == "high"


def test_a_wrong_secret_another_pepper_an_unknown_id_or_garbage_authenticate_nothing():
    registry, key_id, text = _registry()
    other = new_key()
    assert registry.authenticate(PEPPER, f"{KEY_PREFIX}{key_id}-{other.secret}") is None
    assert registry.authenticate(b"q" * 32, text) is None
    assert registry.authenticate(PEPPER, other.text) is None
    assert registry.authenticate(PEPPER, "Bearer nonsense") is None


def test_a_revoked_key_authenticates_nothing_and_revoking_twice_changes_nothing():
    registry, key_id, text = _registry()
    revoked, changed = registry.revoked(key_id, datetime(2026, 2, 1, tzinfo=UTC))
    assert changed and revoked.authenticate(PEPPER, text) is None
    again, changed_again = revoked.revoked(key_id, datetime(2026, 3, 1, tzinfo=UTC))
    assert not changed_again and again.keys[key_id].revoked_at == revoked.keys[key_id].revoked_at
    with pytest.raises(ApiKeyError, match="no key with id"):
        registry.revoked("f" * 16, datetime(2026, 2, 1, tzinfo=UTC))


def test_the_registry_round_trips_through_its_file_and_never_holds_the_key(tmp_path):
    registry, _key_id, text = _registry(user="svc-1", name="ci runner")
    path = tmp_path / "secrets" / "api-keys.yaml"
    registry.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert text not in path.read_text() and parse_key(text).secret not in path.read_text()
    loaded = ApiKeyRegistry.load(path)
    assert loaded.keys == registry.keys
    assert loaded.authenticate(PEPPER, text) is not None


def test_a_malformed_registry_names_the_field(tmp_path):
    path = tmp_path / "api-keys.yaml"
    path.write_text("version: 1\nkeys:\n  0123456789abcdef: {tenant: acme, hash: nothex}\n")
    with pytest.raises(ApiKeyError, match=r"0123456789abcdef\.hash"):
        ApiKeyRegistry.load(path)
    path.write_text("version: 2\n")
    with pytest.raises(ApiKeyError, match="version 2 is not supported"):
        ApiKeyRegistry.load(path)
    assert ApiKeyRegistry.load(tmp_path / "absent.yaml").keys == {}


def test_a_user_id_that_is_not_opaque_is_refused():
    with pytest.raises(ValueError, match="opaque id"):
        _registry(user="Jane Doe <jane@example.com>")


def test_key_id_of_takes_an_id_or_a_pasted_key_and_never_echoes_anything_else():
    key = new_key()
    assert key_id_of(key.key_id) == key.key_id
    assert key_id_of(key.text) == key.key_id
    with pytest.raises(ApiKeyError) as caught:
        key_id_of("sk-something-secret-looking")
    assert "secret-looking" not in str(caught.value)


def test_the_pepper_is_made_once_private_and_refused_when_shared(tmp_path):
    path = tmp_path / "secrets" / "api-key-pepper"
    pepper = ensure_pepper(path)
    assert len(pepper) == 32 and ensure_pepper(path) == pepper
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(ApiKeyError, match="readable by others"):
        load_pepper(path)
    with pytest.raises(ApiKeyError, match="keys create"):
        load_pepper(tmp_path / "absent")


def test_the_store_makes_keys_only_for_registered_tenants(tmp_path):
    store = KeyStore(tmp_path)
    with pytest.raises(ApiKeyError, match="sluice tenants add nobody"):
        store.create("nobody", {"acme"})
    assert not store.registry_path.exists()
    created = store.create("acme", {"acme"}, user="svc-1", priority="low", name="batch")
    record = store.registry().keys[created.key_id]
    assert (record.tenant, record.user, record.priority, record.name) == (
        "acme",
        "svc-1",
        "low",
        "batch",
    )
    pepper = load_pepper(store.pepper_path)
    assert store.registry().authenticate(pepper, created.key) is not None


def test_the_store_refuses_a_bad_user_without_echoing_it(tmp_path):
    with pytest.raises(ApiKeyError, match="user") as caught:
        KeyStore(tmp_path).create("acme", {"acme"}, user="jane@example.com")
    assert "jane@example.com" not in str(caught.value)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_running_gateway_sees_a_revocation_after_its_next_check(tmp_path: Path):
    store = KeyStore(tmp_path)
    created = store.create("acme", {"acme"})
    clock = _Clock()
    live = LiveKeys(store, check_every_s=2.0, clock=clock)
    assert live.authenticate(created.key) is not None
    store.revoke(created.key_id)
    clock.now = 1.0
    assert live.authenticate(created.key) is not None, "not re-read before check_every_s"
    clock.now = 2.5
    assert live.authenticate(created.key) is None


def test_a_broken_registry_keeps_the_last_good_one(tmp_path: Path):
    store = KeyStore(tmp_path)
    created = store.create("acme", {"acme"})
    clock = _Clock()
    live = LiveKeys(store, clock=clock)
    store.registry_path.write_text("keys: [not, a, mapping]\n")
    clock.now = 10.0
    assert live.authenticate(created.key) is not None


def test_a_gateway_without_a_pepper_does_not_start(tmp_path: Path):
    with pytest.raises(ApiKeyError, match="pepper"):
        LiveKeys(KeyStore(tmp_path))


def test_a_keys_own_rate_limits_round_trip_through_the_registry(tmp_path: Path):
    store = KeyStore(tmp_path)
    limited = store.create("acme", {"acme"}, requests_per_minute=60, tokens_per_minute=5000)
    plain = store.create("acme", {"acme"})
    records = store.registry().keys
    assert records[limited.key_id].own_rate.requests_per_minute == 60
    assert records[limited.key_id].own_rate.tokens_per_minute == 5000
    assert records[plain.key_id].own_rate.unlimited
    text = store.registry_path.read_text()
    assert text.count("requests_per_minute: 60") == 1 and text.count("tokens_per_minute") == 1, (
        "a key without limits of its own writes no limit fields"
    )
    with pytest.raises(ApiKeyError, match="requests_per_minute"):
        store.create("acme", {"acme"}, requests_per_minute=0)


def test_a_registry_written_before_rate_limits_still_loads(tmp_path: Path):
    key = new_key()
    path = tmp_path / "api-keys.yaml"
    path.write_text(
        "version: 1\n"
        "keys:\n"
        f"  {key.key_id}:\n"
        "    tenant: acme\n"
        "    user: null\n"
        "    priority: normal\n"
        "    name: null\n"
        f"    hash: {key_hash(PEPPER, key)}\n"
        "    created_at: '2026-12-01T17:00:00+00:00'\n"
        "    revoked_at: null\n"
    )
    registry = ApiKeyRegistry.load(path)
    assert registry.keys[key.key_id].own_rate.unlimited
    assert registry.authenticate(PEPPER, key.text) is not None
    registry.save(path)
    assert "per_minute" not in path.read_text()
