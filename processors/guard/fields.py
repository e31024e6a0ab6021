"""The free-text fields guard forwards besides the prompt, and the rule on ``user_id``.

A request carries more text than its prompt: ``user_id``, ``source`` and the
``metadata`` map (its keys as well as its values: both are chosen by the
producer), and a model's result carries ``error_message`` and ``metadata``.
Each of them reaches topics and ClickHouse tables after guard, so each goes
through the same analyzer and the same tenant policy as the prompt, in the
same analyzer batch. Only the prompt is scored for injection: the other fields
never reach the model.

``user_id`` must be a pseudonymous id. One that looks like an e-mail address
or a person's name blocks the request (reason ``user_id_personal_data``) and is
withheld from the blocked copy. It "looks like" one when:

* the analyzer finds a PERSON (spaCy's NER model) or an EMAIL_ADDRESS in it, with
  the tenant's threshold; or
* it has the shape of an address (``something@domain.tld``), whatever the policy
  asks the analyzer for; or
* it has the shape of a full name: two to four words of letters (``Jean-Luc
  Picard``, ``garcia, maria``), which the NER model misses without context.

Any other finding in a ``user_id`` (a phone number, say) is redacted by the
policy like in any other field. A single lower-case word (``mgarcia``) cannot be
told from a handle and passes unless the NER model calls it a name.

Findings name their field: ``user_id``, ``source``, ``error_message``,
``metadata.<key>`` for a value (``metadata.*`` when the key is not shaped like
an identifier of at most 64 characters, or had personal data itself), and
``metadata_key`` for a key.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from processors.guard.engine import BLOCK, PASS, GuardItem, Inspection, withheld
from processors.guard.policy import Entity
from streams.contracts.records import GuardVerdict, PiiFinding

USER_ID = "user_id"
SOURCE = "source"
ERROR_MESSAGE = "error_message"
METADATA_KEY = "metadata_key"
#: The findings field of a metadata value whose key cannot be named.
METADATA_ANY = "metadata.*"
#: Verdict reason: the request's user_id is an e-mail address or a person's name.
USER_ID_PERSONAL_DATA = "user_id_personal_data"
#: What a refused user_id becomes on the blocked topic.
WITHHELD_USER_ID = withheld(USER_ID_PERSONAL_DATA)

_NAMING_ENTITIES = frozenset({Entity.PERSON.value, Entity.EMAIL_ADDRESS.value})
# Apostrophes and hyphens inside a name: O'Neil, O\u2019Neil, Jean-Luc.
_NAME_JOINERS = str.maketrans({"'": "-", "\u2019": "-"})
_KEY_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def looks_like_email(value: str) -> bool:
    """Whether ``value`` has the shape of an e-mail address (``local@domain.tld``).

    Checked by splitting, not by a regex: linear in the length whatever the text.
    """
    local, at, domain = value.strip().partition("@")
    if not at or not local or "@" in domain or any(c.isspace() for c in value.strip()):
        return False
    head, dot, tld = domain.rpartition(".")
    return bool(dot and head and len(tld) >= 2)


def looks_like_full_name(value: str) -> bool:
    """Whether ``value`` is two to four words of letters, as a person's full name is."""
    words = value.replace(",", " ").split()
    return 2 <= len(words) <= 4 and all(_name_word(w) for w in words)


def _name_word(word: str) -> bool:
    parts = word.removesuffix(".").translate(_NAME_JOINERS).split("-")
    return sum(map(len, parts)) >= 2 and all(p.isalpha() for p in parts)


def personal_user_id(value: str, inspection: Inspection) -> bool:
    """Whether a user_id is personal data rather than a pseudonymous id (see the module)."""
    if any(f.entity_type in _NAMING_ENTITIES for f in inspection.findings):
        return True
    return looks_like_email(value) or looks_like_full_name(value)


def value_field(key: str) -> str:
    """The findings field of the metadata value under ``key``: bounded, never free text."""
    return f"metadata.{key}" if _KEY_SHAPE.fullmatch(key) else METADATA_ANY


