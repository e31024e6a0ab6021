"""The processor registry (``processors.PROCESSORS``) → what each processor reads and writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refgen.markdown import DASH, code, escape, table
from refgen.settings import env_prefix
from streams.contracts.catalog import Catalog
from streams.runtime.spec import EngineSpec, ProcessorSpec


@dataclass(frozen=True)
class ProcessorRow:
    """One processor as ``sluice run NAME`` starts it, with its default settings."""

    name: str
    module: str
    kind: str  # "runner" or "own engine"
    description: str
    settings: str  # env prefix of its own settings class, or ""
    inputs: list[str]
    outputs: list[str]


def processor_row(
    name: str, module: str, spec: ProcessorSpec[Any, Any] | EngineSpec[Any], catalog: Catalog
) -> ProcessorRow:
    """One declared processor; its topics from its settings' defaults, not the environment."""
    config = spec.settings.model_construct()
    if isinstance(spec, ProcessorSpec):
        inputs, outputs, kind = (
            spec.inputs(catalog, config),
            spec.outputs(catalog, config),
            "runner",
        )
    else:
        inputs, outputs, kind = [], [], "own engine"
    return ProcessorRow(
        name=name,
        module=module,
        kind=kind,
        description=spec.description,
        settings=env_prefix(spec.settings),
        inputs=sorted(inputs),
        outputs=sorted(outputs),
    )


def render(rows: list[ProcessorRow]) -> str:
    """A section per processor."""
    text = table(
        ("processor", "runs on", "settings", "what it does"),
        [
            (
                f"[`{r.name}`](#{r.name})",
                r.kind,
                f"[`{r.settings}*`](settings.md)" if r.settings else "none of its own",
                escape(r.description),
            )
            for r in rows
        ],
    )
    for r in rows:
        text += (
            f"\n## {r.name}\n\n{escape(r.description)}\n\nDeclared in `{r.module}` as `PROCESSOR`"
        )
        text += (
            " (a `ProcessorSpec` the runner executes).\n\n"
            if r.kind == "runner"
            else " (an `EngineSpec`: it brings its own stream engine).\n\n"
        )
        if r.inputs or r.outputs:
            text += f"- reads: {', '.join(code(t) for t in r.inputs) or DASH}\n"
            text += f"- writes: {', '.join(code(t) for t in r.outputs) or DASH}"
            text += " (plus the dead-letter topic of each input)\n"
    return text
