"""Finding a JDK of a given major version on this machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from streams.errors import ConfigurationError

_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


class JavaNotFoundError(ConfigurationError):
    """No JDK of the needed version is installed."""


@lru_cache(maxsize=32)
def java_major(java: Path) -> int | None:
    """Major version of a ``java`` executable (17, 21, 25), or None if it does not run."""
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = _VERSION.search(out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def candidates(preferred: Path | None = None) -> list[Path]:
    """Java executables in order of preference: explicit, JAVA_HOME, PATH, /usr/lib/jvm."""
    found: list[Path] = []
    homes = [preferred] if preferred else []
    if os.environ.get("JAVA_HOME"):
        homes.append(Path(os.environ["JAVA_HOME"]))
    found += [h / "bin" / "java" for h in homes]
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path).resolve())
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        found += sorted((p / "bin" / "java" for p in jvm.iterdir()), reverse=True)
    unique: list[Path] = []
    for path in found:
        if path.is_file() and path not in unique:
            unique.append(path)
    return unique


def find_java(min_major: int, preferred: Path | None = None, *, newest: bool = False) -> Path:
    """A java executable of at least ``min_major``; the explicit one must satisfy it."""
    if preferred is not None:
        java = preferred / "bin" / "java"
        major = java_major(java)
        if major is None or major < min_major:
            raise JavaNotFoundError(
                f"{java} is Java {major}, but Java {min_major}+ is needed; point "
                f"SLUICE_STACK__*JAVA_HOME at a JDK {min_major}+"
            )
        return java
    usable = [(java_major(j) or 0, j) for j in candidates()]
    usable = [(m, j) for m, j in usable if m >= min_major]
    if not usable:
        raise JavaNotFoundError(
            f"no Java {min_major}+ found (looked at JAVA_HOME, PATH and /usr/lib/jvm). "
            f"Install a JDK {min_major}+ (e.g. apt-get install openjdk-{min_major}-jre-headless "
            "or Temurin) or point SLUICE_STACK__*JAVA_HOME at one."
        )
    if newest:
        return max(usable, key=lambda mj: mj[0])[1]
    return usable[0][1]
