"""Generate tests/data/pii_corpus.jsonl: texts with planted PII and its exact offsets.

Every value is synthetic and valid for its type: card numbers pass Luhn, IBANs
their mod-97 checksum, phone numbers libphonenumber's validation, SSNs the
SSA's format rules (no 000/666/9xx area, no 00 group, no 0000 serial). Names
come from many cultures so that NER recall is measured on more than Anglo
names. Run from the repository root; the output is deterministic:

    .venv/bin/python tests/data/generate_pii_corpus.py
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import phonenumbers

OUT = Path(__file__).with_name("pii_corpus.jsonl")
SEED = 20261127

NAMES = [
    # English, Irish, Scottish
    "Emily Carter",
    "James O'Connor",
    "Fiona MacLeod",
    "Thomas Whitfield",
    "Sarah Bennett",
    # Spanish, Latin American, Portuguese, Brazilian
    "Maria Gonzalez",
    "Javier Morales",
    "Lucia Fernandez",
    "Joao Pereira",
    "Camila Rodrigues",
    # German, Dutch, Scandinavian
    "Klaus Becker",
    "Anja Schneider",
    "Pieter de Vries",
    "Ingrid Johansson",
    "Lars Nielsen",
    # French, Italian, Greek
    "Camille Dubois",
    "Luca Bianchi",
    "Giulia Romano",
    "Nikos Papadopoulos",
    "Elena Conti",
    # Polish, Russian, Ukrainian, Czech
    "Katarzyna Nowak",
    "Dmitri Ivanov",
    "Olga Petrova",
    "Oksana Shevchenko",
    "Jan Novak",
    # Chinese, Japanese, Korean, Vietnamese
    "Wei Zhang",
    "Li Na Chen",
    "Kenji Tanaka",
    "Yuki Sato",
    "Min-jun Kim",
    "Ji-woo Park",
    "Nguyen Van Minh",
    # South Asian
    "Priya Sharma",
    "Rahul Gupta",
    "Ananya Iyer",
    "Imran Qureshi",
    # Arabic, Persian, Turkish, Hebrew
    "Ahmed Hassan",
    "Fatima Al-Sayed",
    "Omar Khalil",
    "Reza Tehrani",
    "Elif Yilmaz",
    "Noa Levi",
    # African
    "Chinedu Okafor",
    "Aisha Bello",
    "Kwame Mensah",
    "Wanjiru Kamau",
    "Thabo Nkosi",
]
# Names whose given name is NOT in guard's given-name list
# (processors/guarding/names.py): they measure what the NER model and the cue
# recognizer achieve without the list. test_guard_corpus checks that they stay out.
HELD_OUT_NAMES = [
    "Aigerim Nurlanova",
    "Tevita Fifita",
    "Mahlet Girma",
    "Bolormaa Batbayar",
    "Rangi Parata",
    "Ilkka Virtanen",
    "Tancredi Ferraro",
    "Dagny Solberg",
]
NAMES = NAMES + HELD_OUT_NAMES
DOMAINS = [
    "example.com",
    "mail.example.org",
    "example.co.uk",
    "corp.example.net",
    "uni-example.edu",
    "example.de",
    "example.io",
]
PHONE_REGIONS = ["US", "US", "US", "GB", "DE", "FR", "IN", "CA"]


# -- value generators ------------------------------------------------------------------
def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + str((10 - total % 10) % 10)


def credit_card(rng: random.Random) -> str:
    kind = rng.choice(["visa", "mc", "amex", "discover"])
    if kind == "amex":
        number = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        groups = [number[:4], number[4:10], number[10:]]
    else:
        prefix = {"visa": "4", "mc": str(rng.randint(51, 55)), "discover": "6011"}[kind]
        number = luhn_complete(prefix, 16, rng)
        groups = [number[i : i + 4] for i in range(0, 16, 4)]
    separator = rng.choice([" ", "-", ""])
    return separator.join(groups)


def _iban_check(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    numeric = "".join(str(int(c, 36)) for c in rearranged)
    return f"{98 - int(numeric) % 97:02d}"


def iban(rng: random.Random) -> str:
    country = rng.choice(["DE", "GB", "FR", "NL", "ES"])
    digits = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    letters = lambda n: "".join(rng.choice(string.ascii_uppercase) for _ in range(n))  # noqa: E731
    bban = {
        "DE": lambda: digits(18),
        "GB": lambda: letters(4) + digits(14),
        "FR": lambda: digits(10) + digits(11) + digits(2),
        "NL": lambda: letters(4) + digits(10),
        "ES": lambda: digits(20),
    }[country]()
    compact = country + _iban_check(country, bban) + bban
    if rng.random() < 0.5:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def ssn(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        if area == 666:
            continue
        group, serial = rng.randint(1, 99), rng.randint(1, 9999)
        value = f"{area:03d}{group:02d}{serial:04d}"
        if value in ("123456789", "078051120") or len(set(value)) == 1:
            continue
        separator = rng.choice(["-", "-", " "])
        return f"{area:03d}{separator}{group:02d}{separator}{serial:04d}"


def phone(rng: random.Random) -> str:
    region = rng.choice(PHONE_REGIONS)
    while True:
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        national = str(example.national_number)
        # Vary the subscriber part, keep the prefix that makes the number valid.
        keep = max(3, len(national) - 4)
        candidate = national[:keep] + "".join(
            rng.choice(string.digits) for _ in range(len(national) - keep)
        )
        number = phonenumbers.parse(candidate, region)
        if phonenumbers.is_valid_number(number):
            break
    style = rng.choice(
        [
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.NATIONAL,
            phonenumbers.PhoneNumberFormat.E164,
        ]
    )
    if region not in ("US", "CA"):
        style = rng.choice(
            [phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164]
        )
    return phonenumbers.format_number(number, style)


def ip_address(rng: random.Random) -> str:
    if rng.random() < 0.75:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return "2001:db8::" + ":".join(groups[:3])
    return ":".join(groups)


def _random(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def api_key(rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    kind = rng.choice(["openai", "aws", "github", "stripe", "slack"])
    if kind == "openai":
        return "sk-proj-" + _random(rng, alnum + "_-", 40)
    if kind == "aws":
        return "AKIA" + _random(rng, string.ascii_uppercase + string.digits, 16)
    if kind == "github":
        return "ghp_" + _random(rng, alnum, 36)
    if kind == "stripe":
        return "sk_live_" + _random(rng, alnum, 24)
    return "xoxb-" + _random(rng, string.digits, 11) + "-" + _random(rng, alnum, 24)


def generic_secret(rng: random.Random) -> str:
    value = _random(rng, string.ascii_letters + string.digits, 24)
    return value[:6] + str(rng.randint(0, 9)) + value[7:]  # always mixes letters and digits


def email_for(name: str, rng: random.Random) -> str:
    parts = "".join(c for c in name.lower() if c.isalpha() or c == " ").split()
    local = rng.choice(
        [
            ".".join(parts),
            parts[0] + parts[-1][0],
            parts[0][0] + parts[-1],
            parts[-1] + str(rng.randint(1, 99)),
        ]
    )
    return f"{local}@{rng.choice(DOMAINS)}"


# -- templates ---------------------------------------------------------------------------
# Slots: {PERSON}, {PERSON2}, {EMAIL_ADDRESS}, {PHONE_NUMBER}, {CREDIT_CARD}, {IBAN_CODE},
# {US_SSN}, {IP_ADDRESS}, {API_KEY} (a vendor-format key) and {SECRET} (assigned value,
# reported as API_KEY).
TEMPLATES = [
    "Hi, my name is {PERSON} and I can't log in to my account since yesterday.",
    "Please forward the signed contract to {PERSON} before Friday.",
    "Dear {PERSON},\nthank you for your order. We will ship it on Monday.",
    "Yesterday {PERSON} called the help desk about a double charge on the invoice.",
    "Summarize this email from {PERSON}: the quarterly numbers look fine, see attachment.",
    "Can you translate this note for {PERSON} into Spanish? The meeting moved to 3 pm.",
    "Meeting notes: {PERSON} and {PERSON2} agreed to review the migration plan next week.",
    "I spoke with {PERSON} this morning; she will send the report by noon.",
    "Write a polite reply to {PERSON}, who asked why the delivery is late.",
    "Our new team lead is {PERSON}. Please add them to the on-call rotation.",
    "Contact {PERSON} at {EMAIL_ADDRESS} for the onboarding documents.",
    "My email is {EMAIL_ADDRESS}, please send the receipt there.",
    "Customer {PERSON} ({EMAIL_ADDRESS}) reports that the app crashes on startup.",
    "Reply-To: {EMAIL_ADDRESS}\nSubject: refund request\nBody: the item arrived broken.",
    "You can reach me on {PHONE_NUMBER} after 6 pm.",
    "Call back {PERSON} on {PHONE_NUMBER} regarding ticket 4471.",
    "The courier left a note with the number {PHONE_NUMBER} for redelivery.",
    "New contact for the Berlin office: {PHONE_NUMBER}, ask for the front desk.",
    "I was charged twice on my card {CREDIT_CARD}, please refund one payment.",
    "Card used: {CREDIT_CARD}, expiry 09/28. The payment was declined.",
    "Please update my billing card to {CREDIT_CARD} starting next month.",
    "Send the refund to my bank account, IBAN {IBAN_CODE}, by the end of the week.",
    "Our supplier changed banks; the new IBAN is {IBAN_CODE}.",
    "Wire transfer details for {PERSON}: account {IBAN_CODE}.",
    "For the tax form I need my social security number {US_SSN} on page two.",
    "Applicant {PERSON}, SSN {US_SSN}, requested a credit report.",
    "The employee record lists {US_SSN} as the social security number; is that correct?",
    "Login attempts from {IP_ADDRESS} were blocked by the firewall.",
    "The server at {IP_ADDRESS} stopped answering health checks at 02:14.",
    "Whitelist {IP_ADDRESS} for the VPN, it's the office gateway.",
    "Debug this: requests from {IP_ADDRESS} get a 502 from nginx.",
    "My script fails with 401 even though I set the key {API_KEY} in the header.",
    "Why does boto3 reject the access key {API_KEY}?",
    "I accidentally committed {API_KEY} to the repo, how do I rotate it?",
    "config.yaml contains api_key: {SECRET} and the client still times out.",
    "export API_KEY={SECRET}\npython run.py fails with a timeout",
    "The password={SECRET} line in settings.py is what the linter complains about.",
    "Hello, I'm {PERSON}. My phone is {PHONE_NUMBER} and my email {EMAIL_ADDRESS}.",
    "{PERSON} paid with card {CREDIT_CARD} and asked for the receipt at {EMAIL_ADDRESS}.",
    "Ticket from {PERSON}: cannot reach {IP_ADDRESS}; token {API_KEY} was rotated last week.",
    "Payroll update for {PERSON}: IBAN {IBAN_CODE}, SSN {US_SSN}, phone {PHONE_NUMBER}.",
    "Please ask {PERSON} to confirm the shipping address and call {PHONE_NUMBER}.",
    "Thanks,\n{PERSON}\nSupport Engineer",
    "According to {PERSON}, the outage started after the last deployment.",
    "Invite {PERSON} and {PERSON2} to the design review on Thursday.",
]

FILLERS = {
    "EMAIL_ADDRESS": None,
    "PHONE_NUMBER": phone,
    "CREDIT_CARD": credit_card,
    "IBAN_CODE": iban,
    "US_SSN": ssn,
    "IP_ADDRESS": ip_address,
    "API_KEY": api_key,
}


def render(template: str, rng: random.Random) -> dict[str, object]:
    names = rng.sample(NAMES, 2)
    text, entities, rest = "", [], template
    while "{" in rest:
        before, _, after = rest.partition("{")
        slot, _, rest = after.partition("}")
        text += before
        if slot in ("PERSON", "PERSON2"):
            kind, value = "PERSON", names[0 if slot == "PERSON" else 1]
        elif slot == "EMAIL_ADDRESS":
            kind, value = "EMAIL_ADDRESS", email_for(names[0], rng)
        elif slot == "SECRET":
            kind, value = "API_KEY", generic_secret(rng)
        else:
            filler = FILLERS[slot]
            assert filler is not None
            kind, value = slot, filler(rng)
        entities.append(
            {"type": kind, "value": value, "start": len(text), "end": len(text) + len(value)}
        )
        text += value
    text += rest
    return {"text": text, "entities": entities}


def main() -> None:
    rng = random.Random(SEED)
    lines = []
    for round_ in range(7):
        for index, template in enumerate(TEMPLATES):
            record = {
                "id": f"pii-{round_:02d}-{index:03d}",
                "template": index,
                **render(template, rng),
            }
            for entity in record["entities"]:  # type: ignore[attr-defined]
                assert record["text"][entity["start"] : entity["end"]] == entity["value"]  # type: ignore[index]
            lines.append(json.dumps(record, ensure_ascii=False))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} texts to {OUT}")


if __name__ == "__main__":
    main()
