"""Versioned ClickHouse migrations: ``infra/clickhouse/migrations/NNNN_name.sql``.

``sluice db migrate`` (and the sink, when it connects) applies the files whose
version is not yet in the ``schema_migrations`` table, in order, and records
each with its checksum. Statements are separated by a line ending in ``;``
and are idempotent themselves (``IF NOT EXISTS``), so a migration interrupted
halfway is simply applied again. A file changed after it was applied is
reported, never re-run: write a new migration instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from streams.errors import ConfigurationError
from streams.warehouse.clickhouse import Warehouse, WarehouseError

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
TRACKING_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


class MigrationError(WarehouseError, ConfigurationError):
    """A migration file is malformed or was changed after it was applied."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        """The file's text."""
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, to notice edits after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        """The statements of the file, comments removed."""
        lines = [line for line in self.sql.splitlines() if not line.strip().startswith("--")]
        parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
        return [part.strip() for part in parts if part.strip()]


@dataclass(frozen=True)
class Outcome:
    """What ``migrate`` did with one migration."""

    version: int
    name: str
    action: str  # applied, already-applied, changed-after-apply


def discover(directory: Path) -> list[Migration]:
    """The migration files of ``directory``, by version."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql; rename it")
        migrations.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in migrations]
    if len(versions) != len(set(versions)):
        raise MigrationError(
            f"{directory}: two migration files share a version; renumber the newer one"
        )
    return migrations


def applied(warehouse: Warehouse) -> dict[int, str]:
    """Version → checksum of every applied migration."""
    # Asked first, like the database: a writer without the CREATE grant (the sink on a
    # server, where an admin user migrates) may read the table but not re-declare it.
    if not warehouse.query("EXISTS TABLE schema_migrations").scalar():
        warehouse.command(TRACKING_TABLE)
    result = warehouse.query("SELECT version, checksum FROM schema_migrations FINAL")
    return {int(version): str(checksum) for version, checksum in result.rows}


def migrate(warehouse: Warehouse, directory: Path) -> list[Outcome]:
    """Apply every pending migration in order; idempotent."""
    done = applied(warehouse)
    outcomes = []
    for migration in discover(directory):
        previous = done.get(migration.version)
        if previous is not None:
            action = "already-applied" if previous == migration.checksum else "changed-after-apply"
            if action == "changed-after-apply":
                log.warning(
                    "migration %s changed after it was applied; it is not run again. "
                    "Put schema changes in a new migration file.",
                    migration.path.name,
                )
            outcomes.append(Outcome(migration.version, migration.name, action))
            continue
        for statement in migration.statements():
            warehouse.command(statement)
        # Safe to format: the version is an int, the name matched [a-z0-9_]+, the checksum is hex.
        warehouse.command(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES "  # noqa: S608
            f"({migration.version}, '{migration.name}', '{migration.checksum}')"
        )
        log.info("applied migration %s", migration.path.name)
        outcomes.append(Outcome(migration.version, migration.name, "applied"))
    return outcomes
