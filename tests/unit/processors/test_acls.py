"""schemas/acls.yaml grants each processor exactly what its own declaration reads and writes.

The gateway's entry is checked against its Kafka dispatcher the same way.

Checked both ways: a processor that gains an input or output fails here until the
declaration grants it, and a grant no processor uses fails here until it is removed
(or listed below with the reason the runner's spec cannot show).
"""

from __future__ import annotations

from typing import Any

import pytest

import processors
from processors.guard.replay import DECIDED_TOPICS
from processors.infer.settings import InferSettings
from processors.meter import app as meter_app
from streams.contracts.acls import AclDeclaration, AclNames, Grant, load_acls
from streams.contracts.catalog import Catalog, load_catalog
from streams.gateway import kafka_dispatch
from streams.llm.budgets import BUDGETS_TOPIC
from streams.llm.model_catalog import DEFAULT_LANE, load_models
from streams.runtime.span_export import TOPIC as SPANS
from streams.runtime.spec import ProcessorSpec
from streams.settings import PROJECT_ROOT, Settings
from streams.stack.kafka_security import COMPONENT_PRINCIPALS, SERVICE_PRINCIPALS

SCHEMAS = PROJECT_ROOT / "schemas"
NAMES = AclNames(topic_prefix="", group_prefix="sluice")
RUNNER_PROCESSORS = ["validate", "guard", "guard-stream", "infer", "drift", "sink"]
#: Each principal and the runner processors that log in as it (guard runs guard-stream too).
RUNNER_PRINCIPALS: dict[str, list[str]] = {}
for _name in RUNNER_PROCESSORS:
    RUNNER_PRINCIPALS.setdefault(COMPONENT_PRINCIPALS[_name], []).append(_name)

#: Topics a processor reads outside the runner's inputs, taken from the code that reads them.
EXTRA_READS: dict[str, set[str]] = {
    # BudgetView (streams/llm/budgets.py) and the request-id view (processors/guard/replay.py),
    # both assigned, not subscribed.
    "guard": {BUDGETS_TOPIC, *DECIDED_TOPICS},
    "drift": {"drift.state", "drift.profiles"},  # restored at start (processors/drift/store.py)
}
#: Throwaway consumer groups (``<prefix>.<name><uuid>``) of those side readers.
EXTRA_GROUPS: dict[str, set[str]] = {
    "guard": {"sluice.budget-view.*", "sluice.request-id-view.*"},
    "drift": {"sluice.restore-*"},
}


#: Processors whose instances each serve a lane, in a group of its own: settings per lane.
LANED: dict[str, Any] = {"infer": lambda lane: InferSettings(lane=lane)}
PROBE_LANE = "any-lane-declared-later"


def _family(spec: ProcessorSpec[Any, Any], settings_of: Any) -> str:
    """The grant that covers every lane's group: what a lane's group is, less the lane."""
    group = spec.group_name(settings_of(PROBE_LANE))
    assert group.endswith(PROBE_LANE)
    return f"sluice.{group.removesuffix(PROBE_LANE)}*"


def _instance_names(name: str, spec: ProcessorSpec[Any, Any]) -> tuple[set[str], set[str]]:
    """The groups and transactional ids (as grants) the runner uses for ``name``'s instances.

    One group (``<prefix>.<name>``) and its transactional ids (``<group>.<instance>``,
    streams/runtime/runner.py); a processor with lanes adds one family for every lane.
    """
    own = spec.group_name(spec.build_settings())
    # An at-least-once processor (guard-stream) opens no transaction.
    groups = {f"sluice.{own}"}
    transactional_ids = set() if spec.at_least_once else {f"sluice.{own}.*"}
    settings_of = LANED.get(name)
    if settings_of is not None:
        family = _family(spec, settings_of)
        groups.add(family)
        transactional_ids.add(family)
    return groups, transactional_ids


def _covered(name: str, grants: set[str]) -> bool:
    return name in grants or any(g.endswith("*") and name.startswith(g[:-1]) for g in grants)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(SCHEMAS)


@pytest.fixture(scope="module")
def declaration(catalog: Catalog) -> AclDeclaration:
    return load_acls(SCHEMAS, catalog)


def _granted(grants: list[Grant], principal: str, resource: str, operation: str) -> set[str]:
    return {
        g.name + ("*" if g.pattern == "PREFIXED" else "")
        for g in grants
        if g.principal == f"User:{principal}"
        and g.resource == resource
        and g.operation == operation
    }


def _dead_letters(catalog: Catalog, topics: list[str]) -> set[str]:
    return {dlq for t in topics if (dlq := catalog.topic(t).dlq_topic) is not None}


