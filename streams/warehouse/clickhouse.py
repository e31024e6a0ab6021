"""ClickHouse for Sluice: one client code path for a server (HTTP) and the embedded chdb.

``SLUICE_CLICKHOUSE__URL`` picks the backend through clickhouse-connect's DSN:
``http(s)://user:password@host:8123/db`` for a ClickHouse server, or
``chdb:///path`` for chdb, ClickHouse in-process (the default: under the state
directory). Everything above ``connect`` is the same code for both.

**chdb is in-process, and one process owns a database directory.** ClickHouse
locks the directory (its ``status`` file): a second process cannot open it,
not even read-only (both were tried: the engine refuses to start). So the
process that owns it, the sink, also answers queries for others: it serves a
loopback HTTP endpoint (random port, random token, both in an owner file
beside the database, readable by its user only) that runs SQL on its engine.
``open_warehouse`` opens the directory itself when it is free, and otherwise
forwards to the owner: ``sluice sql`` and ``sluice db migrate`` work the same
while the sink runs and while it does not. A ClickHouse server needs none of
this: every process connects to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import struct
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx

from streams.errors import SluiceError
from streams.settings import Settings, without_password

log = logging.getLogger(__name__)


class WarehouseError(SluiceError):
    """ClickHouse cannot be reached or refused a statement; the message says what to do.

    Raised as it is, it means "not now": ClickHouse is down, busy, or lacks a table a
    migration adds. ``RowsRefusedError`` is the one subclass that means "never these rows".
    """


class RowsRefusedError(WarehouseError):
    """ClickHouse, or the client library on its behalf, refused the rows themselves.

    A value does not fit its column (a negative number in an unsigned column, a string
    in a number, a NULL in a column that is not Nullable, a constraint): the same rows
    will be refused again, other rows of the same table load. ``reason`` names the
    column and the error, never a value (ClickHouse's own message can quote the row, so
    it is not copied).
    """

    def __init__(self, table: str, reason: str, *, exception: str, code: int | None = None):
        super().__init__(f"ClickHouse refused rows of table {table}: {reason}")
        self.table = table
        self.reason = reason
        self.exception = exception
        self.code = code


#: ClickHouse error codes that mean "this data does not fit": the server read the rows
#: and refused them. Any other code (a missing table, too many parts, a timeout, memory)
#: is about the server, not the rows, and is retried.
REFUSAL_CODES: dict[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    128: "TOO_LARGE_ARRAY_SIZE",
    131: "TOO_LARGE_STRING_SIZE",
    190: "SIZES_OF_ARRAYS_DONT_MATCH",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    376: "CANNOT_PARSE_UUID",
    395: "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO",
    407: "DECIMAL_OVERFLOW",
    467: "CANNOT_PARSE_BOOL",
    469: "VIOLATED_CONSTRAINT",
    675: "CANNOT_PARSE_IPV4",
    676: "CANNOT_PARSE_IPV6",
    691: "UNKNOWN_ELEMENT_OF_ENUM",
}

#: What the client library raises when it cannot serialise a value into its column's
#: type before anything is sent (besides its own ``DataError``).
_SERIALISATION_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # int("abc"), an ISO date that is not one, bad UTF-8
    TypeError,  # None in a column that is not Nullable, a dict where a number goes
    AttributeError,  # a number where a string goes ('int' object has no attribute 'encode')
    KeyError,
    IndexError,
    ArithmeticError,  # OverflowError
    struct.error,
)
_CODE = re.compile(r"\bCode:\s*(\d+)")
_COLUMN = re.compile(r"column `([\w.]{1,128})`", re.IGNORECASE)


@dataclass(frozen=True)
class Result:
    """Rows of a query, with the column names and ClickHouse types."""

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def scalar(self) -> Any:
        """The first column of the first row."""
        return self.rows[0][0] if self.rows else None

    def dicts(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Warehouse(Protocol):
    """What Sluice asks of ClickHouse."""

    description: str

    def query(self, sql: str) -> Result:
        """Run a SELECT (or anything returning rows)."""

    def command(self, sql: str) -> None:
        """Run a statement (DDL, SYSTEM ...)."""

    def close(self) -> None:
        """Release the connection (and, for chdb, the database directory)."""


# -- direct access ------------------------------------------------------------------
def chdb_path(url: str) -> Path | None:
    """The database directory of a ``chdb://`` DSN, or None for a server URL."""
    parsed = urlparse(url)
    if parsed.scheme != "chdb":
        return None
    location = parsed.path if not parsed.netloc else parsed.netloc
    return Path(location).resolve() if location not in ("", "memory", ":memory:") else None


def describe(url: str) -> str:
    """The DSN without its password, for messages and logs."""
    return without_password(url)


