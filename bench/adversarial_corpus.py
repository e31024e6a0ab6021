"""An adversarial PII corpus: values planted behind evasion tricks, and benign look-alikes.

Each record is one prompt. A record of a trick holds one or more planted values,
each with its exact span in the text; a benign record (trick ``benign``) holds
none but looks like the tricks (version strings, git hashes, base64 of plain
text, words in other scripts, full-width arithmetic...). Every value is
synthetic: names come from lists of common names, numbers are random and valid
for their type (card numbers pass Luhn, IBANs mod-97, SSNs the SSA's rules,
phone numbers are US numbers with a real area code and a valid exchange).

Tricks (the ``variant`` field says which form of a trick a record uses):

* ``plain``: ordinary e-mail, card, phone and English name (the control);
* ``invisible``: a zero-width space, ZWNJ, ZWJ, word joiner, soft hyphen or BOM
  inserted inside card numbers, SSNs, IBANs, IP addresses and e-mails;
* ``fullwidth``: full-width digits (cards, SSNs, phones, IPs) and the full-width
  ``＠`` in e-mails;
* ``other_digits``: Arabic-Indic, Persian and Devanagari digits;
* ``separators``: dots, slashes and runs of spaces between the groups of cards and SSNs;
* ``spelled_email``: ``maria dot garcia at example dot com``;
* ``bracketed_email``: ``maria.garcia[at]example[dot]com`` and its variants;
* ``lowercase_iban``: IBANs in lower case, grouped or not;
* ``lowercase_name``: an English given name and surname in lower case;
* ``nonlatin_name``: names in Cyrillic, Arabic, Chinese, Japanese and Vietnamese;
* ``credentials``: passwords in URLs, AWS key ids and secret keys, GitHub and
  Slack tokens, JWTs, ``password: ...`` with a high-entropy value;
* ``private_key``: a PEM private-key block (the whole block is the planted value);
* ``encoded``: base64 or hex of an e-mail, a card number or an SSN.

A span's ``value`` is the text as planted (``text[start:end] == value``);
``canonical`` is the plain value it hides (the card's digits, the decoded
e-mail, the secret); ``parts`` are a name's given name and surname;
``encoding`` is ``base64`` or ``hex`` for the ``encoded`` trick.

When is a planted value removed? :func:`leaked` decides, on an output text
normalised first (:func:`normalise`: invisible format characters deleted, NFKC,
every Unicode decimal digit mapped to its ASCII digit, case folded except for
secrets and base64). A value has leaked when:

* CREDIT_CARD, PHONE_NUMBER: a run of 5 consecutive digits of the value appears in
  a digit group of the output (digits joined across at most 3 spaces, dots,
  slashes or hyphens). 5, not 4: masking that keeps the last 4 digits is what
  the policy asks for;
* US_SSN: the same with 4 digits (the policy tags SSNs; the last four are the
  part that identifies);
* IBAN_CODE: a run of 6 consecutive characters of the IBAN appears in the
  output's letters and digits with everything else removed;
* IP_ADDRESS: three consecutive octets of the address remain, dotted;
* EMAIL_ADDRESS: a letters-only component (3+ letters) of the local part remains
  as a word of the output (words split at non-letters), e.g. ``garcia`` of
  ``maria.garcia``; the domain alone identifies no one;
* PERSON: the given name or the surname remains as a word; for names written
  without spaces (Chinese, Japanese), two consecutive characters of the name remain;
* API_KEY (credentials, private keys): a run of 8 consecutive characters of the
  secret (of a PEM block: of its base64 body) remains in the output with all
  whitespace removed;
* an encoded value: a run of 8 consecutive characters of the encoded token
  remains (hex compared case-insensitively), or the decoded value leaked by the
  rule of its type.

Run (deterministic for a seed):

    .venv/bin/python bench/adversarial_corpus.py --out /tmp/adversarial.jsonl [--seed N]
"""

# ruff: noqa: RUF001, RUF002
# (Full-width forms, other scripts and look-alike characters are the point of this corpus.)
from __future__ import annotations

import argparse
import base64
import json
import re
import string
import sys
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random

DEFAULT_SEED = 20261201

TRICKS = (
    "plain",
    "invisible",
    "fullwidth",
    "other_digits",
    "separators",
    "spelled_email",
    "bracketed_email",
    "lowercase_iban",
    "lowercase_name",
    "nonlatin_name",
    "credentials",
    "private_key",
    "encoded",
)
BENIGN = "benign"


@dataclass(frozen=True)
class Span:
    """One planted value: ``text[start:end] == value``."""

    start: int
    end: int
    type: str
    value: str
    canonical: str
    parts: tuple[str, ...] = ()
    encoding: str | None = None


@dataclass(frozen=True)
class Record:
    id: str
    trick: str
    variant: str
    text: str
    spans: tuple[Span, ...] = field(default=())

    @property
    def benign(self) -> bool:
        return self.trick == BENIGN

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["benign"] = self.benign
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> Record:
        spans = tuple(
            Span(**{**s, "parts": tuple(s.get("parts", ()))})  # type: ignore[dict-item]
            for s in obj["spans"]  # type: ignore[attr-defined]
        )
        return cls(str(obj["id"]), str(obj["trick"]), str(obj["variant"]), str(obj["text"]), spans)


