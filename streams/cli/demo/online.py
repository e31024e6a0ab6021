"""The demo's online step: an application calls Sluice through OpenAI's own client.

A short-lived API key for one demo tenant, ``sluice run gateway`` beside guard and
infer, then three calls as an application would make them (an embedding, a chat
answer, a streamed chat answer) with the latency of each as the caller saw it. The
key is revoked at the end, and both are on the audit trail like any operator's.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import click
import httpx
from rich.table import Table

from streams.cli import console
from streams.cli.demo.support import processors
from streams.contracts.catalog import Catalog
from streams.gateway.key_store import KeyStore
from streams.runtime.audit import Auditor, audited
from streams.settings import Settings
from streams.stack.tenant_keys import local_registry

TENANT = "acme"
READY_TIMEOUT_S = 120.0
PROMPT = "My parcel has not arrived yet. What can I do?"


def run_online(settings: Settings, catalog: Catalog) -> None:
    """Serve the gateway for the step and make the calls; guard and infer are running."""
    try:
        import openai  # noqa: PLC0415 (the client an application brings, not Sluice's)
    except ImportError:
        console.print("skipping the online step (no openai client): pip install -e '.[dev]'")
        return
    store = KeyStore(settings.stack.root / "secrets")
    auditor = Auditor(settings, catalog)
    with audited(auditor, "keys.create", TENANT) as details:
        created = store.create(
            TENANT, local_registry(settings).tenants.keys(), name="demo online calls"
        )
        details.update(key_id=created.key_id, priority="normal", with_user=False)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    console.print(
        f"[bold]online calls[/bold]: gateway on {base}, API key {created.key_id} of {TENANT}"
    )
    try:
        with processors(settings, ["gateway"], {"SLUICE_GATEWAY__PORT": str(port)}):
            _wait_ready(base)
            client = openai.OpenAI(base_url=f"{base}/v1", api_key=created.key, max_retries=0)
            _report(_calls(client))
    finally:
        with audited(auditor, "keys.revoke", created.key_id) as details:
            _, changed = store.revoke(created.key_id)
            details.update(tenant=TENANT, revoked_now=changed)


def _calls(client: Any) -> list[tuple[str, float, str]]:
    """(call, seconds, what came back) for each call, as the caller timed it."""

    def embed() -> str:
        answer = client.embeddings.create(model="minilm", input=[PROMPT])
        return f"{len(answer.data[0].embedding)} floats"

    def chat() -> str:
        answer = client.chat.completions.create(
            model="textgen", messages=[{"role": "user", "content": PROMPT}], max_tokens=16
        )
        return f"{answer.usage.completion_tokens} tokens, {answer.choices[0].finish_reason}"

    def streamed() -> str:
        started = time.perf_counter()
        # Long enough to be seen streaming: guard-stream holds back a tail of 64
        # characters, about the whole of a 16-token answer.
        chunks = client.chat.completions.create(
            model="textgen",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=128,
            stream=True,
        )
        # The deltas that carry text, and when the first of them reached the caller.
        first_ms, deltas = None, 0
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas += 1
                if first_ms is None:
                    first_ms = (time.perf_counter() - started) * 1000
        first = "no text" if first_ms is None else f"first after {first_ms:,.0f} ms"
        return f"{deltas} text deltas, {first}"

    calls: list[tuple[str, Callable[[], str]]] = [
        ("embeddings (minilm)", embed),
        ("chat completion (textgen)", chat),
        ("chat completion, streamed", streamed),
    ]
    timed = []
    for name, call in calls:
        started = time.perf_counter()
        outcome = call()
        timed.append((name, time.perf_counter() - started, outcome))
    return timed


def _report(timed: list[tuple[str, float, str]]) -> None:
    table = Table(title="online calls through the gateway (OpenAI's Python client)")
    table.add_column("call")
    table.add_column("latency", justify="right")
    table.add_column("answer")
    for name, seconds, outcome in timed:
        table.add_row(name, f"{seconds * 1000:,.0f} ms", outcome)
    console.print(table)


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with console.status("waiting for the gateway to be ready"):
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    raise click.ClickException(
        f"the gateway was not ready within {READY_TIMEOUT_S:.0f}s; "
        "see .sluice/logs/demo-gateway.log"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
