"""Write docs/reference/*.md from Sluice's code; mkdocs-gen-files runs this on every build.

Nothing here is a copy: the CLI is read from the click app, settings from the
pydantic classes, topics from the catalog, schemas from the ``.avsc`` files,
dead-letter kinds from ``streams.errors``, metrics from prometheus_client's
objects, tables from the ClickHouse migrations. A page that cannot be
generated is logged as a warning, which fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import ast
import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).resolve().parent))

from refgen import (
    acls,
    avro,
    catalog,
    cli,
    clickhouse,
    dead_letters,
    metrics,
    modules,
    processors,
    settings,
)
from refgen.markdown import anchor, table

if TYPE_CHECKING:
    from streams.contracts.catalog import Catalog
    from streams.runtime.spec import EngineSpec, ProcessorSpec

log = logging.getLogger("mkdocs.plugins.sluice_reference")


def _root() -> Path:
    from streams.settings import PROJECT_ROOT  # noqa: PLC0415

    return PROJECT_ROOT


def _catalog() -> Catalog:
    from streams.contracts.catalog import load_catalog  # noqa: PLC0415

    return load_catalog(_root() / "schemas")


def _registry() -> Iterator[tuple[str, str, ProcessorSpec[Any, Any] | EngineSpec[Any]]]:
    """(name, module, declaration) of every registered processor."""
    import processors as registry  # noqa: PLC0415

    for name, module in registry.PROCESSORS.items():
        yield name, module, registry.resolve(name)


def cli_page() -> str:
    """Every command of ``sluice``."""
    from streams.cli import main  # noqa: PLC0415

    docs = cli.commands(main)
    index = ", ".join(f"[`{d.path}`](#{anchor(d.path)})" for d in docs if not d.subcommands)
    return f"Commands: {index}.\n\n" + "".join(cli.render(d) for d in docs)


def _settings_classes(package: str) -> Iterator[type]:
    """Every class deriving from ``BaseSettings`` by name in ``package``'s modules (ast scan)."""
    root = _root()
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id == "BaseSettings" for b in node.bases)
        ]
        if names:
            parts = list(path.relative_to(root).with_suffix("").parts)
            module = importlib.import_module(".".join(p for p in parts if p != "__init__"))
            yield from (getattr(module, name) for name in names)


def settings_page() -> str:
    """Sluice's shared settings, each processor's own, and any other settings class."""
    from streams.settings import Settings  # noqa: PLC0415

    root = _root()
    text = "## Shared settings\n\n"
    text += "".join(settings.render_section(s) + "\n" for s in settings.sections(Settings, root))
    text += "## Processor settings\n\nEach processor's own class, named by its `PROCESSOR`.\n\n"
    seen: set[type] = {Settings}
    for name, _, spec in _registry():
        own = spec.settings
        seen.add(own)
        if not settings.env_prefix(own):
            text += f"### {name}\n\n`{name}` has no settings of its own.\n\n"
            continue
        for section in settings.sections(own, root):
            text += settings.render_section(section, heading=f"### {name}:") + "\n"
    others = [c for c in _settings_classes("streams") if c not in seen and settings.env_prefix(c)]
    if others:
        text += "## Other settings\n\n"
        for cls in others:
            text += "".join(settings.render_section(s) + "\n" for s in settings.sections(cls, root))
    return text


def processors_page() -> str:
    """What each registered processor reads and writes."""
    topics = _catalog()
    rows = [processors.processor_row(n, m, spec, topics) for n, m, spec in _registry()]
    return processors.render(rows)


def topics_page() -> str:
    """The topic catalog and the datasets' contracts."""
    return catalog.render(_catalog())


