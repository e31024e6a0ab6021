"""Fetching jars and archives from Maven Central with Maven itself, showing progress.

Maven keeps its own cache (``~/.m2``); Sluice only records where things are, so
a second ``sluice up`` is instant and a CI cache of ``~/.m2`` makes the first one
fast too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from streams.errors import SluiceError

_DOWNLOADED = re.compile(r"Downloaded from \S+: (\S+) \(([\d.]+ [kMG]?B)")

Progress = Callable[[str], None]


class MavenError(SluiceError):
    """Maven failed; the message carries the end of its output."""


def run_maven(args: Sequence[str], maven: str, progress: Progress, cwd: Path | None = None) -> str:
    """Run Maven in batch mode, reporting each download, and return its output."""
    executable = shutil.which(maven)
    if executable is None:
        raise MavenError(
            f"Maven ({maven!r}) is not installed: apt-get install maven, "
            "or set SLUICE_STACK__MAVEN to its path"
        )
    command = [executable, "-B", "-ntp", *args]
    # -ntp drops the transfer bars but keeps the "Downloaded from" lines we report.
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if process.stdout is None:  # pragma: no cover (stdout=PIPE always gives one)
        raise MavenError("could not read Maven's output")
    lines: list[str] = []
    downloads = 0
    for line in process.stdout:
        lines.append(line.rstrip())
        match = _DOWNLOADED.search(line)
        if match:
            downloads += 1
            artifact = match.group(1).rsplit("/", 1)[-1]
            progress(f"downloaded {downloads} files; last: {artifact} ({match.group(2)})")
    if process.wait() != 0:
        tail = "\n".join(line for line in lines[-25:] if line)
        raise MavenError(f"mvn {' '.join(args[:2])} failed:\n{tail}")
    return "\n".join(lines)


def build_classpath(
    pom: Path, output: Path, properties: dict[str, str], maven: str, progress: Progress
) -> list[Path]:
    """Resolve the runtime classpath of ``pom`` into ``output`` (one path per line)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    run_maven(
        [
            "-f",
            str(pom),
            "dependency:build-classpath",
            "-Dmdep.includeScope=runtime",
            f"-Dmdep.outputFile={output}",
            "-Dmdep.pathSeparator=\n",
            *(f"-D{k}={v}" for k, v in properties.items()),
        ],
        maven,
        progress,
    )
    return read_classpath(output)


def read_classpath(path: Path) -> list[Path]:
    """The jars recorded by ``build_classpath``."""
    return [Path(line) for line in path.read_text().splitlines() if line.strip()]


def copy_artifact(coordinates: str, output_dir: Path, maven: str, progress: Progress) -> None:
    """Download one artifact (``group:artifact:version:type[:classifier]``) into a folder."""
    output_dir.mkdir(parents=True, exist_ok=True)
    run_maven(
        [
            "dependency:copy",
            f"-Dartifact={coordinates}",
            f"-DoutputDirectory={output_dir}",
            "-Dmdep.overWriteReleases=true",
        ],
        maven,
        progress,
        cwd=output_dir,
    )
