"""A ClickHouse server's reader and writer open Sluice's database without DDL.

ClickHouse checks the CREATE grant before it looks whether a database or table exists,
so ``CREATE ... IF NOT EXISTS`` is refused to a user that may only read or insert (the
compose stack's sluice_reader and sluice_sink). The database and the migrations table
are asked for first; the statements run only where they are missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streams.settings import PROJECT_ROOT
from streams.warehouse import clickhouse, migrations
from streams.warehouse.clickhouse import Result, WarehouseError
from tests.support.warehouse import _migrate as migrate  # unpatched: no test-only SYSTEM stop

MIGRATIONS = PROJECT_ROOT / "infra" / "clickhouse" / "migrations"


@dataclass
class GrantedWarehouse:
    """A server on which the user may query but not run DDL (like a GRANT SELECT user)."""

    existing: set[str]
    applied: list[tuple[int, str]] = field(default_factory=list)
    may_create: bool = False
    commands: list[str] = field(default_factory=list)
    description: str = "http://reader@clickhouse:8123"

    def query(self, sql: str) -> Result:
        if sql.startswith("EXISTS"):
            name = sql.rsplit(maxsplit=1)[-1].strip("`")
            return Result(["result"], ["UInt8"], [(int(name in self.existing),)])
        assert sql.startswith("SELECT version, checksum FROM schema_migrations")
        return Result(["version", "checksum"], ["UInt32", "String"], list(self.applied))

    def command(self, sql: str) -> None:
        self.commands.append(sql)
        if sql.startswith(("CREATE", "ALTER", "DROP")) and not self.may_create:
            raise WarehouseError("Code: 497. Not enough privileges. (ACCESS_DENIED)")

    def close(self) -> None:
        pass


def _all_applied() -> list[tuple[int, str]]:
    return [(m.version, m.checksum) for m in migrations.discover(MIGRATIONS)]


def test_a_reader_opens_an_existing_database() -> None:
    reader = GrantedWarehouse(existing={"sluice"})
    clickhouse.ensure_database(reader, "sluice")
    assert reader.commands == []


def test_a_missing_database_is_still_created() -> None:
    admin = GrantedWarehouse(existing=set(), may_create=True)
    clickhouse.ensure_database(admin, "sluice")
    assert admin.commands == ["CREATE DATABASE IF NOT EXISTS `sluice`"]


def test_a_writer_finds_every_migration_applied_without_ddl() -> None:
    sink = GrantedWarehouse(existing={"schema_migrations"}, applied=_all_applied())
    outcomes = migrate(sink, MIGRATIONS)
    assert {o.action for o in outcomes} == {"already-applied"}
    assert sink.commands == []


def test_a_writer_without_ddl_is_refused_a_pending_migration() -> None:
    # The sink cannot apply what init has not: ClickHouse's refusal is the error.
    sink = GrantedWarehouse(existing={"schema_migrations"}, applied=_all_applied()[:-1])
    with pytest.raises(WarehouseError, match="ACCESS_DENIED"):
        migrate(sink, MIGRATIONS)
