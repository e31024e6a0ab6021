"""promtool and amtool, as infra/local/bootstrap.sh builds them, for the alerting tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from streams.settings import PROJECT_ROOT

PROMETHEUS = PROJECT_ROOT / "infra" / "prometheus"
ALERTMANAGER = PROJECT_ROOT / "infra" / "alertmanager"
#: The version file of each tool, beside the config it checks.
VERSION_FILES = {
    "promtool": PROMETHEUS / "promtool.version",
    "amtool": ALERTMANAGER / "amtool.version",
}


def go_tool(name: str) -> Path:
    """The tool bootstrap.sh builds (or SLUICE_PROMTOOL, SLUICE_AMTOOL): missing is a
    failure, not a skip, so that no machine passes without checking the configs."""
    override = os.environ.get(f"SLUICE_{name.upper()}")
    if override:
        path = Path(override)
    else:
        version = VERSION_FILES[name].read_text().strip()
        tools = Path(os.environ.get("SLUICE_TOOLS_DIR") or Path.home() / ".cache/sluice/tools")
        path = tools / f"{name}-{version}" / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"no {name} at {path}: run infra/local/bootstrap.sh, which builds it")
    return path


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(go_tool(name)), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