@pytest.mark.parametrize("principal", sorted(RUNNER_PRINCIPALS))
def test_a_runner_processor_is_granted_its_inputs_outputs_and_dead_letters_and_nothing_else(
    principal: str, catalog: Catalog, declaration: AclDeclaration
) -> None:
    """What the processors logging in as ``principal`` declare, together, and no more."""
    grants = declaration.grants(catalog, NAMES)
    reads: set[str] = set()
    writes: set[str] = {SPANS}
    groups: set[str] = set()
    transactional_ids: set[str] = set()
    for name in RUNNER_PRINCIPALS[principal]:
        spec: ProcessorSpec[Any, Any] = processors.load(name)
        config = spec.build_settings()
        inputs, outputs = spec.inputs(catalog, config), spec.outputs(catalog, config)
        reads |= set(inputs) | EXTRA_READS.get(name, set())
        writes |= set(outputs) | _dead_letters(catalog, inputs)
        # The runner's group and transactional ids (streams/runtime/runner.py).
        own_groups, own_ids = _instance_names(name, spec)
        groups |= own_groups | EXTRA_GROUPS.get(name, set())
        transactional_ids |= own_ids

    assert _granted(grants, principal, "TOPIC", "READ") == reads
    assert _granted(grants, principal, "TOPIC", "WRITE") == writes
    assert _granted(grants, principal, "GROUP", "READ") == groups
    assert _granted(grants, principal, "TRANSACTIONAL_ID", "WRITE") == transactional_ids


def test_guard_stream_runs_as_guard_in_a_group_of_its_own_without_transactions() -> None:
    spec: ProcessorSpec[Any, Any] = processors.load("guard-stream")
    assert COMPONENT_PRINCIPALS["guard-stream"] == "sluice-guard"
    assert spec.group_name(spec.build_settings()) == "guard-stream"
    assert spec.at_least_once, "chunks are a live preview: flushed, then committed"


def test_every_lane_of_infer_gets_its_group_and_transactional_ids_and_no_other_processors(
    catalog: Catalog, declaration: AclDeclaration
) -> None:
    spec: ProcessorSpec[Any, Any] = processors.load("infer")
    grants = declaration.grants(catalog, NAMES)
    groups = _granted(grants, "sluice-infer", "GROUP", "READ")
    transactional_ids = _granted(grants, "sluice-infer", "TRANSACTIONAL_ID", "WRITE")
    lanes = [DEFAULT_LANE, *load_models().lanes, PROBE_LANE]
    assert len(lanes) > 2, "the shipped model catalog declares a lane"
    for lane in lanes:
        group = f"sluice.{spec.group_name(LANED['infer'](lane))}"
        assert _covered(group, groups), group
        assert _covered(f"{group}.instance-1", transactional_ids), group
    # The lane family reaches no other processor's group.
    for other in RUNNER_PROCESSORS:
        if other != "infer":
            assert not _covered(f"sluice.{other}", groups - {"sluice.infer"}), other


def test_meter_is_granted_its_faust_topics_group_and_state(
    catalog: Catalog, declaration: AclDeclaration
) -> None:
    grants = declaration.grants(catalog, NAMES)
    reads = {meter_app.RESULTS, meter_app.USAGE}  # the two agents' topics
    assert _granted(grants, "sluice-meter", "TOPIC", "READ") == reads | {"sluice.meter-*"}
    assert _granted(grants, "sluice-meter", "TOPIC", "WRITE") == (
        set(meter_app.OUTPUTS) | _dead_letters(catalog, sorted(reads)) | {SPANS, "sluice.meter-*"}
    )
    app_id = f"sluice.{processors.resolve('meter').build_settings().app_id}"
    assert _granted(grants, "sluice-meter", "GROUP", "READ") == {app_id}
    # faust names its changelog <app id>-<table>-changelog and creates it itself.
    assert _granted(grants, "sluice-meter", "TOPIC", "CREATE") == {f"{app_id}-*"}
    assert not _granted(grants, "sluice-meter", "TRANSACTIONAL_ID", "WRITE"), "at least once"


def test_every_processor_has_a_principal(declaration: AclDeclaration) -> None:
    assert set(processors.PROCESSORS) <= set(COMPONENT_PRINCIPALS)
    assert {COMPONENT_PRINCIPALS[name] for name in processors.PROCESSORS} <= set(
        declaration.principals
    )


def test_the_gateway_is_granted_exactly_what_its_dispatcher_produces_and_reads(
    catalog: Catalog, declaration: AclDeclaration
) -> None:
    """Both ways: a topic the dispatcher gains, or a grant it no longer uses, fails here."""
    grants = declaration.grants(catalog, NAMES)
    principal = SERVICE_PRINCIPALS["gateway"]
    assert _granted(grants, principal, "TOPIC", "READ") == set(kafka_dispatch.READ_TOPICS)
    assert _granted(grants, principal, "TOPIC", "WRITE") == {kafka_dispatch.REQUESTS_TOPIC}
    settings = Settings.model_validate({"runner": {"group_prefix": NAMES.group_prefix}})
    assert _granted(grants, principal, "GROUP", "READ") == {kafka_dispatch.consumer_group(settings)}
    # No transactions, no spans, nothing created: a request is one idempotent produce.
    assert not _granted(grants, principal, "TRANSACTIONAL_ID", "WRITE")
    assert not _granted(grants, principal, "TOPIC", "CREATE")
    assert {g.resource for g in grants if g.principal == f"User:{principal}"} == {
        "TOPIC",
        "GROUP",
    }


def test_the_gateways_consumer_group_follows_the_group_prefix() -> None:
    settings = Settings.model_validate({"runner": {"group_prefix": "acme-prod"}})
    assert kafka_dispatch.consumer_group(settings) == "acme-prod.gateway"
