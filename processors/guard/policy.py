"""The guard policy: what guard does with each kind of personal data and with hostile prompts.

One file (``schemas/guard/policy.yaml``) holds a ``default`` policy and
per-tenant overrides. It is validated once at start, so a typo in an entity
type or an action stops the processor with a message that names the line to
fix, instead of silently letting personal data through.

Overrides merge over the default: a tenant lists only what differs. Entity
actions merge per entity type (``off`` removes an entity the default asks
for); ``injection`` merges per key.

Whether a registered tenant without an override may use the default is the file's
decision (``default_applies_to_unlisted``, false unless it says so): when it may
not, guard blocks its requests as ``unknown_tenant``, so a new tenant gets no
policy by accident. Tenant ids are exact: an override for ``northbank`` is not
``NorthBank``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.errors import ConfigurationError
from streams.runtime.bounded import BoundedCache


class Entity(StrEnum):
    """The entity types guard can detect; a policy may name no other."""

    PERSON = "PERSON"
    EMAIL_ADDRESS = "EMAIL_ADDRESS"
    PHONE_NUMBER = "PHONE_NUMBER"
    CREDIT_CARD = "CREDIT_CARD"
    IBAN_CODE = "IBAN_CODE"
    US_SSN = "US_SSN"
    IP_ADDRESS = "IP_ADDRESS"
    API_KEY = "API_KEY"


#: Entities found by the spaCy NER model; every other entity is found by patterns alone.
NER_ENTITIES = frozenset({Entity.PERSON})


class Action(StrEnum):
    """What guard does with a finding."""

    TAG = "tag"  # replace with <ENTITY_TYPE>
    HASH = "hash"  # replace with <ENTITY_TYPE_ + 26 base32 chars>, keyed, stable per tenant
    MASK = "mask"  # keep the last ``keep_last`` letters and digits, mask the others
    BLOCK = "block"  # the whole request is blocked (its text is still redacted)
    OFF = "off"  # not detected (only useful to drop an entity the default asks for)


class PolicyError(ConfigurationError, ValueError):
    """The policy file is missing or invalid; the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntityRule(_Strict):
    """The action for one entity type; ``keep_last`` only matters for ``mask``."""

    action: Action
    keep_last: int = Field(4, ge=0, le=16, description="Letters/digits left visible by mask.")

    @classmethod
    def parse(cls, value: Any) -> Any:
        """Accept the short form ``PERSON: hash`` as well as ``PERSON: {action: hash}``."""
        if isinstance(value, str):
            return {"action": value}
        return value


class InjectionRule(_Strict):
    """When a prompt counts as an injection attempt, and what happens then."""

    threshold: float = Field(0.7, ge=0.0, le=1.0, description="Score at or above which to act.")
    action: Literal["flag", "block"] = "block"


class _InjectionOverride(_Strict):
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    action: Literal["flag", "block"] | None = None


#: Characters of a text guard analyses at most, when the policy does not say.
DEFAULT_MAX_INPUT_CHARS = 100_000


class _Override(_Strict):
    """A tenant's differences from the default; absent keys inherit."""

    pii_score_threshold: float | None = Field(None, ge=0.0, le=1.0)
    max_input_chars: int | None = Field(None, ge=1)
    entities: dict[Entity, EntityRule] = Field(default_factory=dict)
    injection: _InjectionOverride = _InjectionOverride()

    @field_validator("entities", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: EntityRule.parse(v) for k, v in value.items()}
        return value


class TenantPolicy(_Strict):
    """The resolved policy of one tenant: what the engine applies."""

    tenant: str
    version: str
    pii_score_threshold: float = Field(0.4, ge=0.0, le=1.0)
    max_input_chars: int = Field(DEFAULT_MAX_INPUT_CHARS, ge=1)
    entities: dict[Entity, EntityRule]
    injection: InjectionRule = InjectionRule()

    @property
    def active(self) -> frozenset[Entity]:
        """Entity types to look for (every one whose action is not ``off``)."""
        return frozenset(e for e, r in self.entities.items() if r.action is not Action.OFF)

    @property
    def needs_ner(self) -> bool:
        """Whether any active entity needs the NER model (the expensive part of analysis)."""
        return bool(self.active & NER_ENTITIES)


