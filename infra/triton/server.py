"""Serve Sluice's own models on the Triton Inference Server bundled in nvidia-pytriton.

Runs inside the Triton venv (torch, PyTriton, numpy<2), started by ``sluice up``
(streams/stack/triton.py) or by hand:

    <state_dir>/venvs/triton/bin/python infra/triton/server.py --grpc-port 8001

It serves every entry of the model catalog (infra/triton/models.yaml) that has
a ``serve`` block, or those named by ``--models``, under the Triton model
names, tensor names and dtypes the catalog declares, so the catalog is the one
truth for both this server and the processors that call it. PyTriton runs the
Python functions below in this process and Triton's C++ server in a child
process; SIGTERM (what ``sluice down`` sends) stops both cleanly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from PyPI packages, never a hub

LOG = logging.getLogger("sluice.triton")
HERE = Path(__file__).resolve().parent

#: Triton dtype names of the catalog -> NumPy dtypes PyTriton binds.
DTYPES: dict[str, Any] = {
    "BYTES": np.bytes_,
    "BOOL": np.bool_,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; every port is configurable so tests can run beside a stack."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, default=HERE / "models.yaml")
    parser.add_argument(
        "--models",
        default="",
        help="comma-separated platform model names (default: every `serve` entry)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--status-file",
        type=Path,
        default=None,
        help="write {device, models, ...} here once the models are bound",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="intra-op threads for torch on the CPU (0: torch's default, one "
        "per core); 1 avoids stalls on a CPU shared with busy processes",
    )
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton's own verbosity")
    return parser.parse_args(argv)


def served_entries(catalog: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """Catalog entries to serve, each with its ``name``; unknown names are an error."""
    raw = yaml.safe_load(catalog.read_text(encoding="utf-8"))
    entries = {
        name: {"name": name, **entry} for name, entry in raw["models"].items() if entry.get("serve")
    }
    wanted = list(names) or list(entries)
    unknown = [n for n in wanted if n not in entries]
    if unknown:
        raise SystemExit(
            f"--models names {', '.join(unknown)}, not served by Sluice; "
            f"choose from {', '.join(entries)} (entries of {catalog} with `serve`)"
        )
    return [entries[n] for n in wanted]


def pick_device(choice: str, torch_threads: int = 0) -> Any:
    """CUDA when asked for or available (auto), else the CPU."""
    import torch  # noqa: PLC0415 (slow import, after argument errors)

    if torch_threads > 0:
        torch.set_num_threads(torch_threads)

    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def tensor(
    entry: dict[str, Any], side: str, role: str, shape: tuple[int, ...], optional: bool = False
) -> Any:
    """The PyTriton Tensor for a catalog role, with the catalog's name and dtype."""
    from pytriton.model_config import Tensor  # noqa: PLC0415

    try:
        spec = entry[side][role]
    except KeyError:
        raise SystemExit(
            f"model {entry['name']!r}: the catalog must declare {side}.{role} "
            f"for implementation {entry['serve']['implementation']!r}"
        ) from None
    return Tensor(name=spec["name"], dtype=DTYPES[spec["dtype"]], shape=shape, optional=optional)


def text_of(value: Any) -> str:
    """A BYTES element as text; bad UTF-8 is replaced, not fatal (it shares a batch)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def bind_minilm(triton: Any, entry: dict[str, Any], device: Any) -> None:
    """Embeddings with Triton's dynamic batcher: many small requests become one forward pass."""
    from minilm import MiniLM  # noqa: PLC0415
    from pytriton.decorators import batch  # noqa: PLC0415
    from pytriton.model_config import DynamicBatcher, ModelConfig  # noqa: PLC0415

    model = MiniLM(device)
    inp = tensor(entry, "inputs", "text", (1,))
    emb = tensor(entry, "outputs", "embedding", (model.dims,))
    cnt = tensor(entry, "outputs", "num_input_tokens", (1,))

    @batch  # type: ignore[untyped-decorator]
    def infer(**inputs: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
        texts = [text_of(v) for v in inputs[inp.name][:, 0]]
        counts = np.asarray(model.count(texts), dtype=cnt.dtype).reshape(-1, 1)
        return {emb.name: model.embed(texts).astype(emb.dtype), cnt.name: counts}

    triton.bind(
        model_name=entry["triton_model"],
        infer_func=infer,
        inputs=[inp],
        outputs=[emb, cnt],
        config=ModelConfig(
            batching=True,
            max_batch_size=int(entry["max_batch_size"]),
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=int(entry["serve"].get("max_queue_delay_us", 0))
            ),
        ),
        strict=True,
    )


