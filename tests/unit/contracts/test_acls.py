"""The ACL declaration: checked against the catalog, rendered per deployment, diffed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streams.contracts.acls import (
    AclDeclaration,
    AclDeclarationError,
    AclNames,
    Grant,
    load_acls,
    parse_acls,
    plan,
    scope,
)
from streams.contracts.catalog import Catalog, load_catalog
from streams.settings import PROJECT_ROOT

SCHEMAS = PROJECT_ROOT / "schemas"
PREFIXED = AclNames(topic_prefix="sbx1.", group_prefix="sbx1", connect_group="sluice-connect")
#: The principals of the tenants the shipped declaration lists (acme and globex among them).
TENANT_PRINCIPALS = {
    f"tenant-{t}" for t in yaml.safe_load((SCHEMAS / "acls.yaml").read_text())["tenants"]
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(SCHEMAS, prefix="sbx1.")


@pytest.fixture(scope="module")
def declaration(catalog: Catalog) -> AclDeclaration:
    return load_acls(SCHEMAS, catalog)


@pytest.fixture(scope="module")
def grants(declaration: AclDeclaration, catalog: Catalog) -> list[Grant]:
    return declaration.grants(catalog, PREFIXED)


def _topics(grants: list[Grant], principal: str, operation: str) -> set[str]:
    return {
        g.name
        for g in grants
        if g.principal == f"User:{principal}" and g.resource == "TOPIC" and g.operation == operation
    }


def _who(grants: list[Grant], topic: str, operation: str) -> set[str]:
    return {
        g.principal.removeprefix("User:")
        for g in grants
        if g.resource == "TOPIC" and g.operation == operation and g.name == topic
    }


# -- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "principals:\n  sluice-guard:\n    description: x\n"
            "    write: [inference.request.safe]\n",
            "principal 'sluice-guard' names topic 'inference.request.safe', which is not in",
        ),
        (
            "principals:\n  sluice-sink:\n    description: x\n    read: ['nothing.*']\n",
            "principal 'sluice-sink': topic pattern 'nothing.*' matches no topic",
        ),
        (
            "principals:\n  sluice-drift:\n    description: x\n    read: ['{model}.validated']\n",
            "principal 'sluice-drift': topic '{model}.validated' uses a placeholder",
        ),
        (
            "principals:\n  sluice-infer:\n    description: x\n    groups: ['{prefix}.infer']\n",
            "principal 'sluice-infer': '{prefix}.infer' uses ['prefix']",
        ),
        (
            "principals:\n  sluice-infer:\n    description: x\n    groups: ['{group}*.infer']\n",
            "'*' may only end a name",
        ),
        (
            "tenants: [acme]\nprincipals:\n  sluice-infer:\n    description: x\n",
            "no principal has {tenant} in its name",
        ),
        (
            "tenants: ['ac me']\nprincipals:\n  tenant-{tenant}:\n    description: x\n",
            "tenant id 'ac me' may hold only",
        ),
        (
            "tenants: [acme]\nprincipals:\n  tenant-{tenant}:\n    description: x\n"
            "  tenant-acme:\n    description: y\n",
            "principal 'tenant-acme' is declared twice",
        ),
        (
            "principals:\n  User:sluice-infer:\n    description: x\n",
            "is not a user name",
        ),
        (
            "principals:\n  sluice-infer:\n    description: x\n    writes: [inference.responses]\n",
            "Extra inputs are not permitted",
        ),
        (
            "principals:\n  sluice-infer:\n    description: x\n    cluster: [ALL]\n",
            "is not a valid ACL declaration",
        ),
    ],
)
def test_a_declaration_that_does_not_fit_the_catalog_is_refused_with_its_principal(
    catalog: Catalog, text: str, expected: str
) -> None:
    with pytest.raises(AclDeclarationError) as error:
        parse_acls(text, catalog, Path("acls.yaml"))
    assert expected in str(error.value)


def test_a_missing_declaration_says_where_it_belongs(catalog: Catalog, tmp_path: Path) -> None:
    with pytest.raises(AclDeclarationError, match=r"beside topics\.yaml"):
        load_acls(tmp_path, catalog)


def test_dataset_placeholders_and_globs_expand_over_the_catalog(catalog: Catalog) -> None:
    text = "principals:\n  reader:\n    description: x\n    read: ['raw.{dataset}', 'metering.*']\n"
    entry = parse_acls(text, catalog).principals["reader"]
    assert "raw.support_tickets" in entry.read
    assert "raw.support_tickets.dlq" not in entry.read, "{dataset} is one topic per dataset"
    assert {"metering.usage", "metering.usage.dlq", "metering.budgets"} <= set(entry.read)


# -- rendering for one deployment ----------------------------------------------------------
def test_bindings_follow_the_topic_and_group_prefixes(grants: list[Grant]) -> None:
    guard = {g for g in grants if g.principal == "User:sluice-guard"}
    assert (
        Grant("User:sluice-guard", "TOPIC", "sbx1.inference.requests.safe", "LITERAL", "WRITE")
        in guard
    )
    assert Grant("User:sluice-guard", "GROUP", "sbx1.guard", "LITERAL", "READ") in guard
    assert (
        Grant("User:sluice-guard", "TRANSACTIONAL_ID", "sbx1.guard.", "PREFIXED", "WRITE") in guard
    )
    assert Grant("User:sluice-guard", "GROUP", "sbx1.budget-view.", "PREFIXED", "READ") in guard
    topics = [g.name for g in grants if g.resource == "TOPIC" and g.pattern == "LITERAL"]
    assert topics and all(name.startswith("sbx1.") for name in topics)
    assert not [g for g in grants if g.resource == "GROUP" and g.name.startswith("sluice.")]


def test_engines_internal_topics_are_prefix_patterns_named_from_their_group(
    grants: list[Grant],
) -> None:
    meter = {(g.name, g.pattern, g.operation) for g in grants if g.principal == "User:sluice-meter"}
    assert ("sbx1.meter-", "PREFIXED", "CREATE") in meter
    connect = {
        (g.resource, g.name, g.pattern) for g in grants if g.principal == "User:sluice-connect"
    }
    assert ("TOPIC", "_sluice-connect-", "PREFIXED") in connect
    assert ("TRANSACTIONAL_ID", "connect-cluster-sluice-connect", "LITERAL") in connect
    assert ("TRANSACTIONAL_ID", "sluice-connect-", "PREFIXED") in connect


def test_each_tenant_gets_its_own_principal(
    declaration: AclDeclaration, grants: list[Grant]
) -> None:
    assert {"tenant-acme", "tenant-globex"} <= set(declaration.principals)
    assert _topics(grants, "tenant-acme", "WRITE") == {
        "sbx1.inference.requests",
        "sbx1.raw.support_tickets",
    }
    assert not _topics(grants, "tenant-acme", "READ")
    assert not [g for g in grants if g.principal == "User:tenant-acme" and g.resource != "TOPIC"]


# -- least privilege -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("topic", "writers"),
    [
        ("inference.requests.safe", {"sluice-guard"}),
        ("inference.requests.blocked", {"sluice-guard"}),
        ("pii.findings", {"sluice-guard"}),
        ("inference.results", {"sluice-guard"}),
        ("inference.responses", {"sluice-infer"}),
        ("metering.usage", {"sluice-meter"}),
        ("metering.windows", {"sluice-meter"}),
        ("metering.budgets", {"sluice-meter"}),
        ("metering.alerts", {"sluice-meter"}),
        ("drift.state", {"sluice-drift"}),
        ("support_tickets.validated", {"sluice-validate"}),
        # The tenants' producers, and the gateway producing for its callers' tenants.
        ("inference.requests", TENANT_PRINCIPALS | {"sluice-gateway"}),
        ("raw.support_tickets", TENANT_PRINCIPALS | {"sluice-connect"}),
        # Written by the operator only, a super user: no binding at all.
        ("audit.events", set()),
        ("drift.profiles", set()),
    ],
)
def test_only_its_producer_may_write_a_topic(
    grants: list[Grant], topic: str, writers: set[str]
) -> None:
    assert _who(grants, f"sbx1.{topic}", "WRITE") == writers


def test_only_guard_and_the_sink_read_raw_prompts(grants: list[Grant]) -> None:
    assert _who(grants, "sbx1.inference.requests", "READ") == {"sluice-guard", "sluice-sink"}
    assert _who(grants, "sbx1.inference.responses", "READ") == {"sluice-guard"}


def test_only_the_sink_reads_dead_letters_and_the_audit_trail(
    grants: list[Grant], catalog: Catalog
) -> None:
    for topic in [*catalog.dlq_topics, "audit.events"]:
        assert _who(grants, catalog.physical(topic), "READ") == {"sluice-sink"}, topic


def test_no_binding_reaches_every_resource(grants: list[Grant]) -> None:
    assert not [g for g in grants if g.name in ("*", "")]
    assert not [g for g in grants if g.resource == "CLUSTER"]


# -- the diff --------------------------------------------------------------------------------
def _g(principal: str, name: str, operation: str = "WRITE", **kw: str) -> Grant:
    return Grant(
        f"User:{principal}",
        kw.pop("resource", "TOPIC"),
        name,
        kw.pop("pattern", "LITERAL"),
        operation,
        **kw,
    )


def test_plan_creates_what_is_missing_and_deletes_what_is_undeclared(
    declaration: AclDeclaration, catalog: Catalog, grants: list[Grant]
) -> None:
    stray = _g("tenant-acme", "sbx1.inference.requests.safe")
    existing = [*grants[1:], stray]
    changes = plan(grants, existing, declaration.manages, scope(grants, catalog, PREFIXED))
    assert changes.create == [grants[0]]
    assert changes.delete == [stray]
    assert len(changes.kept) == len(grants) - 1


def test_a_second_plan_after_applying_changes_nothing(
    declaration: AclDeclaration, catalog: Catalog, grants: list[Grant]
) -> None:
    changes = plan(grants, grants, declaration.manages, scope(grants, catalog, PREFIXED))
    assert not changes.changes and changes.kept == sorted(grants)


@pytest.mark.parametrize(
    ("binding", "why"),
    [
        (_g("alice", "sbx1.inference.requests.safe"), "a principal the declaration does not name"),
        (_g("sluice-guard", "sbx2.inference.requests.safe"), "another sandbox's topic"),
        (_g("sluice-guard", "sbx2.guard", "READ", resource="GROUP"), "another sandbox's group"),
        (
            _g("tenant-acme", "sbx1.inference.requests.safe", permission="DENY"),
            "a DENY an operator added",
        ),
    ],
)
def test_plan_never_touches_what_is_not_this_deployments(
    declaration: AclDeclaration, catalog: Catalog, grants: list[Grant], binding: Grant, why: str
) -> None:
    changes = plan(
        grants, [*grants, binding], declaration.manages, scope(grants, catalog, PREFIXED)
    )
    assert changes.delete == [], why


@pytest.mark.parametrize(
    "binding",
    [
        _g("sluice-infer", "*", "READ"),  # every topic
        _g("sluice-infer", "sbx1.", "READ", pattern="PREFIXED"),  # every topic of the sandbox
        _g("sluice-infer", "sbx1.inference.", "READ", pattern="PREFIXED"),
        _g("sluice-guard", "sbx1.sink", "READ", resource="GROUP"),
        _g("sluice-guard", "kafka-cluster", "ALTER", resource="CLUSTER"),
        _g("tenant-soylent", "sbx1.inference.requests"),  # a tenant not (or no longer) listed
    ],
)
def test_plan_deletes_undeclared_grants_that_reach_this_deployment(
    declaration: AclDeclaration, catalog: Catalog, grants: list[Grant], binding: Grant
) -> None:
    changes = plan(
        grants, [*grants, binding], declaration.manages, scope(grants, catalog, PREFIXED)
    )
    assert changes.delete == [binding]


def test_a_deployment_without_a_topic_prefix_leaves_sandboxes_alone(
    declaration: AclDeclaration,
) -> None:
    main = load_catalog(SCHEMAS)
    names = AclNames()
    grants = declaration.grants(main, names)
    sandboxed = _g("sluice-guard", "sbx1.inference.requests.safe")
    mine = _g("tenant-acme", "inference.requests.safe")
    changes = plan(
        grants, [*grants, sandboxed, mine], declaration.manages, scope(grants, main, names)
    )
    assert changes.delete == [mine]


#: Deployments on one cluster: (topic prefix, group prefix, Connect group). ``staging``
#: nests in ``default`` (its group and Connect group extend default's), ``nested`` in
#: ``sbx1`` (its topic and group prefixes extend sbx1's).
DEPLOYMENTS = {
    "default": AclNames("", "sluice", "sluice-connect"),
    "sbx1": PREFIXED,
    "sbx2": AclNames("sbx2.", "sbx2", "sluice-connect"),
    "staging": AclNames("staging.", "sluice.staging", "sluice-connect-staging"),
    "nested": AclNames("sbx1.x.", "sbx1.x", "sluice-connect"),
}


def _deployment(declaration: AclDeclaration, names: AclNames) -> tuple[Catalog, list[Grant]]:
    catalog = load_catalog(SCHEMAS, prefix=names.topic_prefix)
    return catalog, declaration.grants(catalog, names)


@pytest.mark.parametrize("other", sorted(DEPLOYMENTS))
@pytest.mark.parametrize("mine", sorted(DEPLOYMENTS))
def test_apply_never_deletes_another_deployments_bindings(
    declaration: AclDeclaration, mine: str, other: str
) -> None:
    catalog, grants = _deployment(declaration, DEPLOYMENTS[mine])
    _, theirs = _deployment(declaration, DEPLOYMENTS[other])
    changes = plan(
        grants,
        sorted({*grants, *theirs}),
        declaration.manages,
        scope(grants, catalog, DEPLOYMENTS[mine]),
    )
    assert changes.delete == [], f"{mine} would delete {other}'s {changes.delete[:3]}"
    assert changes.create == []


@pytest.mark.parametrize(
    "binding",
    [
        _g("sluice-guard", "sluice.staging.guard", "READ", resource="GROUP"),
        _g("sluice-connect", "_sluice-connect-staging-", "CREATE", pattern="PREFIXED"),
        _g("sluice-infer", "staging.inference.requests.safe", "READ"),
    ],
)
def test_a_deployment_nested_in_the_default_ones_names_is_not_the_defaults(
    declaration: AclDeclaration, binding: Grant
) -> None:
    catalog, grants = _deployment(declaration, DEPLOYMENTS["default"])
    in_scope = scope(grants, catalog, DEPLOYMENTS["default"])
    assert not in_scope(binding)


@pytest.mark.parametrize(
    "binding",
    [
        _g("sluice-infer", "inference.", "READ", pattern="PREFIXED"),  # covers its topics
        _g("sluice-guard", "sluice.", "READ", resource="GROUP", pattern="PREFIXED"),
        _g("sluice-guard", "sluice.sink", "READ", resource="GROUP"),
        _g("sluice-meter", "sluice.meter-state-changelog", "READ"),  # inside its family
        _g("tenant-acme", "raw.support_tickets.dlq"),
    ],
)
def test_the_default_deployment_still_revokes_what_reaches_its_own_names(
    declaration: AclDeclaration, binding: Grant
) -> None:
    catalog, grants = _deployment(declaration, DEPLOYMENTS["default"])
    changes = plan(
        grants,
        [*grants, binding],
        declaration.manages,
        scope(grants, catalog, DEPLOYMENTS["default"]),
    )
    assert changes.delete == [binding]