# Embedded databases this process has open: chdb shares one engine between the clients
# of a process, so only another process's lock means "busy".
_OPEN_HERE: dict[Path, int] = {}
_OPEN_LOCK = threading.Lock()


class DirectWarehouse:
    """A clickhouse-connect client (HTTP or chdb), with errors turned into WarehouseError."""

    def __init__(self, client: Any, description: str, path: Path | None = None) -> None:
        self.client = client
        self.description = description
        self.path = path
        self._lock = threading.Lock()
        # One insert context per (table, columns): its column types are read once.
        self._contexts: dict[tuple[str, tuple[str, ...]], Any] = {}
        if path is not None:
            with _OPEN_LOCK:
                _OPEN_HERE[path] = _OPEN_HERE.get(path, 0) + 1

    def query(self, sql: str) -> Result:
        """Run ``sql`` and return its rows."""
        with self._lock, _errors(self.description):
            result = self.client.query(sql)
            columns = list(result.column_names)
            types = [t.name for t in result.column_types]
            rows = [tuple(row) for row in result.result_rows]
            if not columns and not rows and _is_select(sql):
                # chdb sends no column header with an empty result; ask for it.
                described = self.client.query(f"DESCRIBE ({sql})").result_rows
                columns = [str(row[0]) for row in described]
                types = [str(row[1]) for row in described]
            return Result(columns, types, rows)

    def command(self, sql: str) -> None:
        """Run a statement that returns no rows."""
        with self._lock, _errors(self.description):
            self.client.command(sql)

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert rows in one block (one INSERT).

        Raises ``RowsRefusedError`` when the rows themselves are refused (see
        ``insert_error``), ``WarehouseError`` when ClickHouse is unavailable. An exception
        of any other kind is left as it is: the caller cannot tell it is the data's.
        """
        with self._lock:
            with _errors(self.description):
                key = (table, tuple(columns))
                context = self._contexts.get(key)
                if context is None:
                    context = self.client.create_insert_context(table, list(columns))
                    self._contexts[key] = context
                context.data = None
                context.column_name = None
            try:
                self.client.insert(data=rows, context=context)
            except Exception as exc:
                error = insert_error(exc, table, self.description, context)
                if not isinstance(error, RowsRefusedError):
                    # The table may have changed or the connection with it: describe it again.
                    self._contexts.pop(key, None)
                if error is None:
                    raise
                raise error from exc

    def insert_avro(self, table: str, values: Sequence[bytes], registry_url: str) -> None:
        """Insert Confluent-framed Avro values as they are; ClickHouse decodes them.

        ClickHouse reads each value's schema id and fetches the writer schema from
        ``registry_url`` (cached), so no Python touches a field.
        """
        with self._lock, _errors(self.description):
            self.client.raw_insert(
                table,
                None,
                insert_block=b"".join(values),
                fmt="AvroConfluent",
                settings={
                    "format_avro_schema_registry_url": registry_url,
                    # A record written before a field was added (e.g. cache_hit) takes the
                    # column's default rather than failing the batch.
                    "input_format_avro_allow_missing_fields": 1,
                },
            )

    def close(self) -> None:
        """Close the client."""
        with contextlib.suppress(Exception):
            self.client.close()
        if self.path is not None:
            with _OPEN_LOCK:
                left = _OPEN_HERE.get(self.path, 0) - 1
                if left > 0:
                    _OPEN_HERE[self.path] = left
                else:
                    _OPEN_HERE.pop(self.path, None)
            self.path = None


@contextlib.contextmanager
def _errors(description: str) -> Iterator[None]:
    try:
        yield
    except WarehouseError:
        raise
    except Exception as exc:
        raise WarehouseError(f"ClickHouse at {description}: {_first_line(exc)}") from exc


def insert_error(
    exc: Exception, table: str, description: str, context: Any = None
) -> WarehouseError | None:
    """What an exception from an INSERT of ``table`` means, by its cause.

    * ``RowsRefusedError``: the data. The client library refused a value before sending
      it (its ``DataError``, or a ``ValueError``/``TypeError``/``AttributeError``/
      ``OverflowError``... from serialising it), or the server answered with one of
      ``REFUSAL_CODES``.
    * ``WarehouseError``: ClickHouse itself. Any other error the client library or the
      server reports (connection refused, timeout, server unavailable or overloaded, a
      missing table), an ``OSError``, ``MemoryError``.
    * ``None``: anything else (a bug): the caller lets it propagate.

    ``context`` is the client's insert context: it knows the column being written when
    serialisation failed.
    """
    from clickhouse_connect.driver.exceptions import (  # noqa: PLC0415 (the sink extra)
        ClickHouseError,
        DataError,
    )

    name = type(exc).__name__
    if isinstance(exc, DataError) or (
        isinstance(exc, _SERIALISATION_ERRORS) and not isinstance(exc, ClickHouseError)
    ):
        column = _column_of(exc, context)
        where = f"column `{column}`{_type_of(column, context)}" if column else "a column"
        return RowsRefusedError(
            table, f"the client cannot write a value into {where}: {name}", exception=name
        )
    if isinstance(exc, ClickHouseError):
        code = getattr(exc, "code", None)
        if code is None:
            found = _CODE.search(str(exc))
            code = int(found.group(1)) if found else None
        if code in REFUSAL_CODES:
            column = _column_of(exc, None)
            where = f" in column `{column}`" if column else ""
            return RowsRefusedError(
                table,
                f"ClickHouse error {REFUSAL_CODES[code]} (code {code}){where}",
                exception=name,
                code=code,
            )
        return WarehouseError(f"ClickHouse at {description}: {_first_line(exc)}")
    if isinstance(exc, OSError | MemoryError):
        return WarehouseError(f"ClickHouse at {description}: {name}: {_first_line(exc)}")
    return None


class _SerialisationLogFilter(logging.Filter):
    """Drops the client library's own "Error serializing column" log records.

    It logs them at ERROR with a traceback before raising; ``insert`` raises
    ``RowsRefusedError`` instead, and the sink, which finds refused rows by splitting a
    batch, reports each refused record once.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Error serializing")