def bind_textgen(triton: Any, entry: dict[str, Any], device: Any) -> None:
    """The vLLM-backend interface: decoupled, no Triton batching, JSON sampling parameters."""
    from minilm import model_dir  # noqa: PLC0415
    from pytriton.model_config import ModelConfig  # noqa: PLC0415
    from sampling_params import RequestError, Sampling  # noqa: PLC0415
    from textgen import TextGen  # noqa: PLC0415

    options = entry["serve"].get("options", {})
    model = TextGen(
        model_dir() / "tokenizer.json",
        device,
        seed=int(options.get("seed", 0)),
        context=int(options.get("context_tokens", 1024)),
    )
    max_output = int(entry.get("max_output_tokens", 512))
    text_in = tensor(entry, "inputs", "text_input", (1,))
    params = tensor(entry, "inputs", "sampling_parameters", (1,), optional=True)
    exclude = tensor(entry, "inputs", "exclude_input_in_output", (1,), optional=True)
    want_in = tensor(entry, "inputs", "return_num_input_tokens", (1,), optional=True)
    want_out = tensor(entry, "inputs", "return_num_output_tokens", (1,), optional=True)
    # Optional in the catalog too: without it the model answers every request whole.
    stream = (
        tensor(entry, "inputs", "stream", (1,), optional=True)
        if "stream" in entry["inputs"]
        else None
    )
    text_out = tensor(entry, "outputs", "text_output", (1,))
    n_in = tensor(entry, "outputs", "num_input_tokens", (1,))
    n_out = tensor(entry, "outputs", "num_output_tokens", (1,))

    def flag(request: Any, spec: Any) -> bool:
        return bool(request[spec.name][0]) if spec is not None and spec.name in request else False

    def counts(request: Any, prompt_tokens: int, output_tokens: int) -> dict[str, npt.NDArray[Any]]:
        # Like the vLLM backend, the counts come back only when asked for.
        response = {}
        if flag(request, want_in):
            response[n_in.name] = np.asarray([prompt_tokens], dtype=n_in.dtype)
        if flag(request, want_out):
            response[n_out.name] = np.asarray([output_tokens], dtype=n_out.dtype)
        return response

    def respond(request: Any) -> dict[str, npt.NDArray[Any]]:
        prompt = text_of(request[text_in.name][0])
        raw = request[params.name][0] if params.name in request else None
        sampling = Sampling.parse(raw, max_output)
        generated, prompt_tokens, output_tokens = model.generate(prompt, sampling)
        text = generated if flag(request, exclude) else prompt + generated
        response = {text_out.name: np.asarray([text.encode("utf-8")], dtype=np.bytes_)}
        return response | counts(request, prompt_tokens, output_tokens)

    def respond_streamed(request: Any) -> Iterator[dict[str, npt.NDArray[Any]]]:
        """One response per generated token (its text delta), then one with the counts."""
        if exclude.name in request and not flag(request, exclude):
            # As the vLLM backend: a stream carries the generated text only.
            raise RequestError("when streaming, exclude_input_in_output false is not allowed")
        prompt = text_of(request[text_in.name][0])
        raw = request[params.name][0] if params.name in request else None
        for piece in model.stream(prompt, Sampling.parse(raw, max_output)):
            response = {text_out.name: np.asarray([piece.text.encode("utf-8")], dtype=np.bytes_)}
            if piece.final:
                response |= counts(request, piece.input_tokens, piece.output_tokens)
            yield response

    def infer(requests: list[Any]) -> Iterator[list[dict[str, npt.NDArray[Any]]]]:
        # A generator makes PyTriton answer over the decoupled (streaming) path, as vLLM does;
        # after the last yield PyTriton sends the empty response flagged final.
        try:
            # Each yield answers every request of the call, so only a call of one request
            # (what Triton sends a model without batching) is streamed; several are answered
            # whole, which a client reads as a single delta.
            if len(requests) == 1 and flag(requests[0], stream):
                for response in respond_streamed(requests[0]):
                    yield [response]
                return
            yield [respond(request) for request in requests]
        except RequestError as exc:
            from pytriton.exceptions import PyTritonValidationError  # noqa: PLC0415

            raise PyTritonValidationError(str(exc)) from None

    triton.bind(
        model_name=entry["triton_model"],
        infer_func=infer,
        inputs=[text_in, params, exclude, want_in, want_out]
        + ([stream] if stream is not None else []),
        outputs=[text_out, n_in, n_out],
        config=ModelConfig(batching=False, decoupled=True),
        strict=False,  # the counts are optional outputs, sent only when asked for
    )


