"""Triton Inference Server for the local stack: the one bundled in PyPI's nvidia-pytriton.

It runs ``infra/triton/server.py`` in a venv of its own (torch, PyTriton,
numpy<2), which ``fetch`` creates under the state directory and reuses while
``infra/triton/requirements.txt`` is unchanged. Sluice's processors never import
torch: they reach the models through tritonclient only.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cached_property
from pathlib import Path

import httpx

from streams.llm.model_catalog import ModelCatalogError, load_models
from streams.runtime import maven
from streams.stack.components import Component, ComponentError
from streams.stack.venv import ensure_venv, venv_python

INFRA = "infra/triton"


class Triton(Component):
    """PyTriton's Triton serving the catalog's models that carry a ``serve`` block."""

    name = "triton"
    title = "Triton"

    @property
    def infra_dir(self) -> Path:
        """infra/triton/ of this checkout: server.py and requirements.txt."""
        return self.settings.project_root / INFRA

    @property
    def venv(self) -> Path:
        """The Triton venv."""
        return self.stack.triton_venv_dir

    @property
    def status_file(self) -> Path:
        """Written by server.py once its models are bound: device and models."""
        return self.data_dir / "server.json"

    @property
    def start_timeout_s(self) -> float:
        """Importing torch and loading models takes far longer than a JVM start."""
        return self.stack.triton_start_timeout_s

    @cached_property
    def models(self) -> list[str]:
        """Triton model names this server serves (checked against the catalog)."""
        try:
            catalog = load_models(self.settings.triton.models_file)
        except ModelCatalogError as exc:
            raise ComponentError(str(exc)) from exc
        served = {m.name: m.triton_model for m in catalog.served_by_sluice()}
        wanted = self.stack.triton_models or list(served)
        unknown = [name for name in wanted if name not in served]
        if unknown:
            raise ComponentError(
                f"SLUICE_STACK__TRITON_MODELS names {', '.join(unknown)}, which Sluice does not "
                f"serve; choose from {', '.join(served) or 'none'} (entries of "
                f"{catalog.path} with a `serve` block)"
            )
        return [served[name] for name in wanted]

    def fetch(self, progress: maven.Progress) -> None:
        """Create (or reuse) the Triton venv from infra/triton/requirements.txt."""
        ensure_venv(
            self.venv, self.infra_dir / "requirements.txt", progress, self.stack.triton_python
        )

    def prepare(self) -> None:
        """Check the model selection and clear the previous run's status file."""
        _ = self.models
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.status_file.unlink(missing_ok=True)

    def command(self) -> list[str]:
        """The venv's python running infra/triton/server.py with the stack's ports."""
        platform_names = self.stack.triton_models
        return [
            str(venv_python(self.venv)),
            "-u",
            str(self.infra_dir / "server.py"),
            "--catalog",
            str(self.settings.triton.models_file),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.stack.triton_http_port),
            "--grpc-port",
            str(self.stack.triton_grpc_port),
            "--metrics-port",
            str(self.stack.triton_metrics_port),
            "--device",
            self.stack.triton_device,
            "--torch-threads",
            str(self.stack.triton_torch_threads),
            "--status-file",
            str(self.status_file),
            *(["--models", ",".join(platform_names)] if platform_names else []),
        ]

    def environment(self) -> dict[str, str]:
        """Offline model loading, and libpython on the loader path for Triton's Python stub."""
        libdir = subprocess.run(
            [
                str(venv_python(self.venv)),
                "-c",
                "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        inherited = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        return {
            "LD_LIBRARY_PATH": ":".join([libdir, *inherited]) if libdir else ":".join(inherited),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def address(self) -> str:
        """The gRPC endpoint processors use, and the HTTP one."""
        return (
            f"127.0.0.1:{self.stack.triton_grpc_port} (gRPC), "
            f"http://127.0.0.1:{self.stack.triton_http_port}"
        )

    def device(self) -> str | None:
        """The device the running server bound its models to (from its status file), if any."""
        try:
            device = json.loads(self.status_file.read_text()).get("device")
        except (OSError, ValueError):
            return None
        return str(device) if device else None

    def probe(self) -> str:
        """Server ready, every expected model READY; e.g. "Triton 2.51.0, models: minilm (cpu)"."""
        base = f"http://127.0.0.1:{self.stack.triton_http_port}"
        ready = httpx.get(f"{base}/v2/health/ready", timeout=3)
        if ready.status_code != 200:
            raise ComponentError(f"server not ready (HTTP {ready.status_code})")
        version = httpx.get(f"{base}/v2", timeout=3).json().get("version", "?")
        # PyTriton guards the repository index API with a token; per-model readiness is open.
        missing = [
            m
            for m in self.models
            if httpx.get(f"{base}/v2/models/{m}/ready", timeout=3).status_code != 200
        ]
        if missing:
            raise ComponentError(f"models not ready yet: {', '.join(missing)}")
        return f"Triton {version}, models: {', '.join(self.models)} ({self.device() or '?'})"
