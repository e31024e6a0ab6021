"""The ACL declaration (``schemas/acls.yaml`` via ``streams.contracts.acls``) → rows.

The rows are rendered for the default deployment (no topic prefix, group prefix
``sluice``): a deployment with prefixes gets the same bindings behind them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from refgen.markdown import DASH, code, escape, one_line, table
from streams.contracts.acls import AclDeclaration, AclNames, Grant
from streams.contracts.catalog import Catalog


@dataclass(frozen=True)
class PrincipalRow:
    """What one principal may do, as names (a trailing ``*`` is a prefix pattern)."""

    principal: str
    description: str
    read: list[str]
    write: list[str]
    groups: list[str]
    transactional_ids: list[str]
    other: list[str]  # internal topics' and cluster operations beyond READ/WRITE


def _shown(grant: Grant) -> str:
    return grant.name + ("*" if grant.pattern == "PREFIXED" else "")


def principal_rows(declaration: AclDeclaration, catalog: Catalog) -> list[PrincipalRow]:
    """One row per declared principal, tenants expanded, in name order."""
    by_principal: dict[str, list[Grant]] = defaultdict(list)
    for grant in declaration.grants(catalog, AclNames()):
        by_principal[grant.principal.removeprefix("User:")].append(grant)
    rows = []
    for name in sorted(declaration.principals):
        grants = by_principal.get(name, [])

        def pick(resource: str, operation: str, among: list[Grant] = grants) -> list[str]:
            return sorted(
                {_shown(g) for g in among if g.resource == resource and g.operation == operation}
            )

        other = sorted(
            {
                f"{g.operation} {_shown(g)}"
                for g in grants
                if g.resource in ("TOPIC", "CLUSTER") and g.operation not in ("READ", "WRITE")
            }
        )
        rows.append(
            PrincipalRow(
                principal=f"User:{name}",
                description=declaration.principals[name].description,
                read=pick("TOPIC", "READ"),
                write=pick("TOPIC", "WRITE"),
                groups=pick("GROUP", "READ"),
                transactional_ids=pick("TRANSACTIONAL_ID", "WRITE"),
                other=other,
            )
        )
    return rows


def _names(names: list[str]) -> str:
    return "<br>".join(code(n) for n in names) or DASH


def render(rows: list[PrincipalRow]) -> str:
    """A section per principal: what it is, then a table of what it may do."""
    text = ""
    for row in rows:
        text += f"### {row.principal}\n\n{escape(one_line(row.description))}\n\n"
        text += table(
            ("may", "on"),
            [
                ("read (topics)", _names(row.read)),
                ("write (topics)", _names(row.write)),
                ("use consumer groups", _names(row.groups)),
                ("use transactional ids", _names(row.transactional_ids)),
                ("also", "<br>".join(code(o) for o in row.other) or DASH),
            ],
        )
        text += "\n"
    return text