BINDERS: dict[str, Callable[[Any, dict[str, Any], Any], None]] = {
    "minilm": bind_minilm,
    "textgen": bind_textgen,
}


def _stop_on_sigterm() -> None:
    """SIGTERM ends `serve` the way Ctrl-C does, so PyTriton stops Triton and cleans up."""

    def handler(signum: int, frame: FrameType | None) -> None:
        LOG.info("signal %d received: stopping Triton", signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> None:
    """Bind the selected models and serve until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))  # minilm.py and textgen.py sit beside this file
    entries = served_entries(args.catalog, [n for n in args.models.split(",") if n])
    _stop_on_sigterm()
    started = time.monotonic()
    device = pick_device(args.device, args.torch_threads)

    from pytriton.triton import (  # noqa: PLC0415
        DEFAULT_PROTECTED_ENDPOINTS,
        Triton,
        TritonConfig,
        TritonSecurityConfig,
    )

    # PyTriton guards some APIs with a random token. Statistics (read-only counters:
    # requests, executions, queue times) stay open: they show whether dynamic batching
    # works. Loading/unloading models, shared memory, tracing and logging stay guarded.
    security = TritonSecurityConfig(
        restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
    )
    config = TritonConfig(
        http_address=args.host,
        http_port=args.http_port,
        grpc_address=args.host,
        grpc_port=args.grpc_port,
        metrics_address=args.host,
        metrics_port=args.metrics_port,
        log_verbose=args.log_verbose,
        exit_timeout_secs=10,
    )
    with Triton(config=config, security_config=security) as triton:
        for entry in entries:
            LOG.info(
                "binding %s as Triton model %r (%s)",
                entry["name"],
                entry["triton_model"],
                entry["serve"]["implementation"],
            )
            BINDERS[entry["serve"]["implementation"]](triton, entry, device)
        if args.status_file is not None:
            import torch  # noqa: PLC0415

            args.status_file.parent.mkdir(parents=True, exist_ok=True)
            args.status_file.write_text(
                json.dumps(
                    {
                        "device": str(device),
                        "torch": torch.__version__,
                        "pid": os.getpid(),
                        "torch_threads": torch.get_num_threads(),
                        "models": [e["triton_model"] for e in entries],
                    }
                )
            )
        LOG.info(
            "serving %s on %s (HTTP %d, gRPC %d, metrics %d); models bound in %.1fs",
            ", ".join(e["triton_model"] for e in entries),
            device,
            args.http_port,
            args.grpc_port,
            args.metrics_port,
            time.monotonic() - started,
        )
        triton.serve()
    LOG.info("Triton stopped")


if __name__ == "__main__":
    main()