@dataclass(frozen=True, slots=True)
class FreeText:
    """The texts of one record to inspect, in order: (findings field, text, metadata key)."""

    slots: tuple[tuple[str, str, str | None], ...]
    has_main: bool

    @classmethod
    def of(
        cls,
        main: tuple[str, str] | None,
        singles: Sequence[tuple[str, str | None]],
        metadata: Mapping[str, str],
    ) -> FreeText:
        """The main text (the prompt, the output) first, then other fields, then the map."""
        slots: list[tuple[str, str, str | None]] = []
        if main is not None:
            slots.append((main[0], main[1], None))
        slots += [(name, text, None) for name, text in singles if text]
        for key, value in metadata.items():
            slots.append((METADATA_KEY, key, key))
            slots.append((value_field(key), value, key))
        return cls(tuple(slots), main is not None)

    def items(self, request_id: str, tenant_id: str) -> list[GuardItem]:
        """One engine item per text."""
        return [GuardItem(request_id, tenant_id, text, name) for name, text, _ in self.slots]


@dataclass(frozen=True, slots=True)
class Guarded:
    """A record's free-text fields after guard, with what guard found in them."""

    texts: dict[str, str]  # safe text per single field (the main one included)
    metadata: dict[str, str]
    findings: tuple[PiiFinding, ...]
    inspections: dict[str, Inspection]  # per single field
    main: Inspection | None
    others: tuple[Inspection, ...]  # every inspection but the main text's


def reassemble(free: FreeText, inspections: Sequence[Inspection]) -> Guarded:
    """Safe texts and findings from the inspections of ``free.items`` (same order)."""
    texts: dict[str, str] = {}
    singles: dict[str, Inspection] = {}
    metadata: dict[str, str] = {}
    findings: list[PiiFinding] = []
    key_text: dict[str, str] = {}
    key_found: set[str] = set()
    for (name, _text, key), inspection in zip(free.slots, inspections, strict=True):
        if key is None:
            texts[name] = inspection.text
            singles[name] = inspection
            findings += inspection.findings
        elif name == METADATA_KEY:
            key_text[key] = inspection.text
            if inspection.findings or inspection.blocked:
                key_found.add(key)
            findings += inspection.findings
        else:
            # A key that held personal data must not name its value's findings either.
            found = inspection.findings
            if key in key_found:
                found = tuple(dataclasses.replace(f, field=METADATA_ANY) for f in found)
            findings += found
            metadata[_unique(key_text[key], metadata)] = inspection.text
    main = inspections[0] if free.has_main else None
    others = tuple(inspections[1:] if free.has_main else inspections)
    return Guarded(texts, metadata, tuple(findings), singles, main, others)


def _unique(key: str, taken: Mapping[str, str]) -> str:
    """``key``, or ``key#2``, ``key#3``… when two redacted keys came out the same."""
    if key not in taken:
        return key
    n = 2
    while f"{key}#{n}" in taken:
        n += 1
    return f"{key}#{n}"


def combine(main: GuardVerdict, others: Sequence[Inspection], reason: str | None) -> GuardVerdict:
    """The record's verdict: the main text's, with the other fields' findings and blocks.

    ``reason`` (the user_id rule) blocks unless the main text already did; then a
    field that was itself blocked (a ``block`` entity, an analysis that failed)
    blocks the record, since its text was not passed on.
    """
    counts = Counter(main.entity_counts)
    for inspection in others:
        counts.update(inspection.verdict.entity_counts)
    action, why = main.action, main.reason
    if action != BLOCK:
        blocked = next((i.verdict.reason for i in others if i.blocked), None)
        if reason is not None or blocked is not None:
            action, why = BLOCK, reason or blocked
    return dataclasses.replace(
        main,
        action=action,
        reason=why,
        redacted=main.redacted or any(i.verdict.redacted for i in others),
        entity_counts=dict(counts),
    )


def side_verdict(others: Sequence[Inspection]) -> GuardVerdict | None:
    """A verdict for a record with no main text, when its other fields needed one."""
    if not any(i.findings or i.blocked for i in others):
        return None
    first = others[0].verdict
    base = dataclasses.replace(first, action=PASS, reason=None, redacted=False, entity_counts={})
    return combine(base, others, None)
