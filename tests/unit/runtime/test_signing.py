"""Signed records: what a signature covers, and every way a record fails to verify."""

from __future__ import annotations

import base64
import time

import pytest

from streams.errors import ConfigurationError
from streams.runtime.signing import (
    KEY_ID_HEADER,
    METER_BUDGET,
    SIGNATURE_HEADER,
    TENANT_REQUEST,
    Signer,
    UnverifiedError,
    Verifier,
    new_keypair,
    public_key_id,
    public_key_of,
)

TOPIC = "inference.requests.safe"
KEY = b"r-1"
VALUE = b"\x00\x00\x00\x00\x07" + b"avro body with a verdict"
PRIVATE, PUBLIC = new_keypair()
OTHER_PRIVATE, OTHER_PUBLIC = new_keypair()


def signer(private: str = PRIVATE) -> Signer:
    return Signer.from_secret(private, "SLUICE_GUARD__VERDICT_SIGNING_KEY")


def verifier(*public: str) -> Verifier:
    return Verifier.from_settings(list(public or [PUBLIC]), "SLUICE_INFER__VERDICT_PUBLIC_KEYS")


def reason(headers: list[tuple[str, bytes]], **changes: object) -> str:
    record = {"topic": TOPIC, "key": KEY, "value": VALUE, **changes}
    with pytest.raises(UnverifiedError) as caught:
        verifier().verify(
            str(record["topic"]),
            record["key"],  # type: ignore[arg-type]
            record["value"],  # type: ignore[arg-type]
            headers,
        )
    return str(caught.value)


def test_a_signed_record_verifies_and_names_its_key() -> None:
    headers = signer().headers(TOPIC, KEY, VALUE)
    assert [name for name, _ in headers] == [SIGNATURE_HEADER, KEY_ID_HEADER]
    ident = verifier().verify(TOPIC, KEY, VALUE, headers)
    assert ident == public_key_id(base64.b64decode(PUBLIC)) == signer().key_id


@pytest.mark.parametrize(
    "change",
    [
        {"value": VALUE[:-1] + b"X"},  # one byte of the verdict
        {"value": b"\x00\x00\x00\x00\x08" + VALUE[5:]},  # another schema id
        {"key": b"r-2"},
        {"key": None},
        {"topic": "inference.requests.blocked"},
    ],
)
def test_a_changed_value_key_or_topic_does_not_verify(change: dict[str, object]) -> None:
    headers = signer().headers(TOPIC, KEY, VALUE)
    message = reason(headers, **change)
    assert "does not verify" in message
    assert "avro body" not in message and "r-2" not in message


def test_no_signature_header() -> None:
    assert "no sluice.guard.signature header" in reason([])


def test_a_malformed_signature_header() -> None:
    headers = [(SIGNATURE_HEADER, b"not base64!"), (KEY_ID_HEADER, signer().key_id.encode())]
    assert "malformed" in reason(headers)
    short = [(SIGNATURE_HEADER, base64.b64encode(b"x" * 10)), headers[1]]
    assert "malformed" in reason(short)


def test_a_missing_key_id_header() -> None:
    [signature, _] = signer().headers(TOPIC, KEY, VALUE)
    assert "no sluice.guard.key-id header" in reason([signature])


def test_signed_by_another_key() -> None:
    headers = signer(OTHER_PRIVATE).headers(TOPIC, KEY, VALUE)
    assert "unknown key" in reason(headers)


def test_another_key_claiming_the_known_key_id_does_not_verify() -> None:
    [signature, _] = signer(OTHER_PRIVATE).headers(TOPIC, KEY, VALUE)
    forged = [signature, (KEY_ID_HEADER, signer().key_id.encode())]
    assert "does not verify" in reason(forged)


def test_a_key_id_that_is_no_fingerprint_is_not_quoted() -> None:
    [signature, _] = signer().headers(TOPIC, KEY, VALUE)
    message = reason([signature, (KEY_ID_HEADER, b"Maria Garcia, 4111 1111")])
    assert "Maria" not in message and "malformed" in message