#: acls.yaml's keys: (key, what it holds, what it becomes on the cluster)
_ACLS_KEYS = [
    (
        "`tenants`",
        "tenant ids",
        "one principal per tenant from the entry whose name holds `{tenant}` "
        "(`tenant-{tenant}` → `User:tenant-acme`)",
    ),
    ("`principals.<user>.description`", "why the principal exists", "documentation only"),
    (
        "`read`, `write`",
        "logical catalog topics; `{dataset}` for every dataset; a glob (`*.dlq`) for every "
        "catalog topic it matches",
        "one LITERAL `READ` or `WRITE` binding per topic, behind the topic prefix "
        "(`SLUICE_TOPIC_PREFIX`); both imply `DESCRIBE`",
    ),
    (
        "`groups`",
        "consumer groups; `{group}` is the group prefix (`SLUICE_RUNNER__GROUP_PREFIX`), "
        "`{connect}` the Connect worker's group; a trailing `*` means every name that starts so",
        "`READ` on the group, LITERAL or PREFIXED",
    ),
    ("`transactional_ids`", "as `groups`", "`WRITE` on the transactional id"),
    (
        "`internal_topics`",
        "`name` and `operations` of topics outside the catalog that an engine creates "
        "(faust's changelog, Connect's config, offset and status topics)",
        "a binding per operation; no topic prefix is added",
    ),
    (
        "`cluster`",
        "cluster operations (none is needed: since Kafka 2.8 an idempotent producer needs "
        "only `WRITE` on a topic)",
        "bindings on `kafka-cluster`",
    ),
]

_ACLS_INTRO = """\
`schemas/acls.yaml`, beside the topic catalog, says which principal may do what on
Kafka. `sluice acl apply` (and `sluice schemas apply`, after it created the topics,
unless given `--no-acls`) turns it into ACL bindings; `sluice acl show` lists the
bindings the cluster has ([command line](cli.md)). Why each principal gets what it
gets: [security model](../explanation/security-model.md#who-may-do-what).

## The file

{format_table}
Loading the file checks every topic against the catalog: an unknown topic fails with
the principal and the topic it names, before anything reaches the cluster. A unit test
(`tests/unit/processors/test_acls.py`) checks each processor's entry against its own
`PROCESSOR` declaration, both ways.

## What apply changes

`sluice acl apply` creates the declared bindings that are missing, then deletes the
`ALLOW` bindings of the *managed* principals that the file does not have; `--dry-run`
prints the changes and makes none. Managed are the principals the file names, and every
`User:tenant-…` principal (so a tenant removed from `tenants` loses its access). It
never touches:

- principals the file does not name (super users, people, other applications);
- `DENY` bindings (deleting one could only widen access);
- bindings of another deployment on the same cluster: a binding is this deployment's
  when it could reach one of its catalog topics, a name behind its topic or group
  prefix, a name one of the file's families covers, the cluster, or every resource
  (`*`). Test sandboxes and environments with their own prefixes leave each other alone.

The change is recorded on the audit trail as `acl.apply` (counts of bindings created,
deleted, unchanged and failed). A broker without an authorizer answers
`SECURITY_DISABLED`: both commands then print a warning and exit 0, since a plaintext
development stack lets every client do anything anyway.

## Who may do what

Rendered for a deployment without a topic prefix and with the group prefix `sluice`;
a trailing `*` is a prefix pattern.

"""


def acls_page() -> str:
    """The file's format, what apply does, then each principal's bindings."""
    from streams.contracts.acls import load_acls  # noqa: PLC0415

    loaded = _catalog()
    declaration = load_acls(_root() / "schemas", loaded)
    keys = table(("key", "what it holds", "becomes"), _ACLS_KEYS)
    intro = _ACLS_INTRO.replace("{format_table}", keys)
    return intro + acls.render(acls.principal_rows(declaration, loaded))


def schemas_page() -> str:
    """Every Avro record, with its fields' docs."""
    loaded = _catalog().schemas
    text = ""
    for name in sorted(loaded):
        path = loaded[name].path
        for number, record in enumerate(avro.file_records(path)):
            text += avro.render(record, path if number == 0 else None)
    return text


def dead_letters_page() -> str:
    """Every dead-letter kind: the processors are imported first so their own kinds load too."""
    from streams.errors import record_error_kinds  # noqa: PLC0415

    list(_registry())
    return dead_letters.render(dead_letters.kind_rows(record_error_kinds()))


def metrics_page() -> str:
    """Every Prometheus metric defined in ``streams/`` and ``processors/``."""
    names = metrics.metric_modules(_root(), ("streams", "processors"))
    return metrics.render(metrics.metric_rows(names))


