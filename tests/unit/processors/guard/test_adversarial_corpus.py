"""bench/adversarial_corpus.py: enough valid values per trick, exact spans, a sound leak rule."""

from __future__ import annotations

import base64
import importlib.util
import itertools
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import phonenumbers
import pytest

from streams.settings import PROJECT_ROOT


def load_corpus() -> ModuleType:
    path = PROJECT_ROOT / "bench" / "adversarial_corpus.py"
    spec = importlib.util.spec_from_file_location("adversarial_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ac = load_corpus()
RECORDS = ac.generate()
PLANTED = [(r, s) for r in RECORDS for s in r.spans]


def test_sizes() -> None:
    per_trick = Counter(r.trick for r, _ in PLANTED)
    assert len(PLANTED) >= 300
    assert set(per_trick) == set(ac.TRICKS)
    assert min(per_trick.values()) >= 20, per_trick
    assert sum(r.benign for r in RECORDS) >= 100
    assert len({r.id for r in RECORDS}) == len(RECORDS)


def test_benign_records_plant_nothing_and_others_plant_something() -> None:
    for record in RECORDS:
        assert bool(record.spans) != record.benign, record


def test_spans_point_at_the_planted_values() -> None:
    for record, span in PLANTED:
        assert record.text[span.start : span.end] == span.value, record.id
        assert span.value.strip() == span.value, record.id
    for record in RECORDS:
        ends = sorted((s.start, s.end) for s in record.spans)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends)), record.id


def test_checksums_and_formats_are_valid() -> None:
    for record, span in PLANTED:
        value = span.canonical
        if span.type == "CREDIT_CARD":
            assert value.isdigit() and len(value) in (15, 16) and ac.luhn_ok(value), record.id
        elif span.type == "IBAN_CODE":
            assert value == value.upper() and ac.iban_ok(value), record.id
            assert value.lower() in span.value.replace(" ", "") or record.trick != "lowercase_iban"
        elif span.type == "US_SSN":
            assert ac.ssn_ok(value), record.id
        elif span.type == "PHONE_NUMBER":
            assert phonenumbers.is_valid_number(phonenumbers.parse("+" + value)), record.id
        elif span.type == "EMAIL_ADDRESS":
            assert re.fullmatch(r"[a-z0-9._]+@[a-z.]+\.(com|org|net)", value), record.id
        elif span.type == "IP_ADDRESS":
            assert all(0 <= int(o) <= 255 for o in value.split(".")), record.id
        elif span.type == "PERSON":
            assert len(span.parts) == 2, record.id
        if span.encoding == "base64":
            assert base64.b64decode(span.value).decode() == value, record.id
        elif span.encoding == "hex":
            assert bytes.fromhex(span.value).decode() == value, record.id
        if record.trick == "private_key":
            assert span.value.startswith("-----BEGIN ") and span.value.endswith("KEY-----")
            assert ac.pem_body(span.value) == value


def test_checks_reject_invalid_values() -> None:
    assert ac.luhn_ok("4111111111111111") and not ac.luhn_ok("4111111111111112")
    assert ac.iban_ok("GB82 WEST 1234 5698 7654 32")
    assert not ac.iban_ok("GB82 WEST 1234 5698 7654 33")
    assert ac.ssn_ok("536-22-1234")
    for bad in ("000-12-3456", "666-12-3456", "912-12-3456", "536-00-1234", "536-22-0000"):
        assert not ac.ssn_ok(bad), bad


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    assert ac.generate(7) == ac.generate(7)
    assert ac.generate(7) != ac.generate(8)
    out = tmp_path / "corpus.jsonl"
    assert ac.main(["--out", str(out), "--seed", "7"]) == 0
    assert ac.read_jsonl(out) == ac.generate(7)


def test_the_planted_text_leaks_and_the_redacted_text_does_not() -> None:
    # The leak rule must see each value in its own record (however it is disguised)
    # and must not be set off by the words around it once every span is replaced.
    for record, span in PLANTED:
        assert ac.leaked(span, record.text), (record.id, record.text)
        redacted = record.text
        for other in sorted(record.spans, key=lambda s: -s.start):
            redacted = redacted[: other.start] + f"<{other.type}>" + redacted[other.end :]
        assert not ac.leaked(span, redacted), (record.id, redacted)