def test_rotation_with_two_public_keys() -> None:
    both = verifier(PUBLIC, OTHER_PUBLIC)
    old = signer().headers(TOPIC, KEY, VALUE)
    new = signer(OTHER_PRIVATE).headers(TOPIC, KEY, VALUE)
    assert both.verify(TOPIC, KEY, VALUE, old) == signer().key_id
    assert both.verify(TOPIC, KEY, VALUE, new) == signer(OTHER_PRIVATE).key_id
    with pytest.raises(UnverifiedError, match="unknown key"):
        verifier(OTHER_PUBLIC).verify(TOPIC, KEY, VALUE, old)  # the old key dropped


def test_a_missing_key_and_an_empty_key_differ() -> None:
    headers = signer().headers(TOPIC, None, VALUE)
    assert verifier().verify(TOPIC, None, VALUE, headers)
    with pytest.raises(UnverifiedError):
        verifier().verify(TOPIC, b"", VALUE, headers)


def test_the_public_key_is_derived_from_the_private_one() -> None:
    assert public_key_of(PRIVATE) == PUBLIC


@pytest.mark.parametrize("secret", [None, "", "not base64", base64.b64encode(b"x" * 31).decode()])
def test_a_missing_or_malformed_private_key_names_the_setting(secret: str | None) -> None:
    with pytest.raises(ConfigurationError, match="SLUICE_GUARD__VERDICT_SIGNING_KEY") as caught:
        signer(secret)  # type: ignore[arg-type]
    assert "new_keypair" in str(caught.value) and "sluice up" in str(caught.value)


def test_no_public_keys_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="SLUICE_INFER__VERDICT_PUBLIC_KEYS"):
        Verifier.from_settings([], "SLUICE_INFER__VERDICT_PUBLIC_KEYS")
    with pytest.raises(ConfigurationError, match=r"VERDICT_PUBLIC_KEYS\[1\]"):
        Verifier.from_settings([PUBLIC, "nope"], "SLUICE_INFER__VERDICT_PUBLIC_KEYS")


def test_sign_and_verify_cost_per_record() -> None:
    """Measured, and bounded loosely: a few hundred microseconds at most on any CPU."""
    value = VALUE * 40  # about a 1 KiB request
    sign, check = signer(), verifier()
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        check.verify(TOPIC, KEY, value, sign.headers(TOPIC, KEY, value))
    per_record_us = (time.perf_counter() - started) / rounds * 1e6
    assert per_record_us < 5_000, per_record_us


def test_a_signature_of_one_scheme_never_verifies_under_another() -> None:
    meter = Signer.from_secret(PRIVATE, "SLUICE_METER__BUDGET_SIGNING_KEY", METER_BUDGET)
    headers = meter.headers(TOPIC, KEY, VALUE)
    assert [name for name, _ in headers] == ["sluice.meter.signature", "sluice.meter.key-id"]
    assert Verifier(verifier().keys, METER_BUDGET).verify(TOPIC, KEY, VALUE, headers)
    # Same key, same bytes, the other scheme's header names: the domain still differs.
    renamed = [(SIGNATURE_HEADER, headers[0][1]), (KEY_ID_HEADER, headers[1][1])]
    with pytest.raises(UnverifiedError, match="does not verify"):
        verifier().verify(TOPIC, KEY, VALUE, renamed)
    with pytest.raises(UnverifiedError, match="not signed by tenant"):
        Verifier(verifier().keys, TENANT_REQUEST).verify(TOPIC, KEY, VALUE, headers)


def test_each_failure_names_its_reason_in_one_word() -> None:
    """Readers count rejections by reason (a metrics label): one of four fixed words."""
    signed = signer().headers(TOPIC, KEY, VALUE)
    cases = {
        "unsigned": [],
        "malformed": [(SIGNATURE_HEADER, b"not base64!"), (KEY_ID_HEADER, signed[1][1])],
        "unknown_key": signer(OTHER_PRIVATE).headers(TOPIC, KEY, VALUE),
        "bad_signature": signer().headers(TOPIC, KEY, VALUE + b"!"),
    }
    for expected, headers in cases.items():
        with pytest.raises(UnverifiedError) as caught:
            verifier().verify(TOPIC, KEY, VALUE, headers)
        assert caught.value.reason == expected, expected
    with pytest.raises(UnverifiedError) as unnamed:
        verifier().verify(TOPIC, KEY, VALUE, signed[:1])
    assert unnamed.value.reason == "malformed"
