"""minilm throughput: through Triton at batch 1 and 64, against in-process compute.

Run with the Triton venv's python (it has torch for the in-process baseline):

    .sluice/venvs/triton/bin/python bench/triton_models.py [--clients 8] [--url HOST:PORT]

Without --url it starts infra/triton/server.py (minilm only) on ports
18100-18102 and stops it at the end. Every number is measured in this run, on
this machine, with the same ~20-word sentences:

* in-process: SentenceTransformer.encode on the package's model, a batch of 1
  or 64 sentences per call, one caller (the baseline); and the server's own
  MiniLM.embed called in-process (same compute as Triton's, minus Triton);
* Triton: N client threads, each sending requests of 1 or 64 sentences over
  gRPC and waiting for the answer before the next (closed loop); Triton's
  dynamic batcher may merge concurrent requests, which its statistics show.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "infra" / "triton"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = (  # noqa: SIM905 (a sentence is easier to read than a list)
    "invoice charged twice refund account login password reset order shipping delayed "
    "customer support ticket priority billing plan upgrade cancel subscription error page "
    "payment card declined export report dashboard slow timeout crash update mobile app "
    "email notification settings team access permission admin data missing sync"
).split()


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(count)]


def start_server(grpc_port: int, torch_threads: int) -> subprocess.Popen[bytes]:
    import sysconfig  # noqa: PLC0415

    env = {**os.environ, "LD_LIBRARY_PATH": sysconfig.get_config_var("LIBDIR") or ""}
    log = (ROOT / ".sluice").resolve() / "bench-triton.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "infra/triton/server.py"),
            "--models",
            "minilm",
            "--http-port",
            str(grpc_port - 1),
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(grpc_port + 1),
            "--device",
            "cpu",
            "--torch-threads",
            str(torch_threads),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def wait_ready(url: str, timeout: float = 300) -> None:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with grpcclient.InferenceServerClient(url) as client:
                if client.is_model_ready("minilm"):
                    return
        except Exception:  # noqa: S110 (not up yet)
            pass
        time.sleep(1)
    raise SystemExit(
        f"Triton at {url} not ready after {timeout:.0f}s (see .sluice/bench-triton.log)"
    )


def in_process(texts: list[str], batch: int, calls: int) -> float:
    """Sentences per second of SentenceTransformer.encode, ``batch`` sentences per call."""
    from minilm import model_dir  # noqa: PLC0415
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    model = SentenceTransformer(str(model_dir()), device="cpu")
    chunks = [texts[i * batch : (i + 1) * batch] for i in range(calls)]
    model.encode(chunks[0], batch_size=batch, show_progress_bar=False)  # warm-up
    started = time.perf_counter()
    for chunk in chunks:
        model.encode(chunk, batch_size=batch, show_progress_bar=False)
    return batch * calls / (time.perf_counter() - started)


def in_process_server_code(texts: list[str], batch: int, calls: int) -> float:
    """Sentences per second of the server's own MiniLM.embed, called in this process."""
    import torch  # noqa: PLC0415
    from minilm import MiniLM  # noqa: PLC0415

    model = MiniLM(torch.device("cpu"))
    chunks = [texts[i * batch : (i + 1) * batch] for i in range(calls)]
    model.embed(chunks[0])  # warm-up
    started = time.perf_counter()
    for chunk in chunks:
        model.embed(chunk)
    return batch * calls / (time.perf_counter() - started)