class _PolicyFile(_Strict):
    version: str = Field(min_length=1)
    default: _Override
    default_applies_to_unlisted: bool = False
    tenants: dict[str, _Override] = Field(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `version: 3` in YAML is an int; accept it, the verdict carries it as text.
        return str(value) if isinstance(value, int | float) else value


class Policy:
    """The validated policy file, resolving each tenant's effective policy once."""

    def __init__(
        self,
        version: str,
        default: _Override,
        tenants: Mapping[str, _Override],
        *,
        default_applies_to_unlisted: bool = False,
    ):
        self.version = version
        self.default_applies_to_unlisted = default_applies_to_unlisted
        self._default = default
        self._overrides = dict(tenants)
        self._resolved: BoundedCache[str, TenantPolicy] = BoundedCache()
        self._check_default()

    def _check_default(self) -> None:
        if self._default.pii_score_threshold is None:
            raise PolicyError("default.pii_score_threshold is required (e.g. 0.4)")
        missing = [e.value for e in Entity if e not in self._default.entities]
        if missing:
            raise PolicyError(
                "default.entities must give an action for every entity type; missing: "
                f"{', '.join(missing)} (use `off` to leave one undetected)"
            )

    @property
    def largest_input_chars(self) -> int:
        """The largest ``max_input_chars`` of any tenant (what the NLP model must accept)."""
        limits = [o.max_input_chars for o in (self._default, *self._overrides.values())]
        return max(limit or DEFAULT_MAX_INPUT_CHARS for limit in limits)

    @property
    def tenants(self) -> list[str]:
        """Tenants that have an override."""
        return sorted(self._overrides)

    def admits(self, tenant: str) -> bool:
        """Whether ``tenant`` (exact id) has a policy: its override, or the default if allowed."""
        return tenant in self._overrides or self.default_applies_to_unlisted

    def for_tenant(self, tenant: str) -> TenantPolicy:
        """Return the effective policy of ``tenant`` (the default when it has no override)."""
        resolved = self._resolved.get(tenant)
        if resolved is None:
            resolved = self._resolve(tenant, self._overrides.get(tenant))
            self._resolved[tenant] = resolved
        return resolved

    def _resolve(self, tenant: str, override: _Override | None) -> TenantPolicy:
        base = self._default
        entities = dict(base.entities)
        threshold = base.pii_score_threshold
        max_input_chars = base.max_input_chars or DEFAULT_MAX_INPUT_CHARS
        injection = InjectionRule(
            threshold=base.injection.threshold if base.injection.threshold is not None else 0.7,
            action=base.injection.action or "block",
        )
        if override is not None:
            entities.update(override.entities)
            if override.pii_score_threshold is not None:
                threshold = override.pii_score_threshold
            if override.max_input_chars is not None:
                max_input_chars = override.max_input_chars
            injection = InjectionRule(
                threshold=(
                    override.injection.threshold
                    if override.injection.threshold is not None
                    else injection.threshold
                ),
                action=override.injection.action or injection.action,
            )
        assert threshold is not None  # checked in _check_default  # noqa: S101
        return TenantPolicy(
            tenant=tenant,
            version=self.version,
            pii_score_threshold=threshold,
            max_input_chars=max_input_chars,
            entities=entities,
            injection=injection,
        )

    @classmethod
    def from_mapping(cls, data: Any, source: str = "policy") -> Policy:
        """Validate a parsed policy document."""
        try:
            spec = _PolicyFile.model_validate(data)
        except ValidationError as exc:
            raise PolicyError(f"{source} is not a valid guard policy:\n{_explain(exc)}") from None
        try:
            return cls(
                spec.version,
                spec.default,
                spec.tenants,
                default_applies_to_unlisted=spec.default_applies_to_unlisted,
            )
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> Policy:
        """Read and validate the policy file at ``path``."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PolicyError(
                f"cannot read the guard policy {path}: {exc.strerror}. Set "
                "SLUICE_GUARD__POLICY_PATH to the policy file (see schemas/guard/policy.yaml)."
            ) from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path} is not valid YAML: {exc}") from None
        return cls.from_mapping(data, str(path))


def _explain(exc: ValidationError) -> str:
    """One line per problem, with its path in the file and the values that are allowed."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        is_key = loc[-1:] == ["[key]"]
        where = ".".join(loc[:-1] if is_key else loc)
        message = error["msg"]
        if error["type"] == "enum":
            expected = error.get("ctx", {}).get("expected", "")
            message = f"{error['input']!r} is not allowed; use one of {expected}"
            if is_key:
                message = f"unknown entity type {error['input']!r}; known: {expected}"
        elif error["type"] == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            message = f"{error['input']!r} is not allowed; use one of {expected}"
        elif error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)
