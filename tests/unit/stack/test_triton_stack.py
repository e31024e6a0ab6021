"""The Triton stack component, the venv it runs in, and the test model's request parsing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streams.settings import PROJECT_ROOT, Settings
from streams.stack import Stack, component_names
from streams.stack.components import ComponentError
from streams.stack.triton import Triton
from streams.stack.venv import MARKER, ensure_venv


def settings(tmp_path: Path, **stack: object) -> Settings:
    return Settings(stack={"state_dir": tmp_path / "state", **stack})


def test_up_starts_the_configured_components_and_only_overrides(tmp_path: Path) -> None:
    assert component_names() == ["kafka", "registry", "connect", "triton"]
    assert [c.name for c in Stack(settings(tmp_path)).components] == component_names()
    without = settings(tmp_path, components=["kafka", "registry"])
    assert [c.name for c in Stack(without).components] == ["kafka", "registry"]
    assert [c.name for c in Stack(without, ["triton"]).components] == ["triton"]
    with pytest.raises(ComponentError, match=r"unknown component\(s\) tritn in --only"):
        Stack(without, ["tritn"])
    with pytest.raises(ComponentError, match="SLUICE_STACK__COMPONENTS"):
        Stack(settings(tmp_path, components=["kafka", "clickhouse"]))


def test_triton_runs_server_py_from_its_venv_on_the_configured_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The integration tier's conftest points every Settings() at a shared venv; not here.
    monkeypatch.delenv("SLUICE_STACK__TRITON_VENV", raising=False)
    s = settings(
        tmp_path,
        triton_http_port=18100,
        triton_grpc_port=18101,
        triton_metrics_port=18102,
        triton_venv=tmp_path / "venv",
    )
    assert s.triton.url == "127.0.0.1:18101"  # processors follow the stack's port
    triton = Triton(s)
    command = triton.command()
    assert command[0] == str(tmp_path / "venv" / "bin" / "python")
    assert command[2] == str(PROJECT_ROOT / "infra" / "triton" / "server.py")
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert flags["--http-port"] == "18100" and flags["--grpc-port"] == "18101"
    assert flags["--metrics-port"] == "18102" and flags["--host"] == "127.0.0.1"
    assert "--models" not in flags
    assert triton.models == ["minilm", "textgen"]
    assert triton.start_timeout_s == s.stack.triton_start_timeout_s
    default = settings(tmp_path).stack
    assert default.triton_venv is None
    assert default.triton_venv_dir == tmp_path / "state" / "venvs" / "triton"


def test_a_model_selection_is_checked_against_the_catalog(tmp_path: Path) -> None:
    only_minilm = Triton(settings(tmp_path, triton_models=["minilm"]))
    assert only_minilm.models == ["minilm"]
    assert only_minilm.command()[-2:] == ["--models", "minilm"]
    with pytest.raises(ComponentError, match="choose from minilm, textgen"):
        _ = Triton(settings(tmp_path, triton_models=["gpt"])).models


def test_the_venv_is_reused_until_its_requirements_change(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing to install\n")
    venv = tmp_path / "venv"
    messages: list[str] = []
    python = ensure_venv(venv, requirements, messages.append, Path(sys.executable))
    assert python.exists() and (venv / MARKER).is_file()
    assert any("creating venv" in m for m in messages)
    messages.clear()
    ensure_venv(venv, requirements, messages.append, Path(sys.executable))
    assert messages == []  # reused: nothing run
    requirements.write_text("# still nothing, but a different file\n")
    ensure_venv(venv, requirements, messages.append, Path(sys.executable))
    assert any("changed: updating venv" in m for m in messages)
    assert not any("creating venv" in m for m in messages)


# --- the textgen test model's sampling parameters (torch-free module in infra/triton) -------

sys.path.insert(0, str(PROJECT_ROOT / "infra" / "triton"))
from sampling_params import DEFAULT_MAX_TOKENS, RequestError, Sampling  # noqa: E402


def test_sampling_parameters_parse_like_the_vllm_backend() -> None:
    assert Sampling.parse(None, 512) == Sampling(max_tokens=DEFAULT_MAX_TOKENS)
    parsed = Sampling.parse('{"max_tokens": "7", "temperature": 0, "seed": 3, "top_p": null}', 512)
    assert parsed == Sampling(max_tokens=7, temperature=0.0, seed=3, top_p=1.0)
    assert Sampling.parse(b'{"top_k": 40, "top_p": 0.9}', 512).top_k == 40


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("not json", "not JSON"),
        ("[1]", "must be a JSON object"),
        ('{"max_tokens": 0}', "between 1 and 512"),
        ('{"max_tokens": 513}', "between 1 and 512"),
        ('{"max_tokens": "many"}', "bad sampling_parameters value"),
        ('{"temperature": -1}', "temperature must be >= 0"),
        ('{"top_p": 0}', "top_p must be in"),
        ('{"stop": ["\\n"]}', "does not implement stop"),
    ],
)
def test_bad_sampling_parameters_are_refused_with_the_reason(raw: str, expected: str) -> None:
    with pytest.raises(RequestError, match=expected):
        Sampling.parse(raw, 512)
