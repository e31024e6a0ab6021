"""The first tutorial, run for real: its `sluice` commands, in order, against the test stack.

`docs/tutorials/first-pipeline.md` is read at test time, so the test follows the
page. Each command runs as a `sluice` child process in a sandbox (own topic
prefix, groups, schemas copy) with its own embedded ClickHouse. Differences
from a reader's terminal, and only these: `sluice up` and `sluice down` are
skipped (the session's stack fixture owns the stack), `sluice run ...` starts
in the background (a reader gives it its own terminal), and commands that read
what the processors produced are retried until it has arrived.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.settings import Settings
from tests.support.doc_commands import ROOT, Command, page_commands
from tests.support.world import make_world

PAGE = ROOT / "docs" / "tutorials" / "first-pipeline.md"
#: Commands that show what processors produced: retried until they show it.
READS = {("dlq", "show"): "(payloads not shown)", ("sql",): "ContractViolation"}
TIMEOUT_S = 180.0


def _expected(args: tuple[str, ...]) -> str | None:
    for prefix, needle in READS.items():
        if args[: len(prefix)] == prefix:
            return needle
    return None


def _run(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _run_until_shown(command: Command, env: dict[str, str]) -> str:
    """Run one command; a read is retried until its output shows what it should."""
    args = command.argv[1:]
    needle = _expected(args)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        done = _run(args, env)
        output = done.stdout + done.stderr
        if done.returncode == 0 and (needle is None or needle in output):
            return output
        if needle is None or time.monotonic() > deadline:
            raise AssertionError(f"`{command.source}` failed (exit {done.returncode}):\n{output}")
        time.sleep(3)


def test_first_pipeline_runs_as_written(stack: Settings, tmp_path: Path) -> None:
    world = make_world(stack, tmp_path)
    env = {
        **os.environ,
        **world.env,
        "SLUICE_CLICKHOUSE__URL": f"chdb://{tmp_path / 'clickhouse'}",
        "COLUMNS": "200",
    }
    steps = [c for c in page_commands(PAGE) if c.argv[0] == "sluice"]
    assert steps, f"no sluice commands in {PAGE}"
    background: list[subprocess.Popen[bytes]] = []
    outputs: dict[str, str] = {}
    try:
        for command in steps:
            args = command.argv[1:]
            if args[0] in ("up", "down"):
                continue
            if args[0] == "run":
                log = (tmp_path / f"{'-'.join(args)}.log").open("wb")
                background.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "streams", *args],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
                continue
            outputs[command.source] = _run_until_shown(command, env)
    finally:
        for process in background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in background:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    produced = next(out for source, out in outputs.items() if "produce" in source)
    assert "produced 5,000 records" in produced, produced
    assert any("ContractViolation" in out for source, out in outputs.items() if "sql" in source)