def statistics(url: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics("minilm", as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def through_triton(
    url: str, texts: list[str], batch: int, clients: int, requests_per_client: int
) -> tuple[float, float, int]:
    """(requests/s, sentences/s, Triton executions) for ``clients`` closed-loop callers."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    def work(index: int, barrier: threading.Barrier) -> None:
        with grpcclient.InferenceServerClient(url) as client:
            starts = [
                (index * requests_per_client + r) * batch % (len(texts) - batch)
                for r in range(requests_per_client)
            ]
            rows = [texts[start : start + batch] for start in starts]
            barrier.wait()
            for row in rows:
                tensor = grpcclient.InferInput("text", [batch, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[t.encode()] for t in row], dtype=np.object_))
                client.infer("minilm", [tensor])

    with grpcclient.InferenceServerClient(url) as client:
        warm = grpcclient.InferInput("text", [1, 1], "BYTES")
        warm.set_data_from_numpy(np.array([[b"warm up"]], dtype=np.object_))
        client.infer("minilm", [warm])
    _, executions_before = statistics(url)
    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=work, args=(i, barrier)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    _, executions_after = statistics(url)
    total = clients * requests_per_client
    return total / elapsed, total * batch / elapsed, executions_after - executions_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="", help="a running Triton's gRPC host:port")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--grpc-port", type=int, default=18101)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch CPU threads, in-process and in the server (0: per core)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    args = parser.parse_args()
    scale = 4 if args.quick else 1
    texts = sentences(4096)
    server = None
    url = args.url or f"127.0.0.1:{args.grpc_port}"
    if not args.url:
        server = start_server(args.grpc_port, args.torch_threads)
    if args.torch_threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.torch_threads)
    try:
        wait_ready(url)
        results: dict[str, tuple[float, float | None, int | None]] = {
            "in-process b1": (in_process(texts, 1, 256 // scale), None, None),
            "in-process b64": (in_process(texts, 64, 24 // scale), None, None),
            "server code in-process b1": (
                in_process_server_code(texts, 1, 256 // scale),
                None,
                None,
            ),
            "server code in-process b64": (
                in_process_server_code(texts, 64, 24 // scale),
                None,
                None,
            ),
        }
        rps, sps, ex = through_triton(url, texts, 1, 1, 128 // scale)
        results["triton b1, 1 client"] = (sps, rps, ex)
        rps, sps, ex = through_triton(url, texts, 1, args.clients, 256 // scale)
        results[f"triton b1, {args.clients} clients"] = (sps, rps, ex)
        rps, sps, ex = through_triton(url, texts, 64, args.clients, 4 // scale or 1)
        results[f"triton b64, {args.clients} clients"] = (sps, rps, ex)
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
    load = os.getloadavg()
    import torch  # noqa: PLC0415

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f}; "
        f"CPU fp32, torch threads {torch.get_num_threads()}; ~20-word sentences"
    )
    print(f"{'setup':<30}{'sentences/s':>14}{'requests/s':>14}{'executions':>12}")
    for name, (sentences_per_s, requests_per_s, executions) in results.items():
        rps_text = f"{requests_per_s:,.1f}" if requests_per_s is not None else "-"
        print(f"{name:<30}{sentences_per_s:>14,.1f}{rps_text:>14}{executions or '-':>12}")
    b1 = results[f"triton b1, {args.clients} clients"][0]
    b64 = results[f"triton b64, {args.clients} clients"][0]
    print("ratios (sentences/s):")
    print(f"  triton b64 / triton b1 ({args.clients} clients): {b64 / b1:.2f}x")
    print(
        f"  in-process b64 / in-process b1:       "
        f"{results['in-process b64'][0] / results['in-process b1'][0]:.2f}x"
    )
    print(f"  triton b1 / in-process b1:            {b1 / results['in-process b1'][0]:.2f}x")
    print(f"  triton b64 / in-process b64:          {b64 / results['in-process b64'][0]:.2f}x")
    own_b1, own_b64 = (
        results["server code in-process b1"][0],
        results["server code in-process b64"][0],
    )
    print(f"  triton b1 / server code in-process b1:   {b1 / own_b1:.2f}x")
    print(f"  triton b64 / server code in-process b64: {b64 / own_b64:.2f}x")
    print(json.dumps({k: v[0] for k, v in results.items()}))


if __name__ == "__main__":
    main()
