"""An INSERT that fails is classified by its cause: the rows refused, or ClickHouse unavailable.

Every exception here is the real one, raised by the embedded ClickHouse (chdb) and
clickhouse-connect, or by clickhouse-connect against a port nothing listens on.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from streams.settings import Settings
from streams.warehouse import clickhouse

COLUMNS = ("a", "s", "n", "ts")
NOW = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[clickhouse.DirectWarehouse]:
    warehouse = clickhouse.connect(Settings(clickhouse={"url": f"chdb://{tmp_path / 'ch'}"}))
    warehouse.command(
        "CREATE TABLE t (a UInt32, s String, n Int64, ts DateTime64(3, 'UTC'), "
        "CONSTRAINT small CHECK n < 1000) ENGINE = MergeTree ORDER BY tuple()"
    )
    try:
        yield warehouse
    finally:
        warehouse.close()


def refusal(db: clickhouse.DirectWarehouse, row: tuple[Any, ...]) -> clickhouse.RowsRefusedError:
    with pytest.raises(clickhouse.RowsRefusedError) as refused:
        db.insert("t", [(1, "ok", 1, NOW), row], COLUMNS)
    assert db.query("SELECT count() FROM t").scalar() == 0  # nothing of the block landed
    return refused.value


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ((-7, "x", 1, NOW), "`a` (UInt32)"),  # negative into unsigned
        ((2**40, "x", 1, NOW), "`a` (UInt32)"),  # too large
        ((1, "x", 2**70, NOW), "`n` (Int64)"),  # too large for Int64
        (("secret-42", "x", 1, NOW), "`a` (UInt32)"),  # a string into a number
        ((None, "x", 1, NOW), "`a` (UInt32)"),  # NULL, not Nullable
        ((1, 12345, 1, NOW), "`s` (String)"),  # a number into a string
        ((1, "x", 1, "not-a-date"), "`ts` (DateTime64(3, 'UTC'))"),
    ],
)
def test_values_the_client_cannot_serialise_are_refused_rows(
    db: clickhouse.DirectWarehouse, row: tuple[Any, ...], column: str
) -> None:
    error = refusal(db, row)
    # Which exception the client raises depends on the other values of the column.
    assert error.exception in {"DataError", "ValueError", "TypeError", "AttributeError"}
    assert error.table == "t" and error.code is None
    assert f"column {column}" in error.reason
    for value in ("secret-42", "12345", "not-a-date", "-7"):
        assert value not in str(error)  # the reason names the column, never the value
    db.insert("t", [(1, "ok", 1, NOW)], COLUMNS)  # the same insert context goes on working
    assert db.query("SELECT count() FROM t").scalar() == 1


def test_a_value_clickhouse_itself_refuses_is_a_refused_row(
    db: clickhouse.DirectWarehouse,
) -> None:
    error = refusal(db, (1, "x", 5000, NOW))  # the server checks the constraint
    assert error.code == 469 and error.exception == "DatabaseError"
    assert error.reason == "ClickHouse error VIOLATED_CONSTRAINT (code 469)"
    assert "5000" not in str(error)  # ClickHouse's own message quotes the value: not copied


def test_a_missing_table_is_not_the_rows_fault(db: clickhouse.DirectWarehouse) -> None:
    with pytest.raises(clickhouse.WarehouseError, match="UNKNOWN_TABLE") as error:
        db.insert("nowhere", [(1,)], ["a"])
    assert not isinstance(error.value, clickhouse.RowsRefusedError)
    db.command("CREATE TABLE u (a UInt8) ENGINE = MergeTree ORDER BY tuple()")
    db.insert("u", [(1,)], ["a"])
    db.command("DETACH TABLE u")  # known to the insert context, gone from the server
    with pytest.raises(clickhouse.WarehouseError) as gone:
        db.insert("u", [(2,)], ["a"])
    assert not isinstance(gone.value, clickhouse.RowsRefusedError)
    db.command("ATTACH TABLE u")
    db.insert("u", [(3,)], ["a"])  # described again after the failure
    assert db.query("SELECT sum(a) FROM u").scalar() == 4


def test_a_server_that_does_not_answer_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OperationalError) as refused:
        clickhouse_connect.get_client(host="127.0.0.1", port=port, connect_timeout=1)
    error = clickhouse.insert_error(refused.value, "t", "http://127.0.0.1")
    assert type(error) is clickhouse.WarehouseError


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(111, "Connection refused"), clickhouse.WarehouseError),
        (TimeoutError("timed out"), clickhouse.WarehouseError),
        (MemoryError(), clickhouse.WarehouseError),
        (OverflowError("int too large"), clickhouse.RowsRefusedError),
        (RuntimeError("a bug"), None),
    ],
)
def test_exceptions_outside_the_driver_are_classified_by_kind(
    exc: Exception, kind: type[clickhouse.WarehouseError] | None
) -> None:
    error = clickhouse.insert_error(exc, "t", "somewhere")
    assert (type(error) if error is not None else None) is kind


def test_server_error_codes_are_classified_by_code() -> None:
    def error(code: int, name: str) -> Exception:
        return DatabaseError(f"Code: {code}. DB::Exception: ... ({name})", code=code, name=name)

    refused = clickhouse.insert_error(error(349, "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN"), "t", "")
    assert isinstance(refused, clickhouse.RowsRefusedError) and refused.code == 349
    for code, name in [
        (202, "TOO_MANY_SIMULTANEOUS_QUERIES"),
        (252, "TOO_MANY_PARTS"),
        (241, "MEMORY_LIMIT_EXCEEDED"),
        (159, "TIMEOUT_EXCEEDED"),
        (210, "NETWORK_ERROR"),
        (60, "UNKNOWN_TABLE"),
    ]:
        assert (
            type(clickhouse.insert_error(error(code, name), "t", "")) is clickhouse.WarehouseError
        )
    # No code at all (a 503 from a proxy): the server, not the rows.
    assert type(clickhouse.insert_error(OperationalError("HTTP 503"), "t", "")) is (
        clickhouse.WarehouseError
    )
    # Only the message carries the code (chdb's text): still read.
    text_only = DatabaseError(
        "Code: 53. DB::Exception: Type mismatch in column `x`. (TYPE_MISMATCH)"
    )
    refused = clickhouse.insert_error(text_only, "t", "")
    assert isinstance(refused, clickhouse.RowsRefusedError)
    assert refused.reason == "ClickHouse error TYPE_MISMATCH (code 53) in column `x`"
