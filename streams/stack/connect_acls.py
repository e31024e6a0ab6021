"""The Connect worker's own ACL bindings, made by ``sluice up`` before the worker starts.

When the worker logs in as its own principal (``SLUICE_STACK__PROCESSOR_PRINCIPALS``,
the default), it needs its group, its transactional ids and its internal topics
(``_<group>-configs``, ``-offsets``, ``-status``, which it creates) before it can
start: without them it never becomes healthy. ``sluice up`` runs before anyone ran
``sluice schemas apply``, so it creates these few bindings itself, as the operator,
from the ``sluice-connect`` entry of ``schemas/acls.yaml``. The topics its connectors
write (``raw.<dataset>``) are granted with the rest by ``sluice schemas apply`` (or
``sluice acl apply``), which also keeps these; nothing is ever deleted here.
"""

from __future__ import annotations

from streams.contracts.acls import AclDeclaration, AclNames, AclPlan, Grant, load_acls
from streams.contracts.catalog import catalog_for
from streams.runtime.acls import AclAdmin, AclError, apply_plan, existing_grants
from streams.settings import Settings
from streams.stack.components import ComponentError
from streams.stack.kafka_security import CONNECT


def connect_worker_grants(settings: Settings) -> list[Grant]:
    """The declared bindings of the Connect worker that are not a catalog topic's."""
    catalog = catalog_for(settings)
    declaration = load_acls(settings.schemas_dir, catalog)
    entry = declaration.principals.get(CONNECT)
    if entry is None:
        raise ComponentError(
            f"schemas/acls.yaml declares no principal {CONNECT}, which the Connect worker "
            "logs in as; declare it (see docs/reference/acls.md), or set "
            "SLUICE_STACK__PROCESSOR_PRINCIPALS=false to run the worker as the operator"
        )
    own = AclDeclaration(principals={CONNECT: entry.model_copy(update={"read": [], "write": []})})
    return own.grants(catalog, AclNames.of(settings))


def ensure_connect_worker_acls(settings: Settings, admin: AclAdmin) -> list[Grant]:
    """Create whichever of the worker's own bindings the cluster lacks; return those made.

    ``admin`` must act as a super user (the operator).
    """
    wanted = connect_worker_grants(settings)
    try:
        have = set(existing_grants(admin))
        missing = [g for g in wanted if g not in have]
        result = apply_plan(admin, AclPlan(create=missing, delete=[], kept=[]))
    except AclError as exc:
        raise ComponentError(
            f"could not grant the Connect worker ({CONNECT}) its own topics and group: {exc}"
        ) from exc
    if result.failed:
        grant, reason = result.failed[0]
        raise ComponentError(
            f"the broker refused the Connect worker's binding {grant.describe()}: {reason}; "
            "check that the local broker runs (`sluice status`) and run `sluice up` again"
        )
    return result.created