# -- name lists (common names; no real person is meant) ------------------------------------
# English given names and surnames that are not also ordinary English words, so that a
# name left in a text is never confused with the words around it.
GIVEN = (
    "olivia", "liam", "amelia", "noah", "sophia", "ethan", "isabella", "lucas", "harper",
    "evelyn", "caleb", "abigail", "owen", "madison", "wyatt", "scarlett", "nathan", "chloe",
    "daniel", "emily", "jacob", "hannah", "samuel", "natalie",
)  # fmt: skip
SURNAMES = (
    "johnson", "williams", "miller", "davis", "garcia", "rodriguez", "martinez", "hernandez",
    "lopez", "gonzalez", "wilson", "anderson", "thompson", "jackson", "harris", "robinson",
    "ramirez", "nguyen", "patel", "kowalski", "schmidt", "murphy", "sullivan", "fischer",
)  # fmt: skip
# (given, surname) per script; display order is the script's own.
CYRILLIC = (
    (("Алексей", "Дмитрий", "Сергей", "Андрей", "Михаил"),
     ("Иванов", "Смирнов", "Кузнецов", "Соколов", "Морозов")),
    (("Наталья", "Ольга", "Татьяна", "Екатерина", "Ирина"),
     ("Иванова", "Смирнова", "Кузнецова", "Соколова", "Морозова")),
)  # fmt: skip
ARABIC_GIVEN = ("محمد", "أحمد", "فاطمة", "خالد", "يوسف", "مريم", "عمر", "ليلى")
ARABIC_SURNAMES = ("الحسن", "حداد", "منصور", "الخطيب", "نصار", "الشامي", "القاسم", "الزين")
CHINESE_SURNAMES = ("王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周")
CHINESE_GIVEN = ("伟明", "秀英", "志强", "丽娜", "建华", "海燕", "俊杰", "晓东", "雪梅", "子涵")
JAPANESE_SURNAMES = ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤")
JAPANESE_GIVEN = ("花子", "太郎", "陽子", "健一", "美咲", "翔太", "由美", "大輔", "直子", "拓也")
VIET_SURNAMES = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Đặng", "Bùi")
VIET_MIDDLE = ("Văn", "Thị", "Đức", "Ngọc", "Quốc")
VIET_GIVEN = ("Thảo", "Hùng", "Dũng", "Hương", "Phương", "Tuấn", "Hải", "Linh", "Quang", "Trang")

EMAIL_DOMAINS = (
    "example.com", "example.org", "example.net", "mail.example.com", "eu.example.org",
)  # fmt: skip
# US area codes in service; exchanges are drawn from 200-999 without N11 and 555.
AREA_CODES = ("212", "312", "415", "617", "206", "303", "512", "646", "718", "773", "404", "602")

INVISIBLE = {
    "zwsp": "\u200b",
    "zwnj": "\u200c",
    "zwj": "\u200d",
    "word_joiner": "\u2060",
    "soft_hyphen": "\u00ad",
    "bom": "\ufeff",
}
DIGIT_SCRIPTS = {"arabic_indic": 0x0660, "persian": 0x06F0, "devanagari": 0x0966}


# -- valid random values -----------------------------------------------------------------
def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable")


