"""Who may do what on Kafka (``schemas/acls.yaml``): the declaration, checked and rendered.

The declaration names, per principal, the catalog topics it may read and write, its
consumer groups, transactional ids, cluster operations and the topics outside the
catalog that its engine creates itself (faust's changelogs, Connect's internal
topics). Topic names are logical and checked against the catalog when the file is
loaded, so a typo or a renamed topic fails there, naming the principal and the topic,
not later as an authorization error in a running processor.

Rendering turns the declaration into ``Grant``s for one deployment: catalog topics
behind the deployment's topic prefix, groups and transactional ids behind its group
prefix, so sandboxes and environments that share a cluster each get their own
bindings. The diff (``plan``) is a pure function over grants; the Kafka calls live in
``streams.runtime.acls``.
"""

from __future__ import annotations

import fnmatch
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.contracts.catalog import Catalog
from streams.errors import ConfigurationError
from streams.settings import Settings

ACLS_FILE = "acls.yaml"
#: Kafka's name of the cluster resource (the only one a cluster binding can name).
CLUSTER_NAME = "kafka-cluster"
#: Suffix that makes a group, transactional id or internal topic name a prefix pattern.
FAMILY = "*"

ResourceKind = Literal["TOPIC", "GROUP", "TRANSACTIONAL_ID", "CLUSTER"]
PatternKind = Literal["LITERAL", "PREFIXED"]
#: The operations a declaration may grant. READ and WRITE imply DESCRIBE on the broker.
Operation = Literal["READ", "WRITE", "DESCRIBE", "CREATE", "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TENANT = "{tenant}"


class AclDeclarationError(ConfigurationError, ValueError):
    """``acls.yaml`` is malformed or names something the catalog does not have."""


@dataclass(frozen=True, order=True)
class Grant:
    """One access control entry, in the broker's terms.

    ``principal`` is the full Kafka principal (``User:sluice-guard``); ``name`` the
    physical resource name (or the prefix, for ``PREFIXED``). Bindings read back from
    the broker become grants too, with whatever operation, permission and host they
    have, so that the diff can compare and delete them exactly.
    """

    principal: str
    resource: str
    name: str
    pattern: str
    operation: str
    permission: str = "ALLOW"
    host: str = "*"

    def describe(self) -> str:
        """One readable line: ``ALLOW WRITE on TOPIC inference.requests.safe (LITERAL)``."""
        where = "" if self.host == "*" else f" from {self.host}"
        return (
            f"{self.permission} {self.operation} on {self.resource} {self.name} "
            f"({self.pattern}){where}"
        )


class _InternalTopic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    operations: list[Operation] = Field(min_length=1)


class PrincipalEntry(BaseModel):
    """What one principal may do (see the comments of ``schemas/acls.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    read: list[str] = Field(default_factory=list)
    write: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    transactional_ids: list[str] = Field(default_factory=list)
    cluster: list[Operation] = Field(default_factory=list)
    internal_topics: list[_InternalTopic] = Field(default_factory=list)


class _AclFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tenants: list[str] = Field(default_factory=list)
    principals: dict[str, PrincipalEntry]

    @field_validator("tenants")
    @classmethod
    def _tenant_ids(cls, tenants: list[str]) -> list[str]:
        for tenant in tenants:
            if not _SAFE_NAME.match(tenant):
                raise ValueError(
                    f"tenant id {tenant!r} may hold only letters, digits, '.', '_' and '-'"
                )
        if len(set(tenants)) != len(tenants):
            raise ValueError("a tenant id is listed twice; list each once")
        return tenants


@dataclass(frozen=True)
class AclNames:
    """The names of one deployment that the declaration's placeholders stand for."""

    topic_prefix: str = ""
    group_prefix: str = "sluice"
    connect_group: str = "sluice-connect"

    @classmethod
    def of(cls, settings: Settings) -> AclNames:
        """The names of the deployment ``settings`` describe."""
        return cls(
            topic_prefix=settings.topic_prefix,
            group_prefix=settings.runner.group_prefix,
            connect_group=settings.stack.connect_group_id,
        )

    def fill(self, template: str) -> str:
        """``{group}`` and ``{connect}`` replaced by this deployment's prefixes."""
        return template.replace("{group}", self.group_prefix).replace(
            "{connect}", self.connect_group
        )


@dataclass(frozen=True)
class AclDeclaration:
    """The loaded declaration: principals by user name, tenants expanded, topics checked.

    ``read``/``write`` of each principal hold logical catalog topic names only (globs
    and ``{dataset}`` already expanded); ``tenant_template`` is the principal name with
    ``{tenant}`` in it, so that ``apply`` also manages (and so revokes) the bindings of a
    tenant removed from the list.
    """

    principals: dict[str, PrincipalEntry]
    tenant_template: str | None = None
    source: Path | None = field(default=None, compare=False)

    def principal_names(self) -> list[str]:
        """Every declared principal, as Kafka writes it (``User:<name>``)."""
        return [f"User:{name}" for name in sorted(self.principals)]

    def manages(self, principal: str) -> bool:
        """True when ``apply`` owns the bindings of ``principal`` (declared, or a tenant)."""
        if principal in self.principal_names():
            return True
        if self.tenant_template is None or not principal.startswith("User:"):
            return False
        before, _, after = self.tenant_template.partition(_TENANT)
        user = principal.removeprefix("User:")
        return (
            len(user) > len(before) + len(after)
            and user.startswith(before)
            and user.endswith(after)
        )

    def grants(self, catalog: Catalog, names: AclNames) -> list[Grant]:
        """Every binding the declaration asks for, for one deployment, sorted."""
        found: set[Grant] = set()
        for user, entry in self.principals.items():
            principal = f"User:{user}"

            def add(resource: str, name: str, operation: str, *, _p: str = principal) -> None:
                pattern = "LITERAL"
                if name.endswith(FAMILY):
                    name, pattern = name[: -len(FAMILY)], "PREFIXED"
                found.add(Grant(_p, resource, name, pattern, operation))

            for topic in entry.read:
                add("TOPIC", catalog.physical(topic), "READ")
            for topic in entry.write:
                add("TOPIC", catalog.physical(topic), "WRITE")
            for group in entry.groups:
                add("GROUP", names.fill(group), "READ")
            for transactional_id in entry.transactional_ids:
                add("TRANSACTIONAL_ID", names.fill(transactional_id), "WRITE")
            for operation in entry.cluster:
                add("CLUSTER", CLUSTER_NAME, operation)
            for internal in entry.internal_topics:
                for operation in internal.operations:
                    add("TOPIC", names.fill(internal.name), operation)
        return sorted(found)


def load_acls(schemas_dir: Path, catalog: Catalog) -> AclDeclaration:
    """Read ``acls.yaml`` beside the catalog and check it against the catalog."""
    path = schemas_dir / ACLS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AclDeclarationError(
            f"cannot read the ACL declaration {path}: {exc}; it lives beside topics.yaml "
            "(`sluice schemas apply --no-acls` leaves ACLs alone)"
        ) from exc
    return parse_acls(text, catalog, path)


def parse_acls(text: str, catalog: Catalog, source: Path | None = None) -> AclDeclaration:
    """The declaration in ``text`` (YAML), checked against ``catalog``."""
    try:
        raw: Any = yaml.safe_load(text) or {}
        spec = _AclFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise AclDeclarationError(
            f"{source or ACLS_FILE} is not a valid ACL declaration:\n{exc}"
        ) from exc
    return declaration_of(spec, catalog, source)


def declaration_of(spec: _AclFile, catalog: Catalog, source: Path | None) -> AclDeclaration:
    """Expand tenants, globs and ``{dataset}``; refuse names the catalog does not have."""
    where = str(source or ACLS_FILE)
    principals: dict[str, PrincipalEntry] = {}
    template: str | None = None
    for name, entry in spec.principals.items():
        _check_principal_name(where, name)
        _check_placeholders(where, name, entry)
        checked = entry.model_copy(
            update={
                "read": _topics(where, name, entry.read, catalog),
                "write": _topics(where, name, entry.write, catalog),
            }
        )
        if _TENANT in name:
            if template is not None:
                raise AclDeclarationError(
                    f"{where}: principals {template!r} and {name!r} both stand for every "
                    "tenant; keep one"
                )
            template = name
            for tenant in spec.tenants:
                _add(where, principals, name.replace(_TENANT, tenant), checked)
        else:
            _add(where, principals, name, checked)
    if spec.tenants and template is None:
        raise AclDeclarationError(
            f"{where}: `tenants` lists tenants but no principal has {_TENANT} in its name; "
            "add one (e.g. `tenant-{tenant}`) or remove the list"
        )
    return AclDeclaration(principals=principals, tenant_template=template, source=source)


def _add(
    where: str, principals: dict[str, PrincipalEntry], name: str, entry: PrincipalEntry
) -> None:
    if name in principals:
        raise AclDeclarationError(f"{where}: principal {name!r} is declared twice; keep one")
    principals[name] = entry


def _check_principal_name(where: str, name: str) -> None:
    bare = name.replace(_TENANT, "t")
    if name.count(_TENANT) > 1 or not _SAFE_NAME.match(bare):
        raise AclDeclarationError(
            f"{where}: principal {name!r} is not a user name: use letters, digits, '.', '_' "
            f"and '-' (and {_TENANT} once, for the tenants' template); the 'User:' prefix is "
            "added for you"
        )


def _check_placeholders(where: str, principal: str, entry: PrincipalEntry) -> None:
    """Only ``{group}`` and ``{connect}`` in names outside the catalog."""
    names = [
        *entry.groups,
        *entry.transactional_ids,
        *(internal.name for internal in entry.internal_topics),
    ]
    for name in names:
        fields = {f for _, f, _, _ in string.Formatter().parse(name) if f is not None}
        unknown = fields - {"group", "connect"}
        if unknown:
            raise AclDeclarationError(
                f"{where}: principal {principal!r}: {name!r} uses {sorted(unknown)}; only "
                "{group} (the consumer group prefix) and {connect} (the Connect group) are known"
            )
        stem = name.removesuffix(FAMILY)
        if FAMILY in stem or not stem:
            raise AclDeclarationError(
                f"{where}: principal {principal!r}: {name!r}: '*' may only end a name, "
                "after at least one character, to mean every name that starts so"
            )


def _topics(where: str, principal: str, patterns: Iterable[str], catalog: Catalog) -> list[str]:
    """Logical topic names: ``{dataset}`` per dataset, globs matched over the catalog."""
    found: list[str] = []
    for pattern in patterns:
        expanded = (
            [pattern.replace("{dataset}", d) for d in sorted(catalog.datasets)]
            if "{dataset}" in pattern
            else [pattern]
        )
        for name in expanded:
            if "{" in name:
                raise AclDeclarationError(
                    f"{where}: principal {principal!r}: topic {pattern!r} uses a placeholder "
                    "other than {dataset}; topic names are the catalog's logical names"
                )
            if any(ch in name for ch in "*?["):
                matches = sorted(t for t in catalog.topics if fnmatch.fnmatchcase(t, name))
                if not matches:
                    raise AclDeclarationError(
                        f"{where}: principal {principal!r}: topic pattern {pattern!r} matches "
                        "no topic of the catalog (schemas/topics.yaml); fix or remove it"
                    )
                found += matches
            elif name not in catalog.topics:
                raise AclDeclarationError(
                    f"{where}: principal {principal!r} names topic {name!r}, which is not in "
                    "the catalog (schemas/topics.yaml); fix the name or add the topic there"
                )
            else:
                found.append(name)
    return sorted(set(found))


# -- the diff -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AclPlan:
    """What ``apply`` changes: bindings to create, bindings to delete, bindings already right."""

    create: list[Grant]
    delete: list[Grant]
    kept: list[Grant]

    @property
    def changes(self) -> bool:
        """True when applying the plan would change the cluster."""
        return bool(self.create or self.delete)


def _first_segment(name: str) -> str:
    """``inference`` of ``inference.requests.safe``: what a namespace's names start with."""
    return name.split(".", 1)[0]


def scope(desired: Iterable[Grant], catalog: Catalog, names: AclNames) -> Callable[[Grant], bool]:
    """Which existing bindings of managed principals belong to this deployment.

    A cluster shared by several deployments (environments, test sandboxes) holds the
    bindings of all of them, for the same principals, and ``apply`` must never delete
    another deployment's. A binding is this deployment's when it is one of its declared
    bindings, names one of its names (a catalog topic, a declared group or transactional
    id, or a name inside one of its declared families), is a prefix that covers one of
    those names, or lies under its topic or group prefix. The cluster and the ``*``
    wildcard reach every deployment, so every deployment manages them.

    Under a prefix, a name is ours only when it goes on as this deployment's names do
    (``sbx1.inference.…``, ``sluice.guard…``): another deployment whose prefix extends
    ours (``sluice.staging`` under ``sluice``, ``sbx1.x.`` under ``sbx1.``) goes on
    differently and is left alone. Likewise a prefix binding strictly inside one of our
    families is another deployment's family (the Connect group ``sluice-connect-staging``
    inside ``sluice-connect``): our declaration makes only the family itself.
    """
    wanted = list(desired)
    declared = {(g.resource, g.name, g.pattern) for g in wanted}
    literal: dict[str, set[str]] = {"TOPIC": {catalog.physical(t) for t in catalog.topics}}
    families: dict[str, set[str]] = {}
    for grant in wanted:
        kept = literal if grant.pattern == "LITERAL" else families
        kept.setdefault(grant.resource, set()).add(grant.name)
    group_namespace = names.group_prefix + "."
    namespaces = {
        "TOPIC": (catalog.prefix, {_first_segment(t) for t in catalog.topics}),
        "GROUP": (group_namespace, set[str]()),
        "TRANSACTIONAL_ID": (group_namespace, set[str]()),
    }
    for grant in wanted:
        namespace, roots = namespaces.get(grant.resource, ("", set()))
        if namespace and grant.name.startswith(namespace):
            roots.add(_first_segment(grant.name[len(namespace) :]))

    def under_namespace(binding: Grant) -> bool:
        namespace, roots = namespaces.get(binding.resource, ("", set()))
        if not namespace or not binding.name.startswith(namespace):
            return False
        rest = binding.name[len(namespace) :]
        return rest == "" or _first_segment(rest) in roots

    def in_scope(binding: Grant) -> bool:
        if binding.resource == "CLUSTER" or binding.name == "*":
            return True
        if (binding.resource, binding.name, binding.pattern) in declared:
            return True
        ours = literal.get(binding.resource, set())
        if binding.pattern == "LITERAL":
            inside_family = any(
                binding.name.startswith(f) for f in families.get(binding.resource, ())
            )
            if binding.name in ours or inside_family:
                return True
        elif any(name.startswith(binding.name) for name in ours):
            return True
        return under_namespace(binding)

    return in_scope


def plan(
    desired: Iterable[Grant],
    existing: Iterable[Grant],
    manages: Callable[[str], bool],
    in_scope: Callable[[Grant], bool],
) -> AclPlan:
    """Create what is declared and missing; delete what a managed principal has undeclared.

    Bindings of principals the declaration does not manage, bindings outside this
    deployment's scope, and DENY bindings (deleting one could only widen access; an
    operator who added one meant it) are never touched.
    """
    wanted = set(desired)
    have = set(existing)
    create = sorted(wanted - have)
    delete = sorted(
        g for g in have - wanted if g.permission == "ALLOW" and manages(g.principal) and in_scope(g)
    )
    kept = sorted(wanted & have)
    return AclPlan(create=create, delete=delete, kept=kept)
