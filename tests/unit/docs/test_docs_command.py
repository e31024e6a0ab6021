"""`sluice docs build|serve`: MkDocs as a subprocess, and a clear error without the docs extra."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import docs as docs_cli
from streams.cli import main


def test_without_mkdocs_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mkdocs" else real(name, *a)
    )
    result = CliRunner().invoke(main, ["docs", "build"])
    assert result.exit_code == 1
    assert "pip install -e '.[docs]'" in result.output


def test_build_and_serve_run_mkdocs_on_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append(command)
        assert kwargs["cwd"] == docs_cli.PROJECT_ROOT
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", run)
    runner = CliRunner()
    built = runner.invoke(main, ["docs", "build", "--strict", "--out", str(tmp_path)])
    assert built.exit_code == 0, built.output
    served = runner.invoke(main, ["docs", "serve", "--port", "8123"])
    assert served.exit_code == 0, served.output
    build, serve = calls
    assert build[1:4] == ["-m", "mkdocs", "build"] and "--strict" in build
    assert build[build.index("--site-dir") + 1] == str(tmp_path.resolve())
    assert serve[1:4] == ["-m", "mkdocs", "serve"] and "127.0.0.1:8123" in serve
