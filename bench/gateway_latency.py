"""What the gateway path costs: the whole pipeline against Triton alone, same model, same inputs.

    sluice up    # Kafka, the Schema Registry and Triton (serving minilm)
    nice -n 10 .venv/bin/python -m bench.gateway_latency --duration 30 --concurrency 1,10,100

The script starts what it measures, in a sandbox of its own (topic prefix, consumer
groups, a copy of schemas/) on the running stack: ``sluice run guard``, ``sluice run
infer`` and ``sluice run gateway`` as child processes, the way
bench/kafka_security_cost.py starts guard. Like every sandbox they log in to Kafka as
the operator: the sandbox's topics have no ACLs of their own (the grants are a lookup on
the broker, the same cost for any principal). They are stopped at the end, whatever
happens; their logs are kept under ``--logs`` (default: a new folder under the system's
temporary directory, printed at the start).

Two targets, the same texts (the bodies of the sample support tickets, a sentence or two
each), one per call:

* ``direct``: Triton's ``minilm`` over gRPC (``tritonclient.grpc.aio``), the tensor
  names, shape and protocol infer itself uses (models.yaml), so that the difference is
  the pipeline's, not a protocol's;
* ``gateway``: ``POST /v1/embeddings`` (``{"model": "minilm", "input": <sentence>}``,
  httpx, a bearer API key made for the run) → the gateway signs it as the tenant →
  ``inference.requests`` → guard (PII, injection scoring with its Triton embedder unless
  ``--guard-embedder none``) → ``inference.requests.safe`` → infer (micro-batches to
  Triton) → ``inference.responses`` → guard (output redaction) → ``inference.results`` →
  the gateway.

Per concurrency level, direct first, then the gateway (never both at once: they share
Triton): a closed loop of N clients, each sending its next call as soon as the last one
is answered. The first ``--warmup`` seconds are not counted; then, for ``--duration``
seconds, every call answered in the window counts: requests/s is their number over the
window (the highest rate the target sustains with N callers), p50 and p99 are over their
latencies. "added" is gateway minus direct at the same percentile. A call that fails
(an HTTP status other than 200, a timeout, a Triton error) is counted by reason, not
timed. The bench tenant's rate limits are lifted in the sandbox's rate_limits.yaml: they
would cap the throughput, not measure it.

The table is printed and written, with the settings of the run, to
``bench/results/gateway_latency.txt`` (``--out``), and the numbers to the same name with
``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import pipeline_hops
from bench.kafka_security_cost import free_port, guard_embedder, load, percentile
from streams.gateway.key_store import KeyStore
from streams.llm.model_catalog import load_models
from streams.settings import PROJECT_ROOT, Settings
from streams.stack import sandbox
from streams.stack.sandbox import Sandbox
from streams.stack.tenant_keys import ensure_tenants, tenant_signing_key

DIRECT, GATEWAY = "direct", "gateway"
TARGETS = (DIRECT, GATEWAY)
MODEL = "minilm"
#: A tenant ``sluice up`` registers (guard reads the registry once, at start).
TENANT = "acme"
OK = "ok"
RESULTS = PROJECT_ROOT / "bench" / "results" / "gateway_latency.txt"
#: How long the pipeline may take to answer its first call (guard loads spaCy first).
READY_TIMEOUT_S = 600.0
#: Requests/s is a rate over the window; below this many answers it is noise.
FEW_CALLS = 20

#: What one call returns: ``OK``, or why it failed ("http 429", "timeout", ...).
Call = Callable[[str], Awaitable[str]]


# -- pure parts -------------------------------------------------------------------------------
def ticket_texts(lines: Sequence[str]) -> list[str]:
    """The ``body`` of each support ticket (JSON lines); the sample's broken lines skipped."""
    texts = []
    for line in lines:
        try:
            body = json.loads(line).get("body")
        except (ValueError, AttributeError):
            continue
        if isinstance(body, str) and body.strip():
            texts.append(body)
    return texts