def clickhouse_page() -> str:
    """Tables and views from the migrations, then the shipped queries."""
    root = _root() / "infra" / "clickhouse"
    found = clickhouse.relations(root / "migrations")
    tables = [r for r in found if r.kind == "table"]
    views = [r for r in found if r.kind != "table"]
    text = "## Tables\n\n" + "".join(clickhouse.render_relation(r) for r in tables)
    text += "## Views\n\n" + "".join(clickhouse.render_relation(r) for r in views)
    text += "## Shipped queries\n\nIn `infra/clickhouse/queries/`; run one with "
    text += "`sluice sql -f FILE`.\n\n"
    return text + clickhouse.render_queries(root / "queries")


def modules_page() -> str:
    """Every package and module of ``streams/`` and ``processors/``, with its summary line."""
    root = _root()
    return "".join(
        f"## {package}/\n\n" + modules.render(modules.module_rows(root, package)) + "\n"
        for package in ("streams", "processors")
    )


#: page → (title, what it is generated from, generator)
PAGES: dict[str, tuple[str, str, Callable[[], str]]] = {
    "cli.md": ("Command line", "the click application `streams.cli:main`", cli_page),
    "settings.md": (
        "Settings",
        "the pydantic settings classes: `streams.settings.Settings` (prefix `SLUICE_`, `__` "
        "between a section and its field), each processor's `PROCESSOR.settings` and every "
        "other `BaseSettings` class under `streams/`",
        settings_page,
    ),
    "processors.md": (
        "Processors",
        "the registry `processors.PROCESSORS` and each `PROCESSOR`",
        processors_page,
    ),
    "topics.md": (
        "Topic catalog",
        "`schemas/topics.yaml` and `schemas/contracts/` via `streams.contracts.catalog`",
        topics_page,
    ),
    "acls.md": (
        "Kafka ACLs",
        "`schemas/acls.yaml` via `streams.contracts.acls`",
        acls_page,
    ),
    "schemas.md": ("Avro schemas", "`schemas/avro/*.avsc`", schemas_page),
    "dead-letters.md": (
        "Dead-letter kinds",
        "the subclasses of `streams.errors.RecordError`",
        dead_letters_page,
    ),
    "metrics.md": (
        "Prometheus metrics",
        "the prometheus_client objects of `streams/` and `processors/`",
        metrics_page,
    ),
    "modules.md": (
        "Source tree",
        "the modules' docstrings under `streams/` and `processors/`",
        modules_page,
    ),
    "clickhouse.md": (
        "ClickHouse tables and queries",
        "`infra/clickhouse/migrations/` and `infra/clickhouse/queries/`",
        clickhouse_page,
    ),
}


#: site page → repository file shown as it is (it stays where its owners update it)
INCLUDED: dict[str, str] = {"explanation/benchmarks.md": "bench/README.md"}


def include(page: str, source: str) -> None:
    """Show a repository Markdown file as a site page, read at build time."""
    text = (_root() / source).read_text(encoding="utf-8")
    note = f'!!! info "From `{source}`"\n\n    This page is `{source}`, read on every build.\n\n'
    title, _, rest = text.partition("\n")
    with mkdocs_gen_files.open(page, "w") as out:
        out.write(f"{title}\n\n{note}{rest}" if title.startswith("# ") else note + text)
    mkdocs_gen_files.set_edit_path(page, f"../{source}")


def main() -> None:
    """Write every page; a generator that fails leaves a page that says so, and a warning."""
    for page, (title, source, build) in PAGES.items():
        try:
            body = build()
        except Exception as exc:
            log.warning("reference/%s could not be generated: %r", page, exc)
            body = f"!!! failure\n\n    This page could not be generated: `{exc!r}`.\n"
        header = (
            f'# {title}\n\n!!! info "Generated"\n\n    Generated on every build from {source} '
            "by `docs/gen/reference.py`; edit the code, not this page.\n\n"
        )
        with mkdocs_gen_files.open(f"reference/{page}", "w") as out:
            out.write(header + body)
        mkdocs_gen_files.set_edit_path(f"reference/{page}", "gen/reference.py")
    for page, source in INCLUDED.items():
        include(page, source)


main()
