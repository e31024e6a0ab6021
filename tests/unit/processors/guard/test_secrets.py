"""Credentials through detect-secrets' plugins, and private keys redacted whole."""

from __future__ import annotations

import time

import pytest

from processors.guard.engine import GuardItem
from processors.guard.pii import PresidioAnalyzer
from processors.guard.policy import Entity
from processors.guard.secrets import (
    OVERLAP,
    WINDOW,
    DetectSecretsRecognizer,
    PemBlockRecognizer,
    StatedSecretRecognizer,
    detectors,
    windows,
)
from tests.support.guard import EngineFactory, make_policy

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
KEY_BODY = "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naIbs"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----"


@pytest.fixture(scope="module")
def recognizer() -> DetectSecretsRecognizer:
    return DetectSecretsRecognizer()


def values(recognizer: DetectSecretsRecognizer, text: str) -> list[str]:
    return sorted(text[r.start : r.end] for r in recognizer.analyze(text, ["API_KEY"], None))


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("clone https://deploy:S3cr3tPassw0rd@git.example.com/app.git", "S3cr3tPassw0rd"),
        ('db_password = "hunter2-is-weak"', "hunter2-is-weak"),
        (f"Authorization: Bearer {JWT} please", JWT),
        ("pat glpat-abcdefghij1234567890 in ci", "glpat-abcdefghij1234567890"),
        (
            "sendgrid SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG ok",
            "SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        ),
        ("artifactory AKCp5bueTFpfypHqQmJ2Y3dCx0 key", "AKCp5bueTFpfypHqQmJ2Y3dCx0"),
        ("bot 1234567890:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0 token", None),
        ("twilio SK0123456789abcdef0123456789abcdef here", "SK0123456789abcdef0123456789abcdef"),
    ],
)
def test_detect_secrets_plugins_report_the_value_alone(
    recognizer: DetectSecretsRecognizer, text: str, secret: str | None
) -> None:
    found = values(recognizer, text)
    if secret is None:  # Telegram: the whole `id:token`
        assert found == ["1234567890:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"]
    else:
        assert found == [secret]


@pytest.mark.parametrize(
    "text",
    [
        "APPLICATIONS are due on Friday",
        "commit 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 fixed it",
        "request 123e4567-e89b-12d3-a456-426614174000 failed",
        'password = "${DB_PASSWORD}"',
        'password = "<your password>"',
        "see https://example.com/docs#setup for details",
        "the token expired, log in again",
    ],
)
def test_benign_lookalikes_are_not_credentials(
    recognizer: DetectSecretsRecognizer, text: str
) -> None:
    assert values(recognizer, text) == []


def test_a_password_in_a_url_is_a_credential_not_an_email(analyzer: PresidioAnalyzer) -> None:
    text = "clone https://deploy:S3cr3tPassw0rd@git.example.com/app.git"
    [found] = analyzer.analyze_batch([text], set(Entity), 0.4)
    assert [(d.entity_type, text[d.start : d.end]) for d in found if d.entity_type != "PERSON"] == [
        ("API_KEY", "S3cr3tPassw0rd")
    ]


def test_some_plugin_patterns_run_on_re2_and_the_others_in_windows() -> None:
    patterns = detectors()
    assert any(d.linear is not None for d in patterns)
    assert any(d.linear is None for d in patterns)
    assert "IbmCloudIamDetector" not in {d.plugin for d in patterns}


def test_windows_cover_each_line_with_overlap() -> None:
    line = "x" * (3 * WINDOW)
    pieces = list(windows("short\n" + line))
    assert pieces[0] == (0, "short\n")
    assert all(len(piece) <= WINDOW for _, piece in pieces)
    starts = [offset for offset, _ in pieces[1:]]
    assert starts[1] - starts[0] == WINDOW - OVERLAP
    assert pieces[-1][0] + len(pieces[-1][1]) == len("short\n" + line)


def test_a_secret_past_the_first_window_is_found(recognizer: DetectSecretsRecognizer) -> None:
    text = "x " * 2_000 + 'api_password = "Zq8vLw2mPx9kRt4n"'
    assert values(recognizer, text) == ["Zq8vLw2mPx9kRt4n"]


@pytest.mark.parametrize(
    "text",
    [
        "password" + " " * 100_000,
        'password = "' + "a" * 100_000,
        "ibm_cloud_iam_key" + "=" * 100_000,
        "://" + "a:" * 50_000,
    ],
)
def test_plugins_are_bounded_on_pathological_input(
    recognizer: DetectSecretsRecognizer, text: str
) -> None:
    started = time.perf_counter()
    recognizer.analyze(text, ["API_KEY"], None)
    assert time.perf_counter() - started < 2.0


def test_a_private_key_is_one_finding_from_begin_to_end() -> None:
    text = f"here is my key\n{PEM}\nthanks"
    [found] = PemBlockRecognizer().analyze(text, ["API_KEY"], None)
    assert text[found.start : found.end] == PEM


def test_a_private_key_without_its_end_line_runs_to_the_end() -> None:
    text = f"key:\n-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_BODY}\nmore body"
    [found] = PemBlockRecognizer().analyze(text, ["API_KEY"], None)
    assert text[found.start :].startswith("-----BEGIN") and found.end == len(text)


def test_a_blocked_private_key_leaves_nothing_of_its_body(
    analyzer: PresidioAnalyzer, make_engine: EngineFactory
) -> None:
    engine = make_engine(analyzer, make_policy(API_KEY="block"))
    [result] = engine.inspect_batch([GuardItem("r", "t", f"deploy with\n{PEM}\nok")])
    assert result.blocked
    assert result.text == "deploy with\n<API_KEY>\nok"
    assert "MIIE" not in result.text and "aIbs" not in result.text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("my password is bt4Gdi4MvWtk3Z, can you reset it?", "bt4Gdi4MvWtk3Z"),
        ("my password is xo#Fyv5z%?RFF?ljV1S, can you reset it?", "xo#Fyv5z%?RFF?ljV1S"),
        ("the api key is 'Zx81-kLm0-Qr7t-Vb2w'.", "Zx81-kLm0-Qr7t-Vb2w"),
        ("pwd=0fGeyg*!IA3vdP4uNb?Zu", "0fGeyg*!IA3vdP4uNb?Zu"),
        ("password: qIdNQa3%VpS1Ik&r$*luFw", "qIdNQa3%VpS1Ik&r$*luFw"),
        ("password: see the vault entry", None),
        ("the password is expired, please reset it", None),
        ("password is please-reset", None),
        ("my password was changed yesterday", None),
        ("the token is ABCDEFGHIJKL", None),
    ],
)
def test_a_secret_stated_in_prose_is_found_when_it_looks_generated(
    text: str, secret: str | None
) -> None:
    found = [text[r.start : r.end] for r in StatedSecretRecognizer().analyze(text, [], None)]
    assert found == ([secret] if secret else [])