def parse_concurrency(text: str) -> list[int]:
    """``"1,10,100"`` → ``[1, 10, 100]``: positive, distinct, in the order given."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--concurrency {text!r}: give client counts like 1,10,100") from None
    if not levels or min(levels) < 1 or len(set(levels)) != len(levels):
        raise ValueError(f"--concurrency {text!r}: give distinct positive counts like 1,10,100")
    return levels


@dataclass
class LevelResult:
    """One target at one concurrency: the calls answered in the window."""

    target: str
    concurrency: int
    window_s: float
    latencies_ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        """Answered calls per second of the window."""
        return len(self.latencies_ms) / self.window_s

    def p(self, q: float) -> float | None:
        """The ``q``-th percentile of the latencies (ms), None when nothing was answered."""
        return percentile(self.latencies_ms, q) if self.latencies_ms else None

    def summary(self) -> dict[str, Any]:
        """The numbers of the JSON file."""
        return {
            "target": self.target,
            "concurrency": self.concurrency,
            "window_s": self.window_s,
            "answered": len(self.latencies_ms),
            "requests_per_s": self.rate,
            "p50_ms": self.p(50),
            "p99_ms": self.p(99),
            "failures": dict(sorted(self.failures.items())),
        }


async def closed_loop(
    call: Call,
    texts: Sequence[str],
    *,
    target: str,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> LevelResult:
    """``concurrency`` clients, each calling again as soon as it is answered.

    A call counts when it is answered inside the window (after ``warmup_s``, for
    ``duration_s``); no call starts after the window. Client ``i`` sends texts ``i``,
    ``i + concurrency``, ... so that the clients send different texts.
    """
    if not texts:
        raise ValueError("no texts to send")
    result = LevelResult(target, concurrency, duration_s)
    start = clock()
    window_start, window_end = start + warmup_s, start + warmup_s + duration_s

    async def client(first: int) -> None:
        index = first
        while clock() < window_end:
            sent = clock()
            outcome = await call(texts[index % len(texts)])
            answered = clock()
            index += concurrency
            if not window_start < answered <= window_end:
                continue
            if outcome == OK:
                result.latencies_ms.append((answered - sent) * 1000)
            else:
                result.failures[outcome] += 1

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _added(gateway: float | None, direct: float | None) -> str:
    return "-" if gateway is None or direct is None else f"{gateway - direct:+,.1f}"


def report_lines(results: Sequence[LevelResult]) -> list[str]:
    """The table: per level, each target's p50, p99 (ms) and requests/s, and what is added.

    Then the highest requests/s each target sustained, at which level, and the failed
    calls by reason. Levels are those measured for both targets, in the order measured.
    """
    by_key = {(r.target, r.concurrency): r for r in results}
    levels = [
        r.concurrency for r in results if r.target == DIRECT and (GATEWAY, r.concurrency) in by_key
    ]
    header = (
        f"{'clients':>7} | {'direct p50':>10} {'p99':>9} {'req/s':>9} | "
        f"{'gateway p50':>11} {'p99':>9} {'req/s':>9} | {'added p50':>9} {'p99':>9}"
    )
    lines = [header, "-" * len(header)]
    for level in levels:
        direct, gateway = by_key[(DIRECT, level)], by_key[(GATEWAY, level)]
        lines.append(
            f"{level:>7} | {_ms(direct.p(50)):>10} {_ms(direct.p(99)):>9} {direct.rate:>9,.1f} | "
            f"{_ms(gateway.p(50)):>11} {_ms(gateway.p(99)):>9} {gateway.rate:>9,.1f} | "
            f"{_added(gateway.p(50), direct.p(50)):>9} {_added(gateway.p(99), direct.p(99)):>9}"
        )
    lines.append("")
    for target in TARGETS:
        measured = [by_key[(target, level)] for level in levels]
        if not measured:
            continue
        best = max(measured, key=lambda r: r.rate)
        few = " (few answers: noise)" if len(best.latencies_ms) < FEW_CALLS else ""
        lines.append(
            f"highest sustained {target}: {best.rate:,.1f} requests/s "
            f"at {best.concurrency} clients{few}"
        )
    for result in results:
        if result.failures:
            reasons = ", ".join(f"{k} {n}" for k, n in sorted(result.failures.items()))
            lines.append(f"failed {result.target} at {result.concurrency} clients: {reasons}")
    return lines


def unlimited_rate_limits(text: str, tenant: str) -> str:
    """``rate_limits.yaml`` with no limit for ``tenant`` nor for API keys without their own."""
    limits = yaml.safe_load(text) or {}
    if not isinstance(limits, dict):
        raise ValueError("rate_limits.yaml is not a mapping")
    unlimited = {"requests_per_minute": None, "tokens_per_minute": None}
    tenants = limits.get("tenants") or {}
    limits["tenants"] = {**tenants, tenant: dict(unlimited)}
    limits["key_default"] = dict(unlimited)
    return yaml.safe_dump(limits, sort_keys=False)


# -- the two targets --------------------------------------------------------------------------
def gateway_call(client: httpx.AsyncClient, dims: int) -> Call:
    """One ``/v1/embeddings`` call per text; OK when one vector of ``dims`` comes back."""

    async def call(text: str) -> str:
        try:
            response = await client.post("/v1/embeddings", json={"model": MODEL, "input": text})
        except httpx.TimeoutException:
            return "timeout"
        except httpx.TransportError as exc:
            return type(exc).__name__
        if response.status_code != 200:
            return f"http {response.status_code}"
        try:
            [item] = response.json()["data"]
            vector = item["embedding"]
        except (ValueError, KeyError, TypeError):
            return "bad body"
        return OK if isinstance(vector, list) and len(vector) == dims else "bad body"

    return call


def triton_call(client: Any, catalog_model: Any, dims: int, timeout_s: float) -> Call:
    """The same text to Triton, as infer sends one row: a [1, 1] BYTES tensor."""
    import numpy as np  # noqa: PLC0415 (with tritonclient: only when measuring)
    from tritonclient.grpc import aio as grpc_aio  # noqa: PLC0415
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    text_input = catalog_model.inputs["text"]
    embedding = catalog_model.outputs["embedding"].name
    wanted = [grpc_aio.InferRequestedOutput(embedding)]

    async def call(text: str) -> str:
        tensor = grpc_aio.InferInput(text_input.name, [1, 1], text_input.dtype)
        tensor.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
        try:
            result = await client.infer(
                catalog_model.triton_model, [tensor], outputs=wanted, client_timeout=timeout_s
            )
        except InferenceServerException as exc:
            return f"triton {exc.status() or 'error'}"
        vector = result.as_numpy(embedding)
        return OK if vector is not None and vector.shape[-1] == dims else "bad tensor"

    return call


# -- the pipeline -----------------------------------------------------------------------------
@contextmanager
def running(name: str, env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``sluice run <name>``; SIGTERM (then SIGKILL) at the end."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams", "run", name],
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def gateway_secrets(stack: Settings, folder: Path) -> str:
    """A secrets folder for the run's gateway: a new API key, and the tenant's signing key.

    Nothing is added to the local stack's own key registry. Returns the API key.
    """
    folder.mkdir(mode=0o700, parents=True)
    tenants = folder / "tenants"
    tenants.mkdir(mode=0o700)
    key_file = tenants / f"{TENANT}.key"
    key_file.write_text(tenant_signing_key(stack, TENANT), encoding="ascii")
    key_file.chmod(0o600)
    created = KeyStore(folder).create(
        TENANT, {TENANT}, user="bench", priority="normal", name="gateway latency bench"
    )
    return created.key


def lift_rate_limits(box: Sandbox) -> None:
    """No rate limit for the bench tenant in the sandbox's copy of rate_limits.yaml."""
    path = box.schemas / "rate_limits.yaml"
    if path.is_file():
        path.write_text(unlimited_rate_limits(path.read_text(), TENANT))


