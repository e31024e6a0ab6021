"""A private copy of the platform on a shared cluster: own topic prefix, groups and schemas.

Tests and benchmarks run side by side on one stack. Each sandbox puts a unique
prefix in front of every topic (the same mechanism a deployment uses to share a
cluster between environments, ``SLUICE_TOPIC_PREFIX``), uses its own consumer
groups, and works on its own copy of ``schemas/`` so that it may edit
contracts and schemas without touching anyone else's.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from streams.contracts import registry
from streams.contracts.catalog import Catalog, catalog_for
from streams.runtime import kafka
from streams.settings import Settings


@dataclass(frozen=True)
class Sandbox:
    """Settings and catalog of one private copy."""

    settings: Settings
    catalog: Catalog
    schemas: Path
    suffix: str

    @property
    def env(self) -> dict[str, str]:
        """Environment for a `sluice` child process that works in this sandbox."""
        env = {
            "SLUICE_SCHEMAS_PATH": str(self.schemas),
            "SLUICE_TOPIC_PREFIX": self.settings.topic_prefix,
            "SLUICE_RUNNER__GROUP_PREFIX": self.settings.runner.group_prefix,
            # `apply` makes topics and schemas, not ACLs: on the secured local stack a
            # processor under its own principal would be refused the sandbox's topics, so
            # the sandbox's `sluice run` acts as the operator unless told otherwise.
            "SLUICE_STACK__PROCESSOR_PRINCIPALS": "false",
        }
        if self.settings.clickhouse.url:
            env["SLUICE_CLICKHOUSE__URL"] = self.settings.clickhouse.url
        return env

    def topic(self, logical: str) -> str:
        """The cluster name of one of the sandbox's topics."""
        return self.catalog.physical(logical)

    def reload(self) -> Sandbox:
        """The same sandbox with its catalog re-read (after editing its files)."""
        return Sandbox(self.settings, catalog_for(self.settings), self.schemas, self.suffix)

    def apply(self) -> None:
        """Create the sandbox's topics and register its schemas (`sluice schemas apply`)."""
        specs = list(self.catalog.topics.values())
        changes = kafka.ensure_topics(kafka.admin(self.settings), specs)
        errors = [c for c in changes if c.action == "error"]
        if errors:
            raise RuntimeError(f"could not create topics: {errors}")
        registry.apply(self.settings.registry, self.catalog, specs)


def create(base: Settings, workdir: Path) -> Sandbox:
    """A sandbox whose topics are ``sbx<suffix>.<topic>``, with schemas copied to ``workdir``."""
    suffix = uuid.uuid4().hex[:8]
    schemas = workdir / "schemas"
    shutil.copytree(base.schemas_dir, schemas, ignore=shutil.ignore_patterns("datasets"))
    settings = base.model_copy(
        update={
            "schemas_path": schemas,
            "topic_prefix": f"sbx{suffix}.",
            "runner": base.runner.model_copy(update={"group_prefix": f"sbx{suffix}"}),
        }
    )
    return Sandbox(settings, catalog_for(settings), schemas, suffix)
