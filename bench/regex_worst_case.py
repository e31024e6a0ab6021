"""Time guard's recognizers, the injection patterns and contract regex rules on worst-case input.

Each case is a text built to make a backtracking engine work hard: a keyword followed
by a long run of whitespace, a long run of one character, alternating separators,
and inputs that trigger nested quantifiers. Prints seconds per (target, case), the
slowest first, so a quadratic pattern stands out.

    PYTHONPATH=. python bench/regex_worst_case.py [--size 16000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from processors.guard import (
    encoded,
    evasion,
    injection,
    normalize,
    person_scripts,
    recognizers,
    secrets,
)
from processors.guard.text_recognizer import LANGUAGE
from streams.contracts.linear_regex import compile_linear

ROOT = Path(__file__).resolve().parents[1]


def cases(size: int) -> dict[str, str]:
    """The pathological inputs, each about ``size`` characters long."""
    return {
        "token+spaces": "token" + " " * size,
        "password+spaces": "password" + " " * size + "x",
        "dear+spaces": "Dear" + " " * size + ",",
        "my name is+spaces": "my name" + " " * size + "is",
        "repeated a": "a" * size,
        "repeated A": "A" * size,
        "capitalised words": "Ab " * (size // 3),
        "alternating .-": "a.b-" * (size // 4),
        "spaced letters": "a " * (size // 2),
        "base64-like": "QUFB" * (size // 4),
        "nested ignore": "ignore " * (size // 7),
        "ignore+spaces": "ignore all" + " " * size + "of",
        "digits and dashes": "1-" * (size // 2),
        "digits and spaces": "1 " * (size // 2),
        "dotted digits": "1." * (size // 2),
        "at signs": "a@" * (size // 2),
        "digit groups": "4111 " * (size // 5),
        "spelled dots": "a dot " * (size // 6),
        "spelled at and dots": "a at b dot " * (size // 11),
        "bracketed dots": "1[.]" * (size // 4),
        "letters and digits": "de89" * (size // 4),
        "zero-width digits": "1\u200b" * (size // 2),
        "full-width digits": "\uff11 " * (size // 2),
        # detect-secrets' assignment patterns (`key = value`, `://user:pass@`).
        "keyword+equals": "ibm_cloud_iam_key" + "=" * size,
        "password+quote": 'password = "' + "a" * size,
        "url userinfo": "://" + "a:" * (size // 2),
        "eyJ dots": "eyJ" + "a." * (size // 2),
        # Encoded tokens: one long token, and many short ones that decode to text.
        "long base64": "YWJj" * (size // 4),
        "many base64 tokens": "YWJjZGVmZ2hpamtsbW5vcHFy " * (size // 25),
        # Names: cues and scripts.
        "contact+names": "contact maria " * (size // 14),
        "cyrillic capitals": "Мария " * (size // 6),
        "han run": "王" * size,
        "hangul words": "김민준 " * (size // 4),
        "pem begins": "-----BEGIN RSA PRIVATE KEY-----" * (size // 31),
    }


def targets() -> dict[str, Callable[[str], object]]:
    """Each recognizer, each injection pattern and each contract rule, as a callable."""
    out: dict[str, Callable[[str], object]] = {}
    for recognizer in (
        recognizers.AssignedSecretRecognizer(),
        recognizers.PersonCueRecognizer(),
        recognizers.GivenNameRecognizer(),
        recognizers.VendorSecretRecognizer(),
        person_scripts.LowerCaseNameRecognizer(),
        person_scripts.FoldedNameRecognizer(),
        person_scripts.ScriptNameRecognizer(),
        secrets.DetectSecretsRecognizer(),
        secrets.StatedSecretRecognizer(),
        secrets.PemBlockRecognizer(),
    ):
        out[recognizer.name] = lambda text, r=recognizer: r.analyze(text, [], None)
    for own in evasion.evasion_recognizers(lambda address: True):
        out[own.name] = lambda text, r=own: r.analyze(text, [], None)
    out["normalize"] = normalize.normalize
    # Presidio's own recognizers (Python's re inside): bounded by max_input_chars only.
    for presidio in (
        recognizers.OfflineEmailRecognizer(supported_language=LANGUAGE),
        recognizers.PrefilteredPhoneRecognizer(supported_language=LANGUAGE),
        recognizers.CreditCardRecognizer(supported_language=LANGUAGE),
        recognizers.IbanRecognizer(supported_language=LANGUAGE),
        recognizers.UsSsnRecognizer(supported_language=LANGUAGE),
        recognizers.IpRecognizer(supported_language=LANGUAGE),
    ):
        entities = presidio.supported_entities
        out[f"presidio:{presidio.name}"] = lambda text, r=presidio, e=entities: r.analyze(
            text, e, None
        )
    # Decodes tokens and runs the text recognizers (Presidio's among them) on the result.
    inner = [
        r for r in recognizers.build_registry().registry.recognizers if r.name != "SpacyRecognizer"
    ]
    inner = [r for r in inner if not isinstance(r, encoded.EncodedTokenRecognizer)]
    encoded_tokens = encoded.EncodedTokenRecognizer(inner)
    out[encoded_tokens.name] = lambda text: encoded_tokens.analyze(
        text, list(encoded_tokens.supported_entities), None
    )
    patterns = injection.PatternSet.load(ROOT / "schemas/guard/injection_patterns.yaml")
    for pattern in patterns.patterns:
        out[f"injection:{pattern.id}"] = lambda text, p=pattern: p.search(text)
    out["injection:views"] = injection.views
    for path in sorted((ROOT / "schemas/contracts").glob("*.yaml")):
        fields = (yaml.safe_load(path.read_text()) or {}).get("fields", {}) or {}
        for name, rules in fields.items():
            if isinstance(rules, dict) and rules.get("regex"):
                out[f"contract:{path.stem}.{name}"] = _searcher(rules["regex"])
    return out


def _searcher(pattern: str) -> Callable[[str], object]:
    """The search a contract's regex rule runs (streams/contracts/rules.py)."""
    return compile_linear(pattern).search  # type: ignore[no-any-return]


def main() -> None:
    """Print the timings, slowest first."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=16_000)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    timings = []
    for target, run in targets().items():
        for case, text in cases(args.size).items():
            started = time.perf_counter()
            run(text)
            timings.append((time.perf_counter() - started, target, case))
    timings.sort(reverse=True)
    for seconds, target, case in timings[: args.top]:
        print(f"{seconds:8.3f} s  {target:40s} {case}")


if __name__ == "__main__":
    main()