async def wait_for_pipeline(call: Call, processes: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """Until one gateway call is answered: start-up (spaCy, Kafka joins) is not measured."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    outcome = "not tried"
    while time.monotonic() < deadline:
        dead = [name for name, process in processes.items() if process.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited; see the logs printed above")
        outcome = await call("Is the pipeline up?")
        if outcome == OK:
            return
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the gateway answered no call in {READY_TIMEOUT_S:.0f} s (last: {outcome})")


@dataclass
class Breakdown:
    """Where the gateway's calls of one level spent their time (bench/pipeline_hops.py)."""

    concurrency: int
    hops: dict[str, list[float]]
    stages: list[str]
    client_p50_ms: float | None

    def lines(self) -> list[str]:
        """The hop table, then the stage table, under a title naming the level."""
        return [
            f"where the time goes at {self.concurrency} clients (gateway target):",
            *pipeline_hops.hop_lines(self.hops, self.client_p50_ms),
            *self.stages,
        ]

    def summary(self) -> dict[str, Any]:
        """The numbers of the JSON file: p50 and p99 per hop."""
        return {
            "concurrency": self.concurrency,
            "hops_ms": {
                name: {"p50": percentile(v, 50), "p99": percentile(v, 99), "n": len(v)}
                for name, v in self.hops.items()
                if v
            },
        }


@dataclass
class Pipeline:
    """What the breakdown reads: the sandbox's topics and the runners' metrics endpoints."""

    box: Sandbox
    metrics_urls: list[str]


async def measure(
    direct: Call,
    gateway: Call,
    texts: Sequence[str],
    args: argparse.Namespace,
    pipeline: Pipeline | None = None,
) -> tuple[list[LevelResult], list[Breakdown]]:
    results, breakdowns = [], []
    for level in args.concurrency:
        for target, call in ((DIRECT, direct), (GATEWAY, gateway)):
            print(f"[{target}, {level} clients] {args.warmup:g} s warm-up, {args.duration:g} s")
            traced = pipeline if target == GATEWAY else None
            if traced is not None:
                before = await asyncio.to_thread(pipeline_hops.scrape, traced.metrics_urls)
                since_ms = int(time.time() * 1000 + args.warmup * 1000)
            result = await closed_loop(
                call,
                texts,
                target=target,
                concurrency=level,
                warmup_s=args.warmup,
                duration_s=args.duration,
            )
            print(
                f"[{target}, {level} clients] p50 {_ms(result.p(50))} ms, "
                f"p99 {_ms(result.p(99))} ms, {result.rate:,.1f} requests/s, "
                f"{sum(result.failures.values())} failed; {load()}"
            )
            results.append(result)
            if traced is not None:
                breakdown = await asyncio.to_thread(
                    _breakdown, traced, before, since_ms, level, result.p(50)
                )
                print("\n".join(breakdown.lines()))
                breakdowns.append(breakdown)
    return results, breakdowns


def _breakdown(
    pipeline: Pipeline,
    before: pipeline_hops.StageTotals,
    since_ms: int,
    level: int,
    client_p50_ms: float | None,
) -> Breakdown:
    after = pipeline_hops.scrape(pipeline.metrics_urls)
    until_ms = int(time.time() * 1000)
    stamps = pipeline_hops.read_create_times(pipeline.box, since_ms, until_ms)
    return Breakdown(
        level,
        pipeline_hops.hop_latencies(stamps),
        pipeline_hops.stage_lines(before, after),
        client_p50_ms,
    )


async def run_targets(
    stack: Settings,
    *,
    base_url: str,
    api_key: str,
    texts: Sequence[str],
    processes: Mapping[str, subprocess.Popen[bytes]],
    args: argparse.Namespace,
    pipeline: Pipeline | None = None,
) -> tuple[list[LevelResult], list[Breakdown]]:
    from tritonclient.grpc import aio as grpc_aio  # noqa: PLC0415 (only when measuring)

    model = load_models(stack.triton.models_file).models[MODEL]
    if model.embedding_dims is None:
        raise RuntimeError(f"{MODEL} has no embedding_dims in {stack.triton.models_file}")
    most = max(args.concurrency)
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    triton = grpc_aio.InferenceServerClient(stack.triton.url)
    try:
        async with httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=args.timeout,
            limits=limits,
        ) as http:
            gateway = gateway_call(http, model.embedding_dims)
            direct = triton_call(triton, model, model.embedding_dims, args.timeout)
            print("waiting for the pipeline to answer its first call")
            await wait_for_pipeline(gateway, processes)
            return await measure(direct, gateway, texts, args, pipeline)
    finally:
        await triton.close()


