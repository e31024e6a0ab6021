"""Sluice's stream processors: one module each, looked up by name.

A processor module exposes either ``PROCESSOR`` (a ``ProcessorSpec`` that the
runner executes: stateless, exactly-once Kafka → Kafka or Kafka → sink) or
``main(settings)`` (a processor that brings its own engine, like meter on
faust-streaming), plus a one-line ``DESCRIPTION`` for the latter.

Modules are imported only when their processor runs, so ``sluice run validate``
never loads the NLP models of ``guard`` or faust.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from streams.processor import ProcessorSpec
from streams.settings import Settings

#: processor name -> module that defines ``PROCESSOR`` or ``main``.
PROCESSORS: dict[str, str] = {
    "validate": "processors.validate",
    "guard": "processors.guard",
    "infer": "processors.infer",
    "drift": "processors.drift",
    "meter": "processors.meter",
    "sink": "processors.sink",
}


@dataclass(frozen=True)
class Loaded:
    """A processor module: the spec the runner executes, or its own entry point."""

    name: str
    description: str
    spec: ProcessorSpec | None = None
    main: Callable[[Settings], None] | None = None


def module(name: str) -> ModuleType:
    """The module of processor ``name``, or a clear error listing the known ones."""
    module_name = PROCESSORS.get(name)
    if module_name is None:
        known = ", ".join(sorted(PROCESSORS))
        raise KeyError(f"unknown processor {name!r}; known: {known}")
    return importlib.import_module(module_name)


def load(name: str) -> ProcessorSpec:
    """The spec of runner processor ``name``."""
    spec = resolve(name).spec
    if spec is None:
        raise TypeError(f"processor {name!r} runs its own engine; use resolve({name!r}).main")
    return spec


def resolve(name: str) -> Loaded:
    """What ``sluice run name`` starts."""
    mod = module(name)
    spec = getattr(mod, "PROCESSOR", None)
    if isinstance(spec, ProcessorSpec):
        return Loaded(name, spec.description, spec=spec)
    main = getattr(mod, "main", None)
    if callable(main):
        return Loaded(name, str(getattr(mod, "DESCRIPTION", name)), main=main)
    raise TypeError(f"{mod.__name__} defines neither PROCESSOR nor main(settings)")
