"""Virtual environments of the local stack, built from a requirements file and reused.

Triton's side needs torch and PyTriton (which needs numpy<2), so it gets a venv
of its own under the state directory. Building it takes minutes and gigabytes
(pip's cache keeps the wheels), so a venv records the hash of the
requirements file and of its interpreter it was built from, and is reused while
both are unchanged; a changed file is applied in place with ``pip install -r``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from streams.errors import SluiceError

Progress = Callable[[str], None]

#: Recorded inside the venv once it is complete.
MARKER = ".sluice-requirements.sha256"

#: pip output lines worth showing while a venv builds.
_SHOWN = (
    "Collecting ",
    "Downloading ",
    "Installing collected",
    "Successfully installed",
    "ERROR",
    "error:",
)


class VenvError(SluiceError):
    """A virtual environment could not be created or installed into."""


def venv_python(venv: Path) -> Path:
    """The interpreter of a venv."""
    return venv / "bin" / "python"


def _fingerprint(requirements: Path, base_python: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    version = subprocess.run(
        [str(base_python), "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    digest.update(version.encode())
    return digest.hexdigest()


def _base_python(python: Path | None) -> Path:
    """The interpreter to build from; inside a venv, the one that venv was made from."""
    if python is not None:
        found = shutil.which(str(python))
        if found is None:
            raise VenvError(
                f"Python interpreter {python} not found; fix SLUICE_STACK__TRITON_PYTHON"
            )
        return Path(found)
    return Path(getattr(sys, "_base_executable", sys.executable))


def ensure_venv(
    venv: Path, requirements: Path, progress: Progress, python: Path | None = None
) -> Path:
    """Create or update ``venv`` from ``requirements``; return its interpreter.

    Idempotent: a venv whose recorded hash matches is returned at once. A
    broken venv (its interpreter does not start) is rebuilt from scratch.
    """
    base = _base_python(python)
    wanted = _fingerprint(requirements, base)
    marker = venv / MARKER
    if marker.is_file() and marker.read_text().strip() == wanted and _runs(venv_python(venv)):
        return venv_python(venv)
    if venv.exists() and not _runs(venv_python(venv)):
        progress(f"removing broken venv {venv}")
        shutil.rmtree(venv)
    if not venv.exists():
        progress(f"creating venv {venv} with {base}")
        _run([str(base), "-m", "venv", str(venv)], progress, "creating the venv")
    else:
        progress(f"{requirements.name} changed: updating venv {venv}")
    marker.unlink(missing_ok=True)
    progress(f"installing {requirements} (the first time downloads several GB; pip caches them)")
    _run(
        [
            str(venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-r",
            str(requirements),
        ],
        progress,
        f"pip install -r {requirements}",
    )
    marker.write_text(wanted + "\n")
    progress(f"venv ready: {venv}")
    return venv_python(venv)


def _runs(python: Path) -> bool:
    if not python.exists():
        return False
    result = subprocess.run(
        [str(python), "-c", "pass"], capture_output=True, check=False, timeout=60
    )
    return result.returncode == 0


def _run(command: list[str], progress: Progress, what: str) -> None:
    """Run ``command``, reporting pip's notable lines; raise with the tail on failure."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None  # noqa: S101 (stdout=PIPE)
    tail: list[str] = []
    for raw in process.stdout:
        line = raw.rstrip()
        tail = [*tail[-39:], line]
        if line.lstrip().startswith(_SHOWN):
            progress(line.strip())
    if process.wait() != 0:
        joined = "\n".join(tail)
        raise VenvError(
            f"{what} failed (exit {process.returncode}). pip needs PyPI (or a mirror set with "
            f"PIP_INDEX_URL) and a few GB of disk. Last lines:\n{joined}"
        )
