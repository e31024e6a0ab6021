"""``sluice schemas apply``: create the catalog's topics and register its schemas.

Idempotent: running it twice changes nothing the second time. It is also the
gate for schema evolution: every changed schema is first tested against its
subject's compatibility level (BACKWARD_TRANSITIVE unless the catalog says
otherwise), and if any change is incompatible nothing is registered and the
registry's own reason is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.contracts.catalog import Catalog, TopicSpec
from streams.errors import ConfigurationError
from streams.settings import RegistrySettings


class IncompatibleSchemaError(ConfigurationError):
    """At least one schema change breaks its subject's compatibility level."""

    def __init__(self, refusals: list[SubjectChange]) -> None:
        self.refusals = refusals
        lines = "\n".join(f"  {r.subject}: {r.detail}" for r in refusals)
        super().__init__(
            "incompatible schema change(s); nothing was registered. Make each change "
            "compatible with the subject's level (e.g. give a new field a default) or "
            f"change the subject's `compatibility` in schemas/topics.yaml:\n{lines}"
        )


@dataclass(frozen=True)
class SubjectChange:
    """What apply did (or refused) for one subject."""

    subject: str
    schema: str
    action: str  # registered, unchanged, evolved, refused
    version: int | None = None
    schema_id: int | None = None
    detail: str = ""


def plan(
    settings: RegistrySettings, catalog: Catalog, specs: Iterable[TopicSpec]
) -> list[SubjectChange]:
    """Check every Avro topic's schema against its subject without registering anything."""
    client = SchemaRegistryClient(settings.client_config())
    changes = []
    for spec in specs:
        if not spec.is_avro:
            continue
        schema = Schema(catalog.schemas[spec.value].document, "AVRO")
        try:
            existing = client.lookup_schema(spec.subject, schema)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise
        else:
            changes.append(
                SubjectChange(
                    spec.subject, spec.value, "unchanged", existing.version, existing.schema_id
                )
            )
            continue
        if not _has_versions(client, spec.subject):
            changes.append(SubjectChange(spec.subject, spec.value, "registered"))
            continue
        _set_compatibility(client, spec)
        compatible, messages = check_compatibility(settings, spec, schema)
        if compatible:
            changes.append(SubjectChange(spec.subject, spec.value, "evolved"))
        else:
            detail = "; ".join(messages) or (
                f"not {spec.compatibility} compatible with the registered versions"
            )
            changes.append(SubjectChange(spec.subject, spec.value, "refused", detail=detail))
    return changes


def apply(
    settings: RegistrySettings, catalog: Catalog, specs: Iterable[TopicSpec]
) -> list[SubjectChange]:
    """Register every new or evolved schema; refuse all if any change is incompatible."""
    specs = list(specs)
    client = SchemaRegistryClient(settings.client_config())
    planned = plan(settings, catalog, specs)
    refused = [c for c in planned if c.action == "refused"]
    if refused:
        raise IncompatibleSchemaError([_with_registry_reason(client, catalog, c) for c in refused])
    by_subject = {s.subject: s for s in specs}
    result = []
    for change in planned:
        spec = by_subject[change.subject]
        if change.action == "unchanged":
            _set_compatibility(client, spec)
            result.append(change)
            continue
        schema = Schema(catalog.schemas[spec.value].document, "AVRO")
        try:
            schema_id = client.register_schema(spec.subject, schema)
        except SchemaRegistryError as exc:
            raise IncompatibleSchemaError(
                [SubjectChange(spec.subject, spec.value, "refused", detail=exc.error_message)]
            ) from exc
        _set_compatibility(client, spec)
        registered = client.lookup_schema(spec.subject, schema)
        result.append(
            SubjectChange(spec.subject, spec.value, change.action, registered.version, schema_id)
        )
    return result


def _with_registry_reason(
    client: SchemaRegistryClient, catalog: Catalog, change: SubjectChange
) -> SubjectChange:
    """Ask the registry itself why a change is refused.

    Not every registry explains a failed compatibility test (Apicurio answers a
    bare ``is_compatible: false``), but all of them explain a refused
    registration. The registry's compatibility rule refuses it, so nothing is
    registered; if it were accepted after all, the registry judged it compatible
    and the change stands as evolved.
    """
    schema = Schema(catalog.schemas[change.schema].document, "AVRO")
    try:
        schema_id = client.register_schema(change.subject, schema)
    except SchemaRegistryError as exc:
        return SubjectChange(change.subject, change.schema, "refused", detail=exc.error_message)
    return SubjectChange(change.subject, change.schema, "evolved", schema_id=schema_id)


def _has_versions(client: SchemaRegistryClient, subject: str) -> bool:
    try:
        return bool(client.get_versions(subject))
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:
            return False
        raise


def _set_compatibility(client: SchemaRegistryClient, spec: TopicSpec) -> None:
    try:
        current = client.get_compatibility(spec.subject)
    except SchemaRegistryError:
        current = None
    if current != spec.compatibility:
        client.set_compatibility(spec.subject, spec.compatibility)


def check_compatibility(
    settings: RegistrySettings, spec: TopicSpec, schema: Schema
) -> tuple[bool, list[str]]:
    """Test ``schema`` against every version its subject's level covers, with the reasons.

    Confluent's ``/compatibility/subjects/<s>/versions`` (no version) applies the
    subject's level, transitive ones included; ``verbose=true`` returns the
    registry's explanation, which confluent-kafka's client drops.
    """
    auth = None
    if settings.basic_auth_user_info is not None:
        user, _, password = settings.basic_auth_user_info.get_secret_value().partition(":")
        auth = (user, password)
    response = httpx.post(
        f"{settings.url}/compatibility/subjects/{quote(spec.subject, safe='')}/versions",
        params={"verbose": "true"},
        json={"schema": schema.schema_str, "schemaType": "AVRO"},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        auth=auth,
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    return bool(body.get("is_compatible")), [str(m) for m in body.get("messages") or []]
