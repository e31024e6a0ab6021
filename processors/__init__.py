"""Sluice's stream processors: one module each, looked up by name.

Modules are imported only when their processor runs, so ``sluice run validate``
never loads the NLP models of ``guard``.
"""

from __future__ import annotations

import importlib

from streams.processor import ProcessorSpec

#: processor name -> module that defines ``PROCESSOR``.
PROCESSORS: dict[str, str] = {
    "validate": "processors.validate",
    "guard": "processors.guard",
    "infer": "processors.infer",
    "drift": "processors.drift",
}


def load(name: str) -> ProcessorSpec:
    """The spec of processor ``name``, or a clear error listing the known ones."""
    module_name = PROCESSORS.get(name)
    if module_name is None:
        known = ", ".join(sorted(PROCESSORS))
        raise KeyError(f"unknown processor {name!r}; known: {known}")
    spec: ProcessorSpec = importlib.import_module(module_name).PROCESSOR
    return spec