def write_results(
    lines: Sequence[str],
    results: Sequence[LevelResult],
    out: Path,
    breakdowns: Sequence[Breakdown] = (),
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    # A gateway level's entry also holds its hop breakdown, when one was measured.
    hops = {b.concurrency: b.summary()["hops_ms"] for b in breakdowns}
    numbers = [
        {**r.summary(), "hops_ms": hops[r.concurrency]}
        if r.target == GATEWAY and r.concurrency in hops
        else r.summary()
        for r in results
    ]
    out.with_suffix(".json").write_text(json.dumps(numbers, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=parse_concurrency, default=[1, 10, 100])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds counted per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds not counted per run")
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait for one call")
    parser.add_argument("--guard-embedder", choices=("triton", "none"), default="triton")
    parser.add_argument("--logs", type=Path, default=None, help="keep the processes' logs here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    stack = Settings()
    if stack.kafka.sasl_password is None:
        sys.exit("no operator credentials for the local broker: run `sluice up` first")
    if args.guard_embedder == "triton" and guard_embedder(stack, "auto") != "triton":
        sys.exit(f"Triton does not answer at {stack.triton.url}: run `sluice up` first")
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"start: {started}, {load()}, {os.cpu_count()} CPUs")
    ensure_tenants(stack, [TENANT])  # before guard starts: it reads the registry once
    sample = stack.project_root / "schemas/datasets/support_tickets/sample.jsonl"
    texts = ticket_texts(sample.read_text().splitlines())
    logs = args.logs or Path(tempfile.mkdtemp(prefix="gateway-latency-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"logs: {logs}")
    with tempfile.TemporaryDirectory(prefix="gateway-latency-") as tmp, ExitStack() as cleanup:
        workdir = Path(tmp)
        box = sandbox.create(stack, workdir)
        box.apply()
        lift_rate_limits(box)
        api_key = gateway_secrets(stack, workdir / "gateway-secrets")
        port = free_port()
        quiet = {**box.env, "SLUICE_METRICS__ENABLED": "false"}
        # guard and infer serve their runners' metrics: the stage breakdown reads them.
        metrics_ports = {"guard": free_port(), "infer": free_port()}
        scraped = {
            name: {**box.env, "SLUICE_METRICS__PORT": str(metrics_port)}
            for name, metrics_port in metrics_ports.items()
        }
        envs = {
            "guard": {
                **scraped["guard"],
                "SLUICE_GUARD__EMBEDDER": args.guard_embedder,
                "SLUICE_GUARD__HASH_SECRET": secrets.token_hex(32),
            },
            # Every call is a minilm embedding: the embeddings lane serves them all.
            # Levels resend the texts of the levels before: infer's response cache would
            # answer them without Triton, and the comparison is with Triton's answers.
            "infer": {
                **scraped["infer"],
                "SLUICE_INFER__LANE": "embeddings",
                "SLUICE_INFER__CACHE_MAX_ENTRIES": "0",
            },
            "gateway": {
                **quiet,
                "SLUICE_GATEWAY__HOST": "127.0.0.1",
                "SLUICE_GATEWAY__PORT": str(port),
                "SLUICE_GATEWAY__SECRETS_DIR": str(workdir / "gateway-secrets"),
                "SLUICE_GATEWAY__REQUEST_TIMEOUT_S": str(args.timeout),
            },
        }
        processes = {
            name: cleanup.enter_context(running(name, env, logs / f"{name}.log"))
            for name, env in envs.items()
        }
        print(f"guard (embedder {args.guard_embedder}), infer and the gateway on port {port}")
        pipeline = Pipeline(box, [f"http://127.0.0.1:{p}/metrics" for p in metrics_ports.values()])
        results, breakdowns = asyncio.run(
            run_targets(
                stack,
                base_url=f"http://127.0.0.1:{port}",
                api_key=api_key,
                texts=texts,
                processes=processes,
                args=args,
                pipeline=pipeline,
            )
        )
    settings_line = (
        f"{started}; {os.cpu_count()} CPUs; model {MODEL}; {args.duration:g} s counted after "
        f"{args.warmup:g} s warm-up per run; guard embedder {args.guard_embedder}"
    )
    lines = [settings_line, "", *report_lines(results)]
    for breakdown in breakdowns:
        lines += ["", *breakdown.lines()]
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {load()}")
    print()
    print("\n".join(lines))
    write_results(lines, results, args.out, breakdowns)
    print(f"written to {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