def card_number(rng: Random) -> str:
    """A Luhn-valid Visa, Mastercard, Amex or Discover number (digits only)."""
    prefix, length = rng.choice((("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)))
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return _luhn_complete(body)


def group_card(digits: str, sep: str = " ") -> str:
    sizes = (4, 6, 5) if len(digits) == 15 else (4, 4, 4, 4)
    out, at = [], 0
    for size in sizes:
        out.append(digits[at : at + size])
        at += size
    return sep.join(out)


def ssn_ok(ssn: str) -> bool:
    """The SSA's rules: area not 000, 666 or 9xx, group not 00, serial not 0000."""
    digits = ssn.replace("-", "")
    if len(digits) != 9 or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (
        area not in ("000", "666")
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
        and len(set(digits)) > 1
        and digits not in ("123456789", "078051120", "219099999")
    )


def ssn(rng: Random) -> str:
    """A valid SSN as ``AAA-GG-SSSS``."""
    while True:
        value = f"{rng.randint(1, 899):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        if ssn_ok(value):
            return value


IBAN_FORMATS = {  # country: BBAN as (kind, length) runs; n = digit, a = upper-case letter
    "DE": (("n", 18),),
    "GB": (("a", 4), ("n", 14)),
    "NL": (("a", 4), ("n", 10)),
    "FR": (("n", 23),),
    "ES": (("n", 20),),
    "IT": (("a", 1), ("n", 22)),
}


def iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def iban(rng: Random) -> str:
    """A mod-97-valid IBAN of one of a few countries, compact and upper case."""
    country = rng.choice(sorted(IBAN_FORMATS))
    bban = "".join(
        rng.choice(string.digits if kind == "n" else string.ascii_uppercase)
        for kind, length in IBAN_FORMATS[country]
        for _ in range(length)
    )
    number = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def group4(value: str) -> str:
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4))


def phone(rng: Random) -> tuple[str, str]:
    """A valid US number: (display form, E.164 digits)."""
    area = rng.choice(AREA_CODES)
    while True:
        exchange = f"{rng.randint(200, 999)}"
        if exchange[1:] != "11" and exchange != "555":
            break
    line = f"{rng.randint(0, 9999):04d}"
    form = rng.choice(("({a}) {e}-{l}", "{a}-{e}-{l}", "+1 {a} {e} {l}", "{a}.{e}.{l}"))
    return form.format(a=area, e=exchange, l=line), f"1{area}{exchange}{line}"


def ip_address(rng: Random) -> str:
    first = rng.choice([n for n in range(11, 224) if n not in (100, 127, 169, 172, 192)])
    return ".".join(
        str(n) for n in (first, rng.randint(0, 254), rng.randint(0, 254), rng.randint(1, 254))
    )


def english_name(rng: Random) -> tuple[str, str]:
    return rng.choice(GIVEN), rng.choice(SURNAMES)


def email(rng: Random) -> tuple[str, str]:
    """An e-mail built from a name: (address, domain)."""
    given, surname = english_name(rng)
    local = rng.choice(
        (
            f"{given}.{surname}",
            f"{given}_{surname}",
            f"{given[0]}{surname}",
            f"{given}.{surname}{rng.randint(1, 99)}",
            f"{surname}.{given}",
        )
    )
    domain = rng.choice(EMAIL_DOMAINS)
    return f"{local}@{domain}", domain


def token(rng: Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


ALNUM = string.ascii_letters + string.digits


def secret_value(rng: Random) -> str:
    """A high-entropy password: letters, digits and (half the time) symbols."""
    alphabet = ALNUM + ("!#$%&*?" if rng.random() < 0.5 else "")
    while True:
        value = token(rng, alphabet, rng.randint(14, 22))
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- transformations -----------------------------------------------------------------------
def insert_invisible(value: str, char: str, rng: Random) -> str:
    """``char`` at 1-3 inner positions (never first or last) of ``value``."""
    positions = sorted(rng.sample(range(1, len(value)), k=min(rng.randint(1, 3), len(value) - 1)))
    out, last = [], 0
    for pos in positions:
        out.append(value[last:pos])
        out.append(char)
        last = pos
    out.append(value[last:])
    return "".join(out)


def fullwidth(value: str, *, letters: bool = False) -> str:
    """ASCII digits (and ``@``, ``.``; letters too if asked) as their full-width forms."""
    out = []
    for ch in value:
        if ch.isdigit() or ch in "@." or (letters and ch.isascii() and ch.isalpha()):
            out.append(chr(ord(ch) + 0xFEE0))
        else:
            out.append(ch)
    return "".join(out)


def script_digits(value: str, zero: int) -> str:
    return "".join(chr(zero + int(ch)) if ch.isdigit() else ch for ch in value)


# -- templates ---------------------------------------------------------------------------
# No template holds a digit or a name, so nothing but the planted value can leak.
TEMPLATES = {
    "CREDIT_CARD": (
        "Please charge my card {v} for the renewal.",
        "The card number is {v}, expiry next spring.",
        "card: {v}",
        "Can you check why {v} was declined at checkout?",
        "I paid with {v} but the order never arrived.",
    ),
    "US_SSN": (
        "My social security number is {v}.",
        "SSN {v} - please update the tax form.",
        "For the background check, the applicant's SSN is {v}.",
        "ssn: {v}",
    ),
    "PHONE_NUMBER": (
        "Call me back on {v} after lunch.",
        "My phone number is {v}.",
        "You can reach the warehouse at {v}.",
        "tel {v}",
    ),
    "IBAN_CODE": (
        "Please wire the refund to {v}.",
        "My IBAN is {v}, the account is in my name.",
        "iban: {v}",
        "Send the deposit to account {v} before the end of the month.",
    ),
    "IP_ADDRESS": (
        "The login attempts came from {v}.",
        "Whitelist {v} on the firewall, please.",
        "ssh into {v} and restart the service",
        "client ip {v} keeps getting rate limited",
    ),
    "EMAIL_ADDRESS": (
        "Send the invoice to {v} please.",
        "You can contact me at {v}.",
        "email: {v}",
        "Forward the report to {v} before the meeting.",
    ),
    "PERSON": (
        "Please forward the contract to {v} before the meeting.",
        "I spoke with {v} yesterday about the refund.",
        "The ticket was opened by {v} last week.",
        "Can you ask {v} to review the draft?",
        "{v} will join the call tomorrow.",
    ),
}
NATIVE_TEMPLATES = {
    "cyrillic": ("Меня зовут {v}, помогите с заказом.", "Передайте договор {v} до пятницы."),
    "arabic": ("اسمي {v} وأحتاج إلى مساعدة.", "يرجى إرسال الفاتورة إلى {v} اليوم."),
    "chinese": ("请把合同发给{v}。", "我叫{v}，我的订单还没到。"),
    "japanese": ("{v}さんに連絡してください。", "担当者は{v}です。"),
    "vietnamese": ("Tôi tên là {v}, cần hỗ trợ đơn hàng.", "Vui lòng gửi hóa đơn cho {v}."),
}


@dataclass
class _Builder:
    """Numbers records and places spans."""

    rng: Random
    records: list[Record] = field(default_factory=list)

    def add(self, trick: str, variant: str, template: str, *planted: Planted) -> None:
        """``template`` with ``{v0}``, ``{v1}``... (or ``{v}``) replaced by the planted values."""
        text, spans = "", []
        pieces = re.split(r"(\{v\d?\})", template)
        for piece in pieces:
            match = re.fullmatch(r"\{v(\d?)\}", piece)
            if match is None:
                text += piece
                continue
            p = planted[int(match.group(1) or 0)]
            spans.append(
                Span(
                    len(text),
                    len(text) + len(p.value),
                    p.type,
                    p.value,
                    p.canonical,
                    p.parts,
                    p.encoding,
                )
            )
            text += p.value
        self.records.append(
            Record(f"adv-{len(self.records):04d}", trick, variant, text, tuple(spans))
        )

    def benign(self, variant: str, text: str) -> None:
        self.records.append(Record(f"adv-{len(self.records):04d}", BENIGN, variant, text))

    def template(self, entity: str) -> str:
        return self.rng.choice(TEMPLATES[entity])


@dataclass(frozen=True)
class Planted:
    type: str
    value: str
    canonical: str
    parts: tuple[str, ...] = ()
    encoding: str | None = None


def _card(b: _Builder) -> tuple[str, str]:
    digits = card_number(b.rng)
    return group_card(digits, b.rng.choice((" ", "-", ""))), digits


def _cycle(items: list[str], n: int) -> Iterator[tuple[int, str]]:
    for i in range(n):
        yield i, items[i % len(items)]


# -- tricks --------------------------------------------------------------------------------
def _plain(b: _Builder, n: int) -> None:
    for i in range(n):
        kind = ("EMAIL_ADDRESS", "CREDIT_CARD", "PHONE_NUMBER", "PERSON")[i % 4]
        if kind == "EMAIL_ADDRESS":
            address, _ = email(b.rng)
            p = Planted(kind, address, address)
        elif kind == "CREDIT_CARD":
            shown, digits = _card(b)
            p = Planted(kind, shown, digits)
        elif kind == "PHONE_NUMBER":
            shown, digits = phone(b.rng)
            p = Planted(kind, shown, digits)
        else:
            given, surname = english_name(b.rng)
            name = f"{given.title()} {surname.title()}"
            p = Planted(kind, name, name, (given, surname))
        b.add("plain", kind.lower(), b.template(kind), p)


def _invisible(b: _Builder, n: int) -> None:
    chars = list(INVISIBLE)
    for i, variant in _cycle(chars, n):
        kind = ("CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "EMAIL_ADDRESS")[i % 5]
        if kind == "CREDIT_CARD":
            shown, canonical = _card(b)
        elif kind == "US_SSN":
            shown = canonical = ssn(b.rng)
        elif kind == "IBAN_CODE":
            canonical = iban(b.rng)
            shown = b.rng.choice((canonical, group4(canonical)))
        elif kind == "IP_ADDRESS":
            shown = canonical = ip_address(b.rng)
        else:
            shown, _ = email(b.rng)
            canonical = shown
        value = insert_invisible(shown, INVISIBLE[variant], b.rng)
        b.add(
            "invisible",
            f"{variant}:{kind.lower()}",
            b.template(kind),
            Planted(kind, value, canonical),
        )


def _fullwidth(b: _Builder, n: int) -> None:
    for i in range(n):
        kind = ("CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IP_ADDRESS", "EMAIL_ADDRESS")[i % 5]
        variant = "digits"
        if kind == "CREDIT_CARD":
            shown, canonical = _card(b)
        elif kind == "US_SSN":
            shown = canonical = ssn(b.rng)
        elif kind == "PHONE_NUMBER":
            shown, canonical = phone(b.rng)
        elif kind == "IP_ADDRESS":
            shown = canonical = ip_address(b.rng)
        else:
            shown, _ = email(b.rng)
            canonical = shown
            letters = i % 2 == 0
            variant = "all" if letters else "at_sign"
            value = fullwidth(shown, letters=True) if letters else shown.replace("@", "＠")
            b.add(
                "fullwidth",
                f"{variant}:email_address",
                b.template(kind),
                Planted(kind, value, canonical),
            )
            continue
        value = fullwidth(shown)
        b.add(
            "fullwidth",
            f"{variant}:{kind.lower()}",
            b.template(kind),
            Planted(kind, value, canonical),
        )


def _other_digits(b: _Builder, n: int) -> None:
    scripts = list(DIGIT_SCRIPTS)
    for i, script in _cycle(scripts, n):
        kind = ("CREDIT_CARD", "US_SSN", "PHONE_NUMBER")[(i // len(scripts)) % 3]
        if kind == "CREDIT_CARD":
            shown, canonical = _card(b)
        elif kind == "US_SSN":
            shown = canonical = ssn(b.rng)
        else:
            shown, canonical = phone(b.rng)
        value = script_digits(shown, DIGIT_SCRIPTS[script])
        b.add(
            "other_digits",
            f"{script}:{kind.lower()}",
            b.template(kind),
            Planted(kind, value, canonical),
        )


def _separators(b: _Builder, n: int) -> None:
    seps = {"dot": ".", "slash": "/", "spaces": "  ", "dot_space": ". ", "mixed": None}
    for i, variant in _cycle(list(seps), n):
        kind = ("CREDIT_CARD", "US_SSN")[(i // len(seps)) % 2]
        sep = seps[variant]
        if kind == "CREDIT_CARD":
            canonical = card_number(b.rng)
            if sep is None:
                groups = group_card(canonical).split(" ")
                value = groups[0]
                for g in groups[1:]:
                    value += b.rng.choice((".", "/", "  ", " - ")) + g
            else:
                value = group_card(canonical, sep)
        else:
            canonical = ssn(b.rng)
            a, g, s = canonical.split("-")
            if sep is None:
                value = f"{a}{b.rng.choice(('.', '/', '   '))}{g} {s}"
            else:
                value = f"{a}{sep}{g}{sep}{s}"
        b.add(
            "separators",
            f"{variant}:{kind.lower()}",
            b.template(kind),
            Planted(kind, value, canonical),
        )


def _spelled_email(b: _Builder, n: int) -> None:
    forms = {
        "words": lambda local, domain: f"{local} at {domain}".replace(".", " dot "),
        "upper_words": lambda local, domain: f"{local} AT {domain}".replace(".", " DOT "),
        "at_word": lambda local, domain: f"{local} at {domain}",
        "dot_word": lambda local, domain: f"{local}@{domain}".replace(".", " dot "),
    }
    templates = (
        "write to me at {v} if anything changes",
        "my email is {v}",
        "Reach out via {v}, I check it daily.",
        "contact: {v}",
    )
    for _, variant in _cycle(list(forms), n):
        address, domain = email(b.rng)
        local = address.split("@")[0]
        value = forms[variant](local, domain)
        b.add(
            "spelled_email",
            variant,
            b.rng.choice(templates),
            Planted("EMAIL_ADDRESS", value, address),
        )


def _bracketed_email(b: _Builder, n: int) -> None:
    forms = {
        "square_at": ("[at]", "."),
        "round_at": ("(at)", "."),
        "square_at_dot": ("[at]", "[dot]"),
        "round_at_dot": ("(at)", "(dot)"),
        "curly": ("{at}", "{dot}"),
        "spaced": (" [at] ", " [dot] "),
    }
    for _, variant in _cycle(list(forms), n):
        address, domain = email(b.rng)
        local = address.split("@")[0]
        at, dot = forms[variant]
        value = f"{local}{at}{domain.replace('.', dot)}"
        b.add(
            "bracketed_email",
            variant,
            b.template("EMAIL_ADDRESS"),
            Planted("EMAIL_ADDRESS", value, address),
        )


def _lowercase_iban(b: _Builder, n: int) -> None:
    for i in range(n):
        canonical = iban(b.rng)
        grouped = i % 2 == 0
        value = (group4(canonical) if grouped else canonical).lower()
        variant = f"{'grouped' if grouped else 'compact'}:{canonical[:2].lower()}"
        b.add(
            "lowercase_iban",
            variant,
            b.template("IBAN_CODE"),
            Planted("IBAN_CODE", value, canonical),
        )


def _lowercase_name(b: _Builder, n: int) -> None:
    templates = TEMPLATES["PERSON"] + (
        "hi, this is {v} from accounting",
        "my name is {v} and i can't log in",
        "thanks {v}, that fixed it",
    )
    for _ in range(n):
        given, surname = english_name(b.rng)
        value = f"{given} {surname}"
        b.add(
            "lowercase_name",
            "given_surname",
            b.rng.choice(templates),
            Planted("PERSON", value, value, (given, surname)),
        )


def _nonlatin_name(b: _Builder, n: int) -> None:
    scripts = list(NATIVE_TEMPLATES)
    for i, script in _cycle(scripts, n):
        if script == "cyrillic":
            givens, surnames = CYRILLIC[i % 2]
            given, surname = b.rng.choice(givens), b.rng.choice(surnames)
            value, parts = f"{given} {surname}", (given, surname)
        elif script == "arabic":
            given, surname = b.rng.choice(ARABIC_GIVEN), b.rng.choice(ARABIC_SURNAMES)
            value, parts = f"{given} {surname}", (given, surname)
        elif script == "chinese":
            surname, given = b.rng.choice(CHINESE_SURNAMES), b.rng.choice(CHINESE_GIVEN)
            value, parts = surname + given, (given, surname)
        elif script == "japanese":
            surname, given = b.rng.choice(JAPANESE_SURNAMES), b.rng.choice(JAPANESE_GIVEN)
            value = surname + b.rng.choice(("", " ", "\u3000")) + given
            parts = (given, surname)
        else:
            surname, middle = b.rng.choice(VIET_SURNAMES), b.rng.choice(VIET_MIDDLE)
            given = b.rng.choice(VIET_GIVEN)
            value, parts = f"{surname} {middle} {given}", (given, surname)
        # Half the names sit in an English prompt, half in one of their own language.
        template = b.rng.choice(
            NATIVE_TEMPLATES[script] if (i // len(scripts)) % 2 else TEMPLATES["PERSON"]
        )
        b.add("nonlatin_name", script, template, Planted("PERSON", value, value, parts))


def _credentials(b: _Builder, n: int) -> None:
    kinds = ["url_password", "aws", "github", "jwt", "slack", "password_assign"]
    for _, kind in _cycle(kinds, n):
        rng = b.rng
        if kind == "url_password":
            password = token(rng, ALNUM, rng.randint(14, 20))
            user = rng.choice(("admin", "deploy", "svc", "app", "root"))
            scheme, host = rng.choice(
                (
                    ("postgres", "db.internal.example.com:5432/app"),
                    ("https", "git.example.com/team/repo.git"),
                    ("mongodb", "mongo.example.net:27017/orders"),
                    ("amqp", "queue.example.org:5672/"),
                )
            )
            template = rng.choice(
                (
                    f"the connection string is {scheme}://{user}:{{v}}@{host}",
                    f"DATABASE_URL={scheme}://{user}:{{v}}@{host}",
                    f"clone it with {scheme}://{user}:{{v}}@{host} and run the tests",
                )
            )
            b.add("credentials", kind, template, Planted("API_KEY", password, password))
        elif kind == "aws":
            key_id = "AKIA" + token(rng, string.ascii_uppercase + "234567", 16)
            secret = token(rng, ALNUM + "/+", 40)
            template = rng.choice(
                (
                    "aws_access_key_id = {v0}\naws_secret_access_key = {v1}",
                    "use key {v0} with secret {v1} for the bucket",
                    "AWS creds: {v0} / {v1}",
                )
            )
            b.add(
                "credentials",
                kind,
                template,
                Planted("API_KEY", key_id, key_id),
                Planted("API_KEY", secret, secret),
            )
        elif kind == "github":
            value = "ghp_" + token(rng, ALNUM, 36)
            template = rng.choice(
                (
                    "my github token is {v}, why does the push fail?",
                    "GITHUB_TOKEN={v}",
                    "curl -H 'Authorization: token {v}' https://api.github.com/user",
                )
            )
            b.add("credentials", kind, template, Planted("API_KEY", value, value))
        elif kind == "jwt":
            header = b64url(b'{"alg":"HS256","typ":"JWT"}')
            claims = json.dumps(
                {
                    "sub": f"user-{rng.randint(1000, 99999)}",
                    "iat": rng.randint(1_700_000_000, 1_800_000_000),
                },
                separators=(",", ":"),
            )
            value = f"{header}.{b64url(claims.encode())}.{b64url(rng.randbytes(32))}"
            template = rng.choice(
                (
                    "Authorization: Bearer {v}",
                    "this jwt fails validation: {v}",
                    "the session cookie is {v}",
                )
            )
            b.add("credentials", kind, template, Planted("API_KEY", value, value))
        elif kind == "slack":
            prefix = rng.choice(("xoxb", "xoxp"))
            value = (
                f"{prefix}-{rng.randint(10**10, 10**12)}-{rng.randint(10**10, 10**12)}-"
                + token(rng, ALNUM, 24)
            )
            template = rng.choice(
                ("SLACK_BOT_TOKEN={v}", "the bot uses {v} to post alerts", "slack token: {v}")
            )
            b.add("credentials", kind, template, Planted("API_KEY", value, value))
        else:
            value = secret_value(rng)
            template = rng.choice(
                (
                    "password: {v}",
                    "pwd={v}",
                    'PASSWORD="{v}"',
                    "my password is {v}, can you reset it?",
                    "login with passwd {v}",
                )
            )
            b.add("credentials", kind, template, Planted("API_KEY", value, value))


PEM_KINDS = ("RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY")


def pem_body(block: str) -> str:
    """The base64 body of a PEM block, without header, footer or whitespace."""
    lines = [line for line in block.splitlines() if line and not line.startswith("-----")]
    return "".join("".join(lines).split())


def _private_key(b: _Builder, n: int) -> None:
    for _, kind in _cycle(list(PEM_KINDS), n):
        body = base64.b64encode(b.rng.randbytes(b.rng.choice((120, 180, 240)))).decode()
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        value = f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----"
        template = b.rng.choice(
            (
                "Here is the key for the deploy box:\n{v}\nit stopped working today.",
                "{v}",
                "why does ssh say the key is invalid?\n\n{v}\n",
                "key:\n{v}",
            )
        )
        b.add(
            "private_key",
            kind.lower().replace(" ", "_"),
            template,
            Planted("API_KEY", value, pem_body(value)),
        )


def _encoded(b: _Builder, n: int) -> None:
    variants = ["base64:email", "base64:card", "base64:ssn", "hex:email", "hex:card", "hex:ssn"]
    templates = (
        "decode this for me: {v}",
        "payload={v}",
        "the field contains {v}, what is it?",
        "value: {v}",
    )
    for _, variant in _cycle(variants, n):
        encoding, what = variant.split(":")
        if what == "email":
            plain, _ = email(b.rng)
            kind = "EMAIL_ADDRESS"
        elif what == "card":
            plain, kind = card_number(b.rng), "CREDIT_CARD"
        else:
            plain, kind = ssn(b.rng), "US_SSN"
        raw = plain.encode()
        value = base64.b64encode(raw).decode() if encoding == "base64" else raw.hex()
        if encoding == "hex" and b.rng.random() < 0.5:
            value = value.upper()
        b.add(
            "encoded",
            variant,
            b.rng.choice(templates),
            Planted(kind, value, plain, encoding=encoding),
        )


def _benign(b: _Builder, n: int) -> None:
    rng = b.rng

    def version() -> str:
        v = f"v{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"
        return rng.choice(
            (
                f"Upgrade the client to {v} before the release.",
                f"The bug was fixed in {v}, see the changelog.",
                f"we run python 3.11.{rng.randint(1, 9)} and numpy 1.26.{rng.randint(0, 4)}",
            )
        )

    def order() -> str:
        return rng.choice(
            (
                f"Order {rng.randint(2020, 2026)}.{rng.randint(100, 999)}.{rng.randint(1000, 9999)}"
                " shipped today.",
                f"ticket #{rng.randint(10000, 99999)} is still open",
                f"invoice INV-{rng.randint(2020, 2026)}-{rng.randint(100, 99999):05d} is overdue",
                f"Tracking code {rng.randint(100, 999)}/{rng.randint(10, 99)}/"
                f"{rng.randint(1000, 9999)}.",
            )
        )

    def product() -> str:
        letters = string.ascii_uppercase
        code = f"{token(rng, letters, 2)}-{rng.randint(1000, 9999)}-{rng.choice(letters)}"
        return rng.choice(
            (f"Is SKU {code} back in stock?", f"part no. {code} fits the older model")
        )

    def phrases() -> str:
        return rng.choice(
            (
                "Have a look at the docs before you open a ticket.",
                f"Let's meet at {rng.randint(1, 12)} in the lobby.",
                "The score was tied at half time.",
                "click the dot at the top right, then save",
                "see the note at the end of the page",
                "the meeting is at noon, dot on time please",
                "reply to the thread [at] your convenience",
            )
        )

    def encoded_text() -> str:
        plain = rng.choice(
            (
                "hello world, the build passed",
                "the quick brown fox jumps over the lazy dog",
                "release notes for the spring update",
                "status: ok, retries: none",
            )
        ).encode()
        if rng.random() < 0.5:
            return f"decode this for me: {base64.b64encode(plain).decode()}"
        return f"payload={plain.hex()}"

    def hashes() -> str:
        full = token(rng, "0123456789abcdef", 40)
        return rng.choice(
            (
                f"revert commit {full}",
                f"the fix is in {full[:7]} on main",
                f"sha256 {token(rng, '0123456789abcdef', 64)} matches the download",
            )
        )

    def uuid() -> str:
        h = token(rng, "0123456789abcdef", 32)
        u = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
        return rng.choice((f"request id {u} failed", f"trace {u}: timeout after retry"))

    def lower_words() -> str:
        return rng.choice(
            (
                "the bill will be paid in june, said the gardener",
                "we grow rose and daisy in the spring garden",
                "mark the box and will it to the next shift",
                "the faith and hope of the team carried the launch",
                "i can't log in since yesterday, can you help?",
                "please reset the cache and try again",
            )
        )

    def other_scripts() -> str:
        return rng.choice(
            (
                "спасибо за помощь",
                "добрый день, всё работает",
                "你好世界",
                "谢谢你的帮助，问题解决了",
                "ありがとうございます、届きました",
                "今日はいい天気です",
                "شكرا جزيلا على المساعدة",
                "مرحبا بالعالم",
                "cảm ơn bạn rất nhiều",
                "chúc mừng năm mới",
            )
        )

    def digits() -> str:
        a, c = rng.randint(1, 20), rng.randint(1, 20)
        return rng.choice(
            (
                f"{fullwidth(str(a))}＋{fullwidth(str(c))}＝{fullwidth(str(a + c))}",
                f"計算：{fullwidth(str(a))}×{fullwidth(str(c))}＝{fullwidth(str(a * c))}",
                f"{script_digits(str(a), 0x0660)} + {script_digits(str(c), 0x0660)}",
                f"page {script_digits(str(a * 7), 0x0966)} of the manual",
                f"total {rng.randint(1, 9)},{rng.randint(100, 999)}.00 EUR due "
                f"{rng.randint(2025, 2027)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            )
        )

    def secretish() -> str:
        return rng.choice(
            (
                "password: please-reset",
                "the token expired yesterday",
                "use your API key from the settings page",
                "GitHub tokens start with a short prefix",
                "where do I find the private key for the VPN?",
                "the connection string lives in the vault",
                "color #ff8800 and error 0x80070005",
            )
        )

    makers: list[tuple[str, Callable[[], str]]] = [
        ("version", version),
        ("order_number", order),
        ("product_code", product),
        ("phrase", phrases),
        ("encoded_text", encoded_text),
        ("hash", hashes),
        ("uuid", uuid),
        ("lowercase_words", lower_words),
        ("other_script", other_scripts),
        ("digits", digits),
        ("secret_words", secretish),
    ]
    for i in range(n):
        variant, make = makers[i % len(makers)]
        b.benign(variant, make())


#: Planted values per trick (records, for tricks planting more than one value per record).
COUNTS = {
    "plain": 24,
    "invisible": 48,
    "fullwidth": 30,
    "other_digits": 30,
    "separators": 30,
    "spelled_email": 24,
    "bracketed_email": 24,
    "lowercase_iban": 24,
    "lowercase_name": 30,
    "nonlatin_name": 50,
    "credentials": 42,  # 7 records of each kind; AWS records hold two values
    "private_key": 20,
    "encoded": 36,
}
BENIGN_COUNT = 154
_MAKERS: dict[str, Callable[[_Builder, int], None]] = {
    "plain": _plain,
    "invisible": _invisible,
    "fullwidth": _fullwidth,
    "other_digits": _other_digits,
    "separators": _separators,
    "spelled_email": _spelled_email,
    "bracketed_email": _bracketed_email,
    "lowercase_iban": _lowercase_iban,
    "lowercase_name": _lowercase_name,
    "nonlatin_name": _nonlatin_name,
    "credentials": _credentials,
    "private_key": _private_key,
    "encoded": _encoded,
}


def generate(seed: int = DEFAULT_SEED) -> list[Record]:
    """The corpus for ``seed``: tricks in :data:`TRICKS` order, then the benign records."""
    builder = _Builder(Random(seed))
    for trick in TRICKS:
        _MAKERS[trick](builder, COUNTS[trick])
    _benign(builder, BENIGN_COUNT)
    return builder.records


# -- removal -------------------------------------------------------------------------------
_INVISIBLE_RE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)


def normalise(text: str, *, fold: bool = True) -> str:
    """Invisible characters deleted, NFKC, Unicode digits as ASCII, case folded if ``fold``."""
    text = unicodedata.normalize("NFKC", _INVISIBLE_RE.sub("", text))
    text = "".join(
        str(unicodedata.digit(ch)) if not ch.isascii() and unicodedata.category(ch) == "Nd" else ch
        for ch in text
    )
    return text.casefold() if fold else text


_DIGIT_GROUP = re.compile(r"\d(?:[\s./\-]{0,3}\d)*")
_LETTERS = re.compile(r"[^\W\d_]+")
DIGIT_WINDOW = {"CREDIT_CARD": 5, "PHONE_NUMBER": 5, "US_SSN": 4}
IBAN_WINDOW = 6
SECRET_WINDOW = 8


def _windows(value: str, size: int) -> list[str]:
    if len(value) <= size:
        return [value]
    return [value[i : i + size] for i in range(len(value) - size + 1)]


def _any_window_in(value: str, size: int, haystacks: list[str]) -> bool:
    return any(w in h for w in _windows(value, size) for h in haystacks)


def _cjk(text: str) -> bool:
    return any(unicodedata.name(ch, "").startswith(("CJK", "HIRAGANA", "KATAKANA")) for ch in text)


def leaked_plain(entity: str, canonical: str, parts: tuple[str, ...], output: str) -> bool:
    """Whether the plain value ``canonical`` of type ``entity`` (partly) remains in ``output``."""
    folded = normalise(output)
    if entity in DIGIT_WINDOW:
        groups = [re.sub(r"\D", "", g) for g in _DIGIT_GROUP.findall(folded)]
        return _any_window_in(re.sub(r"\D", "", canonical), DIGIT_WINDOW[entity], groups)
    if entity == "IBAN_CODE":
        skeleton = re.sub(r"[\W_]", "", folded)
        return _any_window_in(canonical.casefold(), IBAN_WINDOW, [skeleton])
    if entity == "IP_ADDRESS":
        compact = re.sub(r"\s", "", folded)
        octets = canonical.split(".")
        triples = [r"\.".join(octets[i : i + 3]) for i in range(len(octets) - 2)]
        return any(re.search(rf"(?<!\d){t}(?!\d)", compact) for t in triples)
    if entity == "EMAIL_ADDRESS":
        local = canonical.split("@", maxsplit=1)[0].casefold()
        components = {c for c in _LETTERS.findall(local) if len(c) >= 3}
        return bool(components & set(_LETTERS.findall(folded)))
    if entity == "PERSON":
        name = "".join(parts).casefold()
        if _cjk(name):
            squeezed = re.sub(r"\s", "", folded)
            return any(w in squeezed for w in _windows(re.sub(r"\s", "", normalise(canonical)), 2))
        words = set(re.findall(r"\w+", folded))
        return any(normalise(p) in words for p in parts)
    if entity == "API_KEY":
        compact = re.sub(r"\s", "", normalise(output, fold=False))
        return _any_window_in(canonical, SECRET_WINDOW, [compact])
    raise ValueError(f"no removal rule for {entity}")


def leaked(span: Span, output: str) -> bool:
    """Whether a substantial part of the planted value remains in ``output`` (module doc)."""
    if span.encoding is not None:
        compact = re.sub(r"\s", "", normalise(output, fold=False))
        value = span.value
        if span.encoding == "hex":
            compact, value = compact.casefold(), value.casefold()
        if _any_window_in(value, SECRET_WINDOW, [compact]):
            return True
    return leaked_plain(span.type, span.canonical, span.parts, output)


# -- command line --------------------------------------------------------------------------
def write_jsonl(records: list[Record], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[Record]:
    return [
        Record.from_json(json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    records = generate(args.seed)
    write_jsonl(records, args.out)
    planted = sum(len(r.spans) for r in records)
    benign = sum(r.benign for r in records)
    print(f"{len(records)} records, {planted} planted values, {benign} benign -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
