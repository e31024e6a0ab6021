"""An in-memory stand-in for the ACL part of confluent-kafka's ``AdminClient``."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)


def _done(value: Any = None, error: KafkaError | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is not None:
        future.set_exception(KafkaException(error))
    else:
        future.set_result(value)
    return future


def _matches(flt: AclBindingFilter, binding: AclBinding) -> bool:
    """The broker's filter semantics for the exact filters Sluice sends (and ANY)."""
    pairs = [
        (flt.restype, binding.restype, ResourceType.ANY),
        (flt.resource_pattern_type, binding.resource_pattern_type, ResourcePatternType.ANY),
        (flt.operation, binding.operation, AclOperation.ANY),
        (flt.permission_type, binding.permission_type, AclPermissionType.ANY),
    ]
    if any(want not in (anything, have) for want, have, anything in pairs):
        return False
    return all(
        want is None or want == have
        for want, have in (
            (flt.name, binding.name),
            (flt.principal, binding.principal),
            (flt.host, binding.host),
        )
    )


class FakeAclAdmin:
    """Keeps bindings in a list; ``disabled`` answers like a broker without an authorizer.

    ``refuse`` holds resource names whose creation the fake refuses (as a broker refuses
    a binding it cannot store), so tests can see a partial failure.
    """

    def __init__(self, bindings: list[AclBinding] | None = None, *, disabled: bool = False):
        self.bindings: list[AclBinding] = list(bindings or [])
        self.disabled = disabled
        self.refuse: set[str] = set()
        self.calls: list[str] = []

    def _disabled(self) -> KafkaError | None:
        if self.disabled:
            return KafkaError(KafkaError.SECURITY_DISABLED, "No Authorizer is configured")
        return None

    def describe_acls(self, acl_binding_filter: AclBindingFilter, **_kwargs: Any) -> Future[Any]:
        self.calls.append("describe")
        error = self._disabled()
        found = [b for b in self.bindings if _matches(acl_binding_filter, b)]
        return _done(found if error is None else None, error)

    def create_acls(self, acls: list[AclBinding], **_kwargs: Any) -> dict[AclBinding, Future[Any]]:
        self.calls.append("create")
        futures: dict[AclBinding, Future[Any]] = {}
        for binding in acls:
            error = self._disabled()
            if error is None and binding.name in self.refuse:
                error = KafkaError(KafkaError.INVALID_REQUEST, "refused by the test")
            if error is None and binding not in self.bindings:
                self.bindings.append(binding)
            futures[binding] = _done(None, error)
        return futures

    def delete_acls(
        self, acl_binding_filters: list[AclBindingFilter], **_kwargs: Any
    ) -> dict[AclBindingFilter, Future[Any]]:
        self.calls.append("delete")
        futures: dict[AclBindingFilter, Future[Any]] = {}
        for flt in acl_binding_filters:
            error = self._disabled()
            gone = [b for b in self.bindings if _matches(flt, b)]
            if error is None:
                self.bindings = [b for b in self.bindings if b not in gone]
            futures[flt] = _done(gone if error is None else None, error)
        return futures
