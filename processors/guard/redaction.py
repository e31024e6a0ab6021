"""Rewriting text according to a tenant's policy, with presidio-anonymizer's operators.

Findings reach this module already free of overlaps (``pii.resolve_overlaps``),
so the anonymizer's conflict handling has nothing left to merge, and its
merging of neighbouring same-type entities is turned off: every finding is
rewritten exactly once, and the finding records describe exactly what was
rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
from presidio_anonymizer.entities import RecognizerResult as AnonymizerResult

from processors.guard.hashing import TenantHasher
from processors.guard.normalize import is_invisible, normalize
from processors.guard.pii import Detection
from processors.guard.policy import Action, Entity, EntityRule, TenantPolicy
from streams.runtime.bounded import DEFAULT_MAX_ENTRIES, BoundedCache

MASK_CHAR = "*"


def mask(value: str, keep_last: int) -> str:
    """Replace letters and digits with ``*`` except the last ``keep_last``; keep separators.

    ``4111 1111 1111 1234`` becomes ``**** **** **** 1234``: the shape stays
    readable for a support agent, the number does not. Invisible characters
    (zero-width spaces hiding the number from a pattern) are dropped, not kept.
    """
    keep = keep_last
    out = []
    for char in reversed(value):
        if is_invisible(char):
            continue
        if char.isalnum():
            if keep > 0:
                out.append(char)
                keep -= 1
            else:
                out.append(MASK_CHAR)
        else:
            out.append(char)
    return "".join(reversed(out))


def tag(entity: str) -> str:
    """Return the type tag that replaces a value, e.g. ``<EMAIL_ADDRESS>``."""
    return f"<{entity}>"


class Redactor:
    """Applies a tenant policy's actions to a text and its findings."""

    def __init__(
        self,
        hasher: TenantHasher,
        anonymizer: AnonymizerEngine | None = None,
        *,
        max_tenants: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._hasher = hasher
        self._anonymizer = anonymizer or AnonymizerEngine()  # type: ignore[no-untyped-call]
        # Per tenant and policy version; the least recently used are rebuilt when needed.
        self._operators: BoundedCache[str, dict[str, OperatorConfig]] = BoundedCache(max_tenants)

    def operators(self, policy: TenantPolicy) -> dict[str, OperatorConfig]:
        """One operator per entity type of ``policy`` (cached per tenant and version)."""
        cache_key = f"{policy.version}\x00{policy.tenant}"
        operators = self._operators.get(cache_key)
        if operators is None:
            operators = {
                entity.value: self._operator(policy.tenant, entity, rule)
                for entity, rule in policy.entities.items()
                if rule.action is not Action.OFF
            }
            self._operators[cache_key] = operators
        return operators

    def _operator(self, tenant: str, entity: Entity, rule: EntityRule) -> OperatorConfig:
        if rule.action is Action.HASH:
            return OperatorConfig("custom", {"lambda": self._hash_fn(tenant, entity.value)})
        if rule.action is Action.MASK:
            keep_last = rule.keep_last
            return OperatorConfig("custom", {"lambda": lambda value: mask(value, keep_last)})
        # tag, and block: a blocked request is kept (on the blocked topic) with type tags.
        return OperatorConfig("replace", {"new_value": tag(entity.value)})

    def _hash_fn(self, tenant: str, entity: str) -> Callable[[str], str]:
        hasher = self._hasher
        # The analysis text of the value: the same address written with a full-width
        # at sign or a zero-width space gets the same pseudonym as the plain one.
        return lambda value: hasher.token(tenant, entity, normalize(value).text)

    def redact(self, text: str, detections: Sequence[Detection], policy: TenantPolicy) -> str:
        """``text`` with every detection rewritten by its entity's action."""
        if not detections:
            return text
        results = [AnonymizerResult(d.entity_type, d.start, d.end, d.score) for d in detections]
        engine_result = self._anonymizer.anonymize(
            text,
            results,
            operators=self.operators(policy),
            merge_entities_with_spaces=False,
        )
        redacted: str = engine_result.text
        return redacted
