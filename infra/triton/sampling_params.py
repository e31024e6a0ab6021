"""The sampling parameters of a text_completion request, parsed as Triton's vLLM backend does.

Kept free of torch so Sluice's unit tests can check the parsing rules from the
main environment (``sys.path`` pointing at infra/triton/).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_TOKENS = 16  # vLLM's default when a request gives none
SAMPLING_KEYS = frozenset({"max_tokens", "temperature", "seed", "top_k", "top_p"})


class RequestError(ValueError):
    """A request the model cannot serve; the message goes back to the client."""


@dataclass(frozen=True)
class Sampling:
    """The subset of vLLM's SamplingParams this test model honours."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0  # vLLM's default
    seed: int | None = None
    top_k: int = 0  # 0 or -1: off
    top_p: float = 1.0

    @classmethod
    def parse(cls, raw: str | bytes | None, max_output_tokens: int) -> Sampling:
        """Parse the ``sampling_parameters`` JSON string as the vLLM backend does.

        Values may be JSON numbers or numeric strings; nulls mean the default.
        Keys this test model does not implement are refused, not ignored, so a
        request never silently gets something other than what it asked for.
        """
        if raw is None or raw in (b"", ""):
            return cls()
        try:
            params: Any = json.loads(raw)
        except ValueError as exc:
            raise RequestError(f"sampling_parameters is not JSON: {exc}") from None
        if not isinstance(params, dict):
            raise RequestError("sampling_parameters must be a JSON object")
        params = {k: v for k, v in params.items() if v is not None}
        unknown = sorted(set(params) - SAMPLING_KEYS)
        if unknown:
            raise RequestError(
                f"the textgen test model does not implement {', '.join(unknown)}; "
                f"it honours {', '.join(sorted(SAMPLING_KEYS))}"
            )
        try:
            sampling = cls(
                max_tokens=int(params.get("max_tokens", DEFAULT_MAX_TOKENS)),
                temperature=float(params.get("temperature", 1.0)),
                seed=int(params["seed"]) if "seed" in params else None,
                top_k=int(params.get("top_k", 0)),
                top_p=float(params.get("top_p", 1.0)),
            )
        except (TypeError, ValueError) as exc:
            raise RequestError(f"bad sampling_parameters value: {exc}") from None
        if not 1 <= sampling.max_tokens <= max_output_tokens:
            raise RequestError(
                f"max_tokens must be between 1 and {max_output_tokens}, got {sampling.max_tokens}"
            )
        if sampling.temperature < 0 or not math.isfinite(sampling.temperature):
            raise RequestError(f"temperature must be >= 0, got {sampling.temperature}")
        if not 0 < sampling.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {sampling.top_p}")
        return sampling
