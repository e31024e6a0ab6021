"""A throwaway PostgreSQL cluster for CDC tests, from Debian's packages (initdb, pg_ctl).

The cluster has ``wal_level=logical`` (what Debezium's pgoutput needs), listens on
127.0.0.1 only, and its superuser ``sluice`` logs in with a password over TCP.
PostgreSQL refuses to run as root; when the tests run as root (CI does), every
server command runs as the ``postgres`` system user (created by the Debian package)
through ``runuser``, in a directory that user owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "sluice"
PASSWORD = "sluice-test"  # a throwaway local cluster


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def server_bin() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin that has initdb."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresUnavailableError(
            "PostgreSQL is not installed: apt-get install postgresql (.ci/run does)"
        )
    return found[-1].parent


@dataclass
class PostgresCluster:
    """One cluster in its own directory, on its own port."""

    root: Path
    port: int
    database: str = "helpdesk"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def _as_server_user(self, command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        return ["runuser", "-u", "postgres", "--", *command]

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(
            self._as_server_user(command), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[:2])} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def start(self) -> None:
        """initdb (once), then start the server and create the database."""
        binaries = server_bin()
        if not (self.data / "PG_VERSION").exists():
            password_file = self.root / "password"
            password_file.write_text(PASSWORD + "\n")
            if os.geteuid() == 0:
                shutil.chown(self.root, "postgres", "postgres")
                shutil.chown(password_file, "postgres", "postgres")
            self._run(
                [
                    str(binaries / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    USER,
                    f"--pwfile={password_file}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                "-c wal_level=logical",
                "-c max_wal_senders=10",
                "-c max_replication_slots=10",
                "-c fsync=off",
            ]
        )
        self._run(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "start",
            ]
        )
        exists = self.sql(
            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'", database="postgres"
        )
        if not exists.strip():
            self.sql(f"CREATE DATABASE {self.database}", database="postgres")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its files."""
        if (self.data / "postmaster.pid").exists():
            self._run([str(server_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, statements: str, *, database: str | None = None) -> str:
        """Run SQL through psql over TCP (the way Debezium connects); returns bare rows."""
        result = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database or self.database,
                "-v",
                "ON_ERROR_STOP=1",
                "-A",
                "-t",
                "-q",
                "-c",
                statements,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": PASSWORD},
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}\nSQL: {statements[:500]}")
        return result.stdout


def create(port: int) -> PostgresCluster:
    """A new cluster in a fresh directory that the server user can enter (not pytest's
    tmp_path, which only root may traverse)."""
    root = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
    root.chmod(0o755)
    return PostgresCluster(root, port)