_SERIALISATION_FILTER = _SerialisationLogFilter()


def _quiet_serialisation_errors() -> None:
    for name in ("clickhouse_connect.driver.transform", "clickhouse_connect.driver.rustcodec"):
        logger = logging.getLogger(name)
        if _SERIALISATION_FILTER not in logger.filters:
            logger.addFilter(_SERIALISATION_FILTER)


def _column_of(exc: BaseException, context: Any) -> str | None:
    """The column an insert failed on: from the client's context, or a backquoted name."""
    column = getattr(context, "column_name", None)
    if column:
        return str(column)
    found = _COLUMN.search(str(exc))
    return found.group(1) if found else None


def _type_of(column: str, context: Any) -> str:
    """`` (UInt32)``: the ClickHouse type of ``column`` as the insert context knows it."""
    names = list(getattr(context, "column_names", None) or [])
    types = list(getattr(context, "column_types", None) or [])
    if column in names and len(types) == len(names):
        return f" ({types[names.index(column)].name})"
    return ""


def _is_select(sql: str) -> bool:
    lines = [line for line in sql.strip().splitlines() if not line.strip().startswith("--")]
    head = " ".join(lines).lstrip("( ").upper()
    return head.startswith(("SELECT", "WITH"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def connect(settings: Settings, *, database: str | None = None) -> DirectWarehouse:
    """Open ClickHouse directly (for chdb: this process becomes the directory's owner)."""
    import clickhouse_connect  # noqa: PLC0415 (the sink extra)

    url = settings.clickhouse_url
    path = chdb_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path is not None and path not in _OPEN_HERE and _locked_by_another_process(path):
        # Checked first: chdb would print the lock error to stderr before failing.
        raise DatabaseBusyError(path)
    _quiet_serialisation_errors()
    kwargs: dict[str, Any] = {"dsn": url}
    if database:
        kwargs["database"] = database
    if path is None:
        kwargs["connect_timeout"] = settings.clickhouse.connect_timeout_s
        kwargs["send_receive_timeout"] = settings.clickhouse.send_receive_timeout_s
    try:
        client = clickhouse_connect.get_client(**kwargs)
    except Exception as exc:
        if path is not None and _locked_by_another_process(path):
            raise DatabaseBusyError(path) from exc
        raise WarehouseError(
            f"cannot connect to ClickHouse at {describe(url)}: {_first_line(exc)}. "
            "Check SLUICE_CLICKHOUSE__URL."
        ) from exc
    return DirectWarehouse(client, describe(url), path)


class DatabaseBusyError(WarehouseError):
    """Another process owns the embedded database directory."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"the embedded ClickHouse database {path} is open in another process. "
            "Only one process can open it; while the sink runs, queries go through it."
        )
        self.path = path


def _locked_by_another_process(path: Path) -> bool:
    status = path / "status"
    if not status.exists():
        return False
    with status.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def ensure_database(warehouse: Warehouse, database: str) -> None:
    """Create Sluice's database if needed.

    Asked first, because ClickHouse checks the CREATE grant before it looks whether the
    database exists: a user that may only read or insert (a server's reader or writer)
    would be refused ``CREATE DATABASE IF NOT EXISTS`` on a database that is there.
    """
    name = quote_identifier(database)
    if not warehouse.query(f"EXISTS DATABASE {name}").scalar():
        warehouse.command(f"CREATE DATABASE IF NOT EXISTS {name}")


def quote_identifier(name: str) -> str:
    """A ClickHouse identifier in backquotes."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


# -- sharing an embedded database -----------------------------------------------------
def owner_file(path: Path) -> Path:
    """Where the owner of the embedded database ``path`` says how to reach it."""
    return path.parent / f"{path.name}.owner.json"


class QueryServer:
    """Serves SQL on the owner's engine to other local processes (loopback, token)."""

    def __init__(self, warehouse: Warehouse, path: Path, host: str = "127.0.0.1") -> None:
        self.warehouse = warehouse
        self.path = path
        self.token = secrets.token_urlsafe(24)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("query server: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.address = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> QueryServer:
        """Serve in a daemon thread and publish the owner file."""
        self._thread.start()
        file = owner_file(self.path)
        temp = file.with_suffix(f".{uuid.uuid4().hex[:6]}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"url": self.address, "token": self.token, "pid": os.getpid()}, handle)
        temp.replace(file)
        log.info("serving queries on the embedded ClickHouse %s at %s", self.path, self.address)
        return self

    def close(self) -> None:
        """Stop serving and remove the owner file (if it is still ours)."""
        with contextlib.suppress(OSError, ValueError):
            file = owner_file(self.path)
            if json.loads(file.read_text()).get("pid") == os.getpid():
                file.unlink()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        if not secrets.compare_digest(request.headers.get("X-Sluice-Token", ""), self.token):
            _reply(request, HTTPStatus.FORBIDDEN, {"error": "bad token"})
            return
        length = int(request.headers.get("Content-Length", "0"))
        try:
            body = json.loads(request.rfile.read(length))
            sql, kind = str(body["sql"]), body.get("kind", "query")
            if kind == "command":
                self.warehouse.command(sql)
                _reply(request, HTTPStatus.OK, {"columns": [], "types": [], "rows": []})
            else:
                result = self.warehouse.query(sql)
                rows = [[_jsonable(v) for v in row] for row in result.rows]
                payload = {"columns": result.columns, "types": result.types, "rows": rows}
                _reply(request, HTTPStatus.OK, payload)
        except WarehouseError as exc:
            _reply(request, HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except (ValueError, KeyError) as exc:
            _reply(request, HTTPStatus.BAD_REQUEST, {"error": f"bad request: {exc}"})


def _reply(request: BaseHTTPRequestHandler, status: HTTPStatus, payload: Any) -> None:
    data = json.dumps(payload).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal | uuid.UUID | IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


class RemoteWarehouse:
    """The embedded database, reached through the process that owns it."""

    def __init__(self, url: str, token: str, path: Path, timeout: float = 120.0) -> None:
        self.url = url
        self.token = token
        self.description = f"chdb://{path} (through the sink at {url})"
        self._client = httpx.Client(timeout=timeout)

    def query(self, sql: str) -> Result:
        """Run a query on the owner's engine."""
        payload = self._post(sql, "query")
        types = payload["types"]
        rows = [
            tuple(_typed(v, t) for v, t in zip(row, types, strict=True)) for row in payload["rows"]
        ]
        return Result(payload["columns"], types, rows)

    def command(self, sql: str) -> None:
        """Run a statement on the owner's engine."""
        self._post(sql, "command")

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def _post(self, sql: str, kind: str) -> dict[str, Any]:
        try:
            response = self._client.post(
                self.url, json={"sql": sql, "kind": kind}, headers={"X-Sluice-Token": self.token}
            )
        except httpx.HTTPError as exc:
            raise WarehouseError(f"ClickHouse at {self.description}: {exc}") from exc
        payload: dict[str, Any] = response.json()
        if response.status_code != HTTPStatus.OK:
            raise WarehouseError(str(payload.get("error", response.text)))
        return payload


def _typed(value: Any, type_name: str) -> Any:
    """Undo the JSON transport for the types whose exact value matters."""
    if value is None:
        return None
    base = type_name.removeprefix("Nullable(").removeprefix("LowCardinality(")
    if base.startswith("Decimal"):
        return Decimal(value)
    if base.startswith(("DateTime", "Date")) and isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)
        return (
            parsed.date() if base.startswith("Date") and not base.startswith("DateTime") else parsed
        )
    return value


def open_warehouse(settings: Settings, *, database: str | None = None) -> Warehouse:
    """ClickHouse for a client process: direct, or through the embedded database's owner."""
    try:
        return connect(settings, database=database)
    except DatabaseBusyError as busy:
        file = owner_file(busy.path)
        try:
            owner = json.loads(file.read_text())
        except (OSError, ValueError):
            raise WarehouseError(
                f"{busy} The process that holds it does not serve queries (no {file.name}); "
                "stop it, or point SLUICE_CLICKHOUSE__URL at a ClickHouse server."
            ) from None
        # The owner answers in its own database, Sluice's (the sink opened it so).
        return RemoteWarehouse(owner["url"], owner["token"], busy.path)
