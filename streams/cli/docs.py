"""``sluice docs build|serve``: the documentation site, its reference generated from the code.

Both run MkDocs (``python -m mkdocs``) on the checkout's ``mkdocs.yml``; the
reference pages are written on every build by ``docs/gen/reference.py``. MkDocs
and its plugins come with the ``docs`` extra (part of ``dev``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import click
from rich.markup import escape

from streams.cli import err_console
from streams.settings import PROJECT_ROOT

#: Not 8000: the local stack's Triton listens there.
DEFAULT_PORT = 8008
# Material for MkDocs and mkdocs-gen-files print banners about MkDocs 2; they are not ours.
_QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}


def _config() -> Path:
    """The checkout's ``mkdocs.yml``, or a clear error when MkDocs or the file is missing."""
    if importlib.util.find_spec("mkdocs") is None:
        err_console.print(
            "[red]error:[/red] "
            + escape(
                "MkDocs is not installed; install the docs extra: pip install -e '.[docs]' "
                "(it is part of '.[dev]')"
            )
        )
        sys.exit(1)
    config = PROJECT_ROOT / "mkdocs.yml"
    if not config.is_file():
        err_console.print(
            f"[red]error:[/red] {escape(str(config))} not found: the docs are built from a "
            "checkout of Sluice"
        )
        sys.exit(1)
    return config


def _mkdocs(*args: str) -> int:
    """Run ``python -m mkdocs ARGS`` in the checkout; its exit status."""
    command = [sys.executable, "-m", "mkdocs", *args]
    try:
        return subprocess.run(
            command, check=False, cwd=PROJECT_ROOT, env={**os.environ, **_QUIET}
        ).returncode
    except KeyboardInterrupt:
        return 0


@click.group()
def docs() -> None:
    """The documentation site (docs/, mkdocs.yml); needs the docs extra."""


@docs.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the static site (default: site/ in the checkout).",
)
@click.option(
    "--strict/--no-strict",
    default=False,
    show_default=True,
    help="Fail on any warning: a broken link or anchor, a page missing from the navigation, "
    "a reference page that cannot be generated.",
)
def build(out: Path | None, strict: bool) -> None:
    """Build the site, generating the reference pages from the code."""
    config = _config()
    site = (out or PROJECT_ROOT / "site").resolve()
    args = ["build", "--config-file", str(config), "--site-dir", str(site)]
    status = _mkdocs(*args, *(["--strict"] if strict else []))
    if status:
        sys.exit(status)
    click.echo(f"site written to {site} (open {site / 'index.html'})")


@docs.command()
@click.option(
    "--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port on 127.0.0.1."
)
def serve(port: int) -> None:
    """Serve the site on http://127.0.0.1:PORT, rebuilt whenever a page or the code changes."""
    config = _config()
    status = _mkdocs(
        "serve",
        "--config-file",
        str(config),
        "--dev-addr",
        f"127.0.0.1:{port}",
        "--watch",
        "streams",
        "--watch",
        "processors",
        "--watch",
        "schemas",
    )
    sys.exit(status)


COMMANDS = [docs]