@pytest.mark.parametrize(
    ("entity", "canonical", "parts", "output", "leaks"),
    [
        # Masking that keeps the last four digits of a card is what the policy asks for.
        ("CREDIT_CARD", "4111111111111111", (), "card ************1111", False),
        ("CREDIT_CARD", "4532015112830366", (), "card 4532 **** **** 0366", False),
        ("CREDIT_CARD", "4532015112830366", (), "card 45320 **** 0366", True),
        ("CREDIT_CARD", "4532015112830366", (), "card 4532.0151.1283.0366", True),
        ("US_SSN", "536-22-1234", (), "ssn ***-**-1234", True),
        ("US_SSN", "536-22-1234", (), "ssn <US_SSN>", False),
        ("PHONE_NUMBER", "12127364821", (), "call (***) ***-4821", False),
        ("PHONE_NUMBER", "12127364821", (), "call ٢١٢ ٧٣٦ ****", True),
        ("IP_ADDRESS", "83.142.7.19", (), "from 83.142.7.<IP>", True),
        ("IP_ADDRESS", "83.142.7.19", (), "from <IP>.7.19", False),
        ("IP_ADDRESS", "83.142.7.19", (), "from 183.142.7.190", False),
        ("IBAN_CODE", "DE89370400440532013000", (), "to de89 3704 <IBAN>", True),
        ("IBAN_CODE", "DE89370400440532013000", (), "to DE89 <IBAN>", False),
        ("EMAIL_ADDRESS", "maria.garcia@example.com", (), "mail garcia at example", True),
        ("EMAIL_ADDRESS", "maria.garcia@example.com", (), "mail <EMAIL> at example dot com", False),
        ("PERSON", "Olivia Miller", ("olivia", "miller"), "ask MILLER about it", True),
        ("PERSON", "Olivia Miller", ("olivia", "miller"), "ask <PERSON> about millers", False),
        ("PERSON", "王伟明", ("伟明", "王"), "请把合同发给<PERSON>王。", False),
        ("PERSON", "王伟明", ("伟明", "王"), "请把合同发给伟明。", True),
        ("API_KEY", "ghp_abcdefghijklmnop", (), "token ghp_<API_KEY>", False),
        ("API_KEY", "ghp_abcdefghijklmnop", (), "token <API_KEY>ijklmnop", True),
    ],
)
def test_leak_rule(
    entity: str, canonical: str, parts: tuple[str, ...], output: str, leaks: bool
) -> None:
    assert ac.leaked_plain(entity, canonical, parts, output) is leaks


def test_disguises_are_seen_through_by_the_leak_rule() -> None:
    span = ac.Span(0, 0, "CREDIT_CARD", "", "4532015112830366")
    # Full-width 4532, a zero-width space, 0151, a soft hyphen, 1283.
    assert ac.leaked(span, "\uff14\uff15\uff13\uff12\u200b0151\u00ad1283 ****")
    assert not ac.leaked(span, "\uff14\uff15\uff13\uff12 **** **** 0366")
    encoded = ac.Span(0, 0, "US_SSN", "NTM2LTIyLTEyMzQ=", "536-22-1234", encoding="base64")
    assert ac.leaked(encoded, "decode NTM2LTIyLTEy<REDACTED>")
    assert not ac.leaked(encoded, "decode <US_SSN>")


def test_bench_counts_blocked_records_as_removed_and_leaks_as_misses() -> None:
    spec = importlib.util.spec_from_file_location(
        "guard_adversarial", PROJECT_ROOT / "bench" / "guard_adversarial.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    card = "4111111111111111"
    key, secret = "AKIAABCDEFGHIJKLMNOP", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12"
    aws = f"key {key} secret {secret}"
    records = [
        ac.Record(
            "a", "plain", "credit_card", f"card {card}",
            (ac.Span(5, 21, "CREDIT_CARD", card, card),),
        ),
        ac.Record(
            "b", "credentials", "aws", aws,
            (ac.Span(4, 24, "API_KEY", key, key), ac.Span(32, 72, "API_KEY", secret, secret)),
        ),
        ac.Record("c", "benign", "phrase", "hello"),
    ]  # fmt: skip
    assert aws[4:24] == key and aws[32:72] == secret
    presidio = bench.Side("presidio", ["card <CREDIT_CARD>", aws, "hello"], [False] * 3, 1, 1)
    guard = bench.Side(
        "guard", [f"card {card}", "key <API_KEY> ...", "hello"], [False, True, False], 1, 1
    )
    tallies, misses = bench.score(records, [presidio, guard], lambda r: r.trick)
    assert set(tallies) == {"plain", "credentials"}
    plain, creds = tallies["plain"], tallies["credentials"]
    assert (plain.planted, plain.removed["presidio"], plain.removed["guard"]) == (1, 1, 0)
    assert (creds.planted, creds.removed["presidio"], creds.removed["guard"]) == (2, 0, 2)
    assert creds.blocked["guard"] == 2 and creds.blocked["presidio"] == 0
    assert [(r.id, v) for r, v in misses["guard"]] == [("a", card)]
    assert len(misses["presidio"]) == 2
    _, data = bench.table(tallies, "trick")
    assert data["all"] == {
        "planted": 3, "presidio_removed": 1, "guard_removed": 2, "guard_blocked": 2
    }  # fmt: skip
