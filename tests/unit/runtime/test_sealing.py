"""Encrypted dead letters: round trip, tampering, key rotation, and clear errors."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from streams.runtime.dead_letters import without_error_headers
from streams.runtime.sealing import (
    CIPHER_HEADER,
    KEY_ID_HEADER,
    KEY_SETTING,
    DeadLetterKeyError,
    Keyring,
    SealedPayloadError,
    key_id,
    new_key,
    sealed_key_id,
)
from streams.settings import DeadLetterSettings, Settings

PROMPT = b"\x00\x00\x00\x00\x01my card is 4111 1111 1111 1111, call me at +44 20 7946 0958"


def ring(current: str | None, *previous: str) -> Keyring:
    return Keyring.from_settings(
        DeadLetterSettings(
            encryption_key=SecretStr(current) if current else None,
            previous_keys=[SecretStr(p) for p in previous],
        )
    )


def test_round_trip_and_no_plaintext_in_what_is_stored() -> None:
    keys = ring(new_key())
    sealed, headers = keys.seal(PROMPT)
    assert keys.open(sealed, headers) == PROMPT
    assert PROMPT not in sealed
    for fragment in (b"4111", b"call me", b"7946"):
        assert fragment not in sealed
    assert dict(headers)[CIPHER_HEADER] == b"AES-256-GCM"
    assert sealed_key_id(headers) == key_id(keys.current or b"")


def test_each_seal_uses_a_fresh_nonce() -> None:
    keys = ring(new_key())
    assert keys.seal(PROMPT)[0] != keys.seal(PROMPT)[0]


@pytest.mark.parametrize("position", [0, 12, -1])
def test_a_tampered_ciphertext_is_refused(position: int) -> None:
    keys = ring(new_key())
    sealed, headers = keys.seal(PROMPT)
    tampered = bytearray(sealed)
    tampered[position] ^= 0x01
    with pytest.raises(SealedPayloadError, match="altered or truncated"):
        keys.open(bytes(tampered), headers)


def test_a_truncated_ciphertext_is_refused() -> None:
    keys = ring(new_key())
    sealed, headers = keys.seal(PROMPT)
    with pytest.raises(SealedPayloadError):
        keys.open(sealed[:-3], headers)
    with pytest.raises(SealedPayloadError, match="truncated"):
        keys.open(sealed[:5], headers)


def test_a_wrong_key_id_is_a_clear_error() -> None:
    sealed, headers = ring(new_key()).seal(PROMPT)
    other = ring(new_key())
    with pytest.raises(
        DeadLetterKeyError, match=r"encrypted with key '[0-9a-f]{16}'.*ENCRYPTION_KEY"
    ):
        other.open(sealed, headers)


def test_a_swapped_key_id_header_does_not_open() -> None:
    old, new = new_key(), new_key()
    keys = ring(new, old)
    sealed, headers = ring(old).seal(PROMPT)
    swapped = [
        (k, v if k != KEY_ID_HEADER else key_id(base64.b64decode(new)).encode()) for k, v in headers
    ]
    with pytest.raises(SealedPayloadError):
        keys.open(sealed, swapped)


def test_previous_keys_still_decrypt_after_rotation() -> None:
    old, new = new_key(), new_key()
    sealed, headers = ring(old).seal(PROMPT)
    rotated = ring(new, old)
    assert rotated.open(sealed, headers) == PROMPT
    resealed, new_headers = rotated.seal(PROMPT)
    assert sealed_key_id(new_headers) == key_id(base64.b64decode(new))
    with pytest.raises(DeadLetterKeyError):
        ring(old).open(resealed, new_headers)


def test_without_a_key_sealing_and_opening_name_the_setting() -> None:
    sealed, headers = ring(new_key()).seal(PROMPT)
    empty = ring(None)
    with pytest.raises(DeadLetterKeyError, match=KEY_SETTING):
        empty.seal(PROMPT)
    with pytest.raises(DeadLetterKeyError, match=KEY_SETTING):
        empty.open(sealed, headers)


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_key_is_refused_naming_the_setting(bad: str) -> None:
    with pytest.raises(DeadLetterKeyError, match=f"{KEY_SETTING} is not base64 of 32 bytes"):
        ring(bad)
    with pytest.raises(DeadLetterKeyError, match=r"PREVIOUS_KEYS\[0\]"):
        ring(new_key(), bad)


def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    monkeypatch.setenv(KEY_SETTING, key)
    monkeypatch.setenv("SLUICE_DEAD_LETTERS__PREVIOUS_KEYS", f'["{new_key()}"]')
    keys = Keyring.from_settings(Settings().dead_letters)
    assert keys.current == base64.b64decode(key) and len(keys.keys) == 2


def test_a_plain_record_is_not_opened() -> None:
    assert sealed_key_id([("sluice.error.class", b"X")]) is None
    with pytest.raises(SealedPayloadError, match="not encrypted"):
        ring(new_key()).open(PROMPT, [])


def test_replayed_headers_leave_the_encryption_headers_out() -> None:
    _, headers = ring(new_key()).seal(PROMPT)
    assert without_error_headers([("traceparent", b"t"), *headers]) == [("traceparent", b"t")]
