"""Generate the support_tickets sample dataset (deterministic: same seed, same file).

    python schemas/datasets/support_tickets/generate.py --rows 5000 --out sample.jsonl

About 4% of the rows break the contract on purpose (a wrong enum, a missing
field, a malformed id, an out-of-range score, a line that is not JSON), so the
demo shows the dead-letter topic at work. Ticket bodies contain synthetic
personal data (names, e-mails, phone numbers) of the kind guard must redact
before a model sees them; every value is made up.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TENANTS = ["acme", "globex", "initech", "umbrella", "hooli", "stark-industries"]
TENANT_WEIGHTS = [30, 20, 15, 15, 12, 8]
CHANNELS = ["email", "chat", "phone", "web"]
PRIORITIES = ["low", "medium", "high", "urgent"]
PRIORITY_WEIGHTS = [35, 40, 18, 7]
PRODUCTS = ["billing", "mobile-app", "web-app", "api", "hardware", "shipping"]
TIERS = ["free", "pro", "enterprise"]
LANGUAGES = ["en", "en", "en", "en", "de", "fr", "es", "nl"]
FIRST_NAMES = [
    "Maria",
    "James",
    "Aisha",
    "Chen",
    "Lukas",
    "Sofia",
    "David",
    "Priya",
    "Tom",
    "Elena",
    "Omar",
    "Hannah",
    "Kenji",
    "Grace",
    "Mateo",
    "Olivia",
]
LAST_NAMES = [
    "Garcia",
    "Smith",
    "Khan",
    "Wei",
    "Muller",
    "Rossi",
    "Brown",
    "Patel",
    "Jones",
    "Novak",
    "Haddad",
    "Schmidt",
    "Tanaka",
    "Okafor",
    "Silva",
    "Taylor",
]
SUBJECTS = {
    "billing": [
        "Charged twice this month",
        "Refund not received",
        "Invoice shows wrong VAT",
        "Cannot update my card",
        "Unexpected price increase",
    ],
    "mobile-app": [
        "App crashes on start",
        "Login loop on Android",
        "Push notifications missing",
        "Dark mode unreadable",
        "Sync stuck at 99%",
    ],
    "web-app": [
        "Dashboard loads forever",
        "Export to CSV is empty",
        "Cannot invite teammates",
        "Session expires every minute",
        "Search returns nothing",
    ],
    "api": [
        "429 errors below our rate limit",
        "Webhook signatures fail",
        "Timeouts on /v2/orders",
        "Pagination skips records",
        "OAuth token refresh fails",
    ],
    "hardware": [
        "Device will not power on",
        "Battery drains overnight",
        "Bluetooth pairing fails",
        "Screen flickers",
        "Firmware update bricked unit",
    ],
    "shipping": [
        "Parcel marked delivered but missing",
        "Wrong item received",
        "Tracking not updating",
        "Customs fee unexpected",
        "Delivery address change",
    ],
}
BODIES = [
    "Hi, {subject_lc}. I tried restarting and clearing the cache but nothing changed. "
    "This started {days} days ago and is blocking our team.",
    "Hello support, since the last update {subject_lc}. Order value was ${value:.2f}. "
    "Please advise what we should do next.",
    "{subject}! We are on the {tier} plan and expected better. "
    "My colleague {name} can reproduce it. Reach me at {email} if you need logs.",
    "Dear team, {subject_lc}. You can call me on {phone} between 9 and 5. Thanks, {name}",
    "Good morning, {subject_lc}. Ticket reference from last week did not help. "
    "Attached screenshots show the issue on {product}.",
    "Urgent: {subject_lc}. This affects {users} users in production. "
    "Contact {name} ({email}) for access.",
]


def _person(rng: random.Random) -> tuple[str, str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    email = f"{first.lower()}.{last.lower()}@{rng.choice(['example.com', 'mail.example.org'])}"
    phone = f"+1-{rng.randint(200, 989)}-555-{rng.randint(1000, 9999)}"
    return f"{first} {last}", email, phone


def ticket(rng: random.Random, index: int, start: datetime) -> dict[str, Any]:
    """One valid ticket."""
    product = rng.choice(PRODUCTS)
    subject = rng.choice(SUBJECTS[product])
    name, email, phone = _person(rng)
    tier = rng.choices(TIERS, [50, 35, 15])[0]
    value = round(rng.lognormvariate(4.0, 1.0), 2)
    created = start + timedelta(seconds=index * 37 + rng.randint(0, 30))
    body = rng.choice(BODIES).format(
        subject=subject,
        subject_lc=subject[0].lower() + subject[1:],
        days=rng.randint(1, 9),
        value=value,
        tier=tier,
        name=name,
        email=email,
        phone=phone,
        product=product,
        users=rng.randint(5, 5000),
    )
    answered = rng.random() < 0.9
    return {
        "ticket_id": f"TCK-{10_000_000 + index:08d}",
        "tenant_id": rng.choices(TENANTS, TENANT_WEIGHTS)[0],
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "channel": rng.choice(CHANNELS),
        "priority": rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0],
        "product": product,
        "subject": subject,
        "body": body,
        "customer_tier": tier,
        "first_response_minutes": round(rng.expovariate(1 / 90), 1) if answered else None,
        "satisfaction": rng.choices([1, 2, 3, 4, 5], [5, 8, 17, 35, 35])[0]
        if rng.random() < 0.35
        else None,
        "order_value_usd": value if product in {"billing", "shipping", "hardware"} else None,
        "language": rng.choice(LANGUAGES),
    }


def break_contract(rng: random.Random, row: dict[str, Any]) -> dict[str, Any] | str:
    """Damage a row the way real producers do."""
    kind = rng.choice(["enum", "missing", "id", "range", "type", "not-json", "length"])
    row = dict(row)
    if kind == "enum":
        row["priority"] = rng.choice(["critical", "P1", "HIGH"])
    elif kind == "missing":
        del row[rng.choice(["tenant_id", "subject", "created_at"])]
    elif kind == "id":
        row["ticket_id"] = row["ticket_id"].replace("TCK-", "TKT-")
    elif kind == "range":
        row["satisfaction"] = rng.choice([0, 6, 10])
    elif kind == "type":
        row["first_response_minutes"] = "about an hour"
    elif kind == "length":
        row["subject"] = "x"
    else:
        return json.dumps(row)[: rng.randint(10, 80)]  # a truncated line
    return row


def generate(rows: int, seed: int, invalid_share: float) -> list[str]:
    """The dataset as JSON lines."""
    rng = random.Random(seed)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    lines = []
    for index in range(rows):
        row: dict[str, Any] | str = ticket(rng, index, start)
        if rng.random() < invalid_share:
            row = break_contract(rng, row)  # type: ignore[arg-type]
        lines.append(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
    return lines


def main() -> None:
    """Write the sample file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--invalid-share", type=float, default=0.04)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("sample.jsonl"))
    args = parser.parse_args()
    lines = generate(args.rows, args.seed, args.invalid_share)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} rows to {args.out}")


if __name__ == "__main__":
    main()
