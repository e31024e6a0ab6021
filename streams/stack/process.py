"""Background processes of the local stack, tracked by pid files in the state directory.

A pid file records the pid and the exact command line. ``stop`` signals a pid
only while ``/proc/<pid>/cmdline`` still matches, so a recycled pid is never
killed by mistake, and ``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.runtime.waiting import wait_until


@dataclass(frozen=True)
class ManagedProcess:
    """One background process: its pid file and its log."""

    name: str
    pid_file: Path
    log_file: Path

    def start(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Start ``command`` in its own session, appending output to the log."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n=== sluice: starting {self.name} at {time.ctime()} ===\n".encode())
            log.flush()
            process = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,  # survives the CLI; Ctrl-C in the shell does not reach it
            )
        self.pid_file.write_text(
            json.dumps({"pid": process.pid, "command": list(command), "started_at": time.time()})
        )
        _wait_for_cmdline(process.pid)
        return process.pid

    def pid(self) -> int | None:
        """Pid of the process if it is running and is still the one we started."""
        try:
            info = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        pid = int(info["pid"])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        expected = [part.encode() for part in info["command"]]
        # The java launcher re-executes itself right after start; for that moment the
        # command line reads empty. A pid that young is still the one we started.
        just_started = cmdline == [b""] and time.time() - float(info["started_at"]) < 30
        if cmdline[: len(expected)] != expected and not just_started:
            return None
        if _is_zombie(pid):
            return None
        return pid

    def is_running(self) -> bool:
        """True while the recorded process is alive."""
        return self.pid() is not None

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; returns True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        if not wait_until(lambda: self.pid() is None, timeout, interval=0.2):
            os.killpg(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log, for reporting a dead or failed process."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 64 * 1024))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _wait_for_cmdline(pid: int, timeout: float = 5.0) -> None:
    """Wait until the kernel shows the new process's command line.

    Right after exec, /proc/<pid>/cmdline can read empty for a moment; ``pid()``
    would then take a healthy start for a dead process.
    """

    def shown() -> bool:
        try:
            return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            return True  # gone already: pid() reports it

    wait_until(shown, timeout, interval=0.01)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
