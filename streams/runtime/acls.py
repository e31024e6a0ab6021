"""ACL bindings on the cluster: read them, and apply a plan (``streams.contracts.acls``).

The only module that speaks confluent-kafka's ACL types; everything above it works
with ``Grant``s. A broker without an authorizer answers every ACL request with
SECURITY_DISABLED: that becomes ``AuthorizerDisabledError``, which the command line
turns into a warning (a plaintext development stack is not an error).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, cast

from confluent_kafka import KafkaError, KafkaException

# confluent_kafka.admin re-exports these without marking them exported (mypy --strict).
from confluent_kafka.admin._acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
)
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from streams.contracts.acls import AclPlan, Grant
from streams.errors import SluiceError

#: Kafka's cluster resource is confluent-kafka's BROKER resource type.
_RESOURCE_TYPES = {
    "TOPIC": ResourceType.TOPIC,
    "GROUP": ResourceType.GROUP,
    "TRANSACTIONAL_ID": ResourceType.TRANSACTIONAL_ID,
    "CLUSTER": ResourceType.BROKER,
}
_RESOURCE_NAMES = {value: key for key, value in _RESOURCE_TYPES.items()}
_ANY = cast(str, None)  # a filter's None matches any name, principal or host
_EVERY_BINDING = AclBindingFilter(
    ResourceType.ANY,
    _ANY,
    ResourcePatternType.ANY,
    _ANY,
    _ANY,
    AclOperation.ANY,
    AclPermissionType.ANY,
)


class AclError(SluiceError):
    """The cluster refused to list, create or delete ACL bindings."""


class AuthorizerDisabledError(AclError):
    """The broker has no authorizer: it keeps no ACLs (SECURITY_DISABLED)."""


class AclAdmin(Protocol):
    """The part of confluent-kafka's ``AdminClient`` this module uses (a fake in tests)."""

    def describe_acls(self, acl_binding_filter: AclBindingFilter, **kwargs: Any) -> Any:
        """A future of the bindings that match the filter."""

    def create_acls(self, acls: list[AclBinding], **kwargs: Any) -> Any:
        """A future per binding."""

    def delete_acls(self, acl_binding_filters: list[AclBindingFilter], **kwargs: Any) -> Any:
        """A future per filter, of the bindings it deleted."""


def binding_of(grant: Grant) -> AclBinding:
    """The confluent-kafka binding of a grant."""
    return AclBinding(*_binding_fields(grant))


def _binding_fields(
    grant: Grant,
) -> tuple[ResourceType, str, ResourcePatternType, str, str, AclOperation, AclPermissionType]:
    """A grant as confluent-kafka's binding (and binding filter) arguments, in order."""
    return (
        _RESOURCE_TYPES.get(grant.resource) or ResourceType[grant.resource],
        grant.name,
        ResourcePatternType[grant.pattern],
        grant.principal,
        grant.host,
        AclOperation[grant.operation],
        AclPermissionType[grant.permission],
    )


def _named(value: Enum | str | int) -> str:
    return value.name if isinstance(value, Enum) else str(value)


def grant_of(binding: AclBinding) -> Grant:
    """The grant a binding read from the broker stands for (any operation or permission)."""
    restype = binding.restype
    resource = _RESOURCE_NAMES.get(restype) if isinstance(restype, ResourceType) else None
    return Grant(
        principal=binding.principal,
        resource=resource or _named(restype),
        name=binding.name,
        pattern=_named(binding.resource_pattern_type),
        operation=_named(binding.operation),
        permission=_named(binding.permission_type),
        host=binding.host,
    )


def _filter_of(grant: Grant) -> AclBindingFilter:
    """A filter that matches exactly this binding (delete_acls takes filters)."""
    return AclBindingFilter(*_binding_fields(grant))


def _raise(exc: KafkaException, what: str) -> None:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError) and error.code() == KafkaError.SECURITY_DISABLED:
        raise AuthorizerDisabledError(
            "the broker has no authorizer, so it keeps no ACLs (SECURITY_DISABLED); on a "
            "secured cluster set authorizer.class.name, then run this again"
        ) from exc
    reason = error.str() if isinstance(error, KafkaError) else str(exc)
    raise AclError(
        f"could not {what}: {reason}. ACLs are changed by a super user (sluice-operator): "
        "check SLUICE_KAFKA__OPTIONS and the password"
    ) from exc


def existing_grants(admin: AclAdmin, timeout: float = 30.0) -> list[Grant]:
    """Every binding on the cluster, as grants."""
    try:
        bindings = admin.describe_acls(_EVERY_BINDING, request_timeout=timeout).result()
    except KafkaException as exc:
        _raise(exc, "list the cluster's ACL bindings")
    return sorted(grant_of(b) for b in bindings)


@dataclass
class ApplyResult:
    """What ``apply_plan`` did: bindings created and deleted, and each failure's reason."""

    created: list[Grant] = field(default_factory=list)
    deleted: list[Grant] = field(default_factory=list)
    failed: list[tuple[Grant, str]] = field(default_factory=list)


def apply_plan(admin: AclAdmin, plan: AclPlan, timeout: float = 30.0) -> ApplyResult:
    """Create the plan's missing bindings, then delete its stale ones.

    Creation comes first, so a principal is never left with less than both the old and
    the new declaration grant while the change is under way.
    """
    result = ApplyResult()
    if plan.create:
        bindings = [binding_of(g) for g in plan.create]
        futures = admin.create_acls(bindings, request_timeout=timeout)
        _collect(plan.create, [futures[b] for b in bindings], result.created, result)
    if plan.delete:
        filters = [_filter_of(g) for g in plan.delete]
        futures = admin.delete_acls(filters, request_timeout=timeout)
        _collect(plan.delete, [futures[f] for f in filters], result.deleted, result)
    return result


def _collect(
    grants: Sequence[Grant], futures: Iterable[Any], done: list[Grant], result: ApplyResult
) -> None:
    for grant, future in zip(grants, futures, strict=True):
        try:
            future.result()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.SECURITY_DISABLED:
                _raise(exc, "change ACL bindings")
            result.failed.append(
                (grant, error.str() if isinstance(error, KafkaError) else str(exc))
            )
        else:
            done.append(grant)
