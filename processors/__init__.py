"""Sluice's stream processors: one package each, looked up by name.

Each package (``processors/<name>/``) holds the processor's pure logic, its
helpers and its settings class, and declares it in ``processor.py`` as
``PROCESSOR``: a ``ProcessorSpec`` that the runner executes (stateless or
rollback-able, exactly-once Kafka → Kafka or Kafka → sink), or an
``EngineSpec`` for a processor that brings its own engine (meter on
faust-streaming). Both are started, configured and stopped the same way, by
``sluice run NAME``.

Packages are imported only when their processor runs, so ``sluice run
validate`` never loads the NLP models of ``guard`` or faust.
"""

from __future__ import annotations

import importlib
from typing import Any

from streams.errors import ConfigurationError
from streams.runtime.spec import EngineSpec, ProcessorSpec

#: processor name -> module that defines ``PROCESSOR``.
PROCESSORS: dict[str, str] = {
    "validate": "processors.validate.processor",
    "guard": "processors.guard.processor",
    # guard's second processor (its own group, the same principal): streamed deltas.
    "guard-stream": "processors.guard.stream_processor",
    "infer": "processors.infer.processor",
    "drift": "processors.drift.processor",
    "meter": "processors.meter.processor",
    "sink": "processors.sink.processor",
}

Declared = ProcessorSpec[Any, Any] | EngineSpec[Any]


def resolve(name: str) -> Declared:
    """The declaration of processor ``name``: what ``sluice run name`` starts."""
    module_name = PROCESSORS.get(name)
    if module_name is None:
        known = ", ".join(sorted(PROCESSORS))
        raise ConfigurationError(f"unknown processor {name!r}; known: {known}")
    spec = getattr(importlib.import_module(module_name), "PROCESSOR", None)
    if not isinstance(spec, ProcessorSpec | EngineSpec):
        raise TypeError(f"{module_name} declares no PROCESSOR (a ProcessorSpec or EngineSpec)")
    return spec


def load(name: str) -> ProcessorSpec[Any, Any]:
    """The spec of runner processor ``name``."""
    spec = resolve(name)
    if not isinstance(spec, ProcessorSpec):
        raise TypeError(f"processor {name!r} runs its own engine; use resolve({name!r})")
    return spec
