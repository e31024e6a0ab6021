"""A private copy of the catalog with uniquely named datasets, on a shared cluster.

Tests and benchmarks run side by side on one stack; each gets its own topics,
subjects and consumer groups by renaming its datasets with a suffix, so they
never see each other's records.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from streams import kafka, registry
from streams.catalog import Catalog, load_catalog
from streams.settings import Settings


@dataclass(frozen=True)
class Sandbox:
    """Settings and catalog of a private copy of the schemas."""

    settings: Settings
    catalog: Catalog
    schemas: Path
    suffix: str
    datasets: dict[str, str]  # original name -> sandboxed name

    @property
    def env(self) -> dict[str, str]:
        """Environment for a `sluice` child process that works in this sandbox."""
        env = {
            "SLUICE_SCHEMAS_PATH": str(self.schemas),
            "SLUICE_RUNNER__GROUP_PREFIX": self.settings.runner.group_prefix,
            "SLUICE_VALIDATE__DATASETS": json.dumps(list(self.datasets.values())),
        }
        if self.settings.clickhouse.url:
            env["SLUICE_CLICKHOUSE__URL"] = self.settings.clickhouse.url
        return env

    def reload(self) -> Sandbox:
        """The same sandbox with its catalog re-read (after editing its files)."""
        catalog = load_catalog(self.schemas)
        return Sandbox(self.settings, catalog, self.schemas, self.suffix, self.datasets)

    def apply(self) -> None:
        """Create the sandbox's topics and register its schemas (`sluice schemas apply`)."""
        specs = list(self.catalog.topics.values())
        changes = kafka.ensure_topics(kafka.admin(self.settings), specs)
        errors = [c for c in changes if c.action == "error"]
        if errors:
            raise RuntimeError(f"could not create topics: {errors}")
        registry.apply(self.settings.registry, self.catalog, specs)


def create(
    base: Settings,
    workdir: Path,
    *,
    datasets: list[str],
    keep_topics: bool = False,
    partitions: int | None = None,
) -> Sandbox:
    """Copy ``base``'s schemas into ``workdir`` with ``datasets`` renamed ``<name>_<suffix>``.

    ``keep_topics`` keeps the catalog's other topics (inference.*, ...) under their
    own names; otherwise only the renamed datasets' topics are in the sandbox.
    """
    suffix = uuid.uuid4().hex[:8]
    source = base.schemas_dir
    schemas = workdir / "schemas"
    shutil.copytree(source, schemas, ignore=shutil.ignore_patterns("datasets"))
    catalog_file = yaml.safe_load((source / "topics.yaml").read_text())
    renamed: dict[str, str] = {}
    entries = {}
    for name in datasets:
        entry = dict(catalog_file["datasets"][name])
        new = f"{name}_{suffix}"
        contract = yaml.safe_load((source / entry["contract"]).read_text())
        contract["dataset"] = new
        entry["contract"] = f"contracts/{new}.yaml"
        if partitions is not None:
            entry["partitions"] = partitions
        (schemas / entry["contract"]).write_text(yaml.safe_dump(contract, sort_keys=False))
        entries[new] = entry
        renamed[name] = new
    catalog_file["datasets"] = entries
    if not keep_topics:
        catalog_file["topics"] = []
    (schemas / "topics.yaml").write_text(yaml.safe_dump(catalog_file, sort_keys=False))
    settings = base.model_copy(
        update={
            "schemas_path": schemas,
            "runner": base.runner.model_copy(update={"group_prefix": f"sandbox-{suffix}"}),
        }
    )
    return Sandbox(settings, load_catalog(schemas), schemas, suffix, renamed)
