"""Load test of ``distilsent serve``: N concurrent clients for a bounded time, against the in-process engine.

    python benchmarks/serve_load.py --model default --clients 64 --seconds 60

The in-process baseline scores the same SST-2 sentences with ``Classifier.predict`` (the median of
three passes) before the server starts, so the two never compete for the CPU. Then the server runs
as a subprocess on 127.0.0.1 and N clients, each on its own keep-alive connection, send one sentence
per request for the given time. Printed: requests/s, texts/s, p50/p95/p99 latency, errors, dropped
requests, the server's RSS over the run, and its throughput as a fraction of the in-process engine's.

The clients speak HTTP/1.1 over asyncio streams rather than through httpx: on a 2-core machine the
load generator shares the CPU with the server, and a heavier client would be measured as server cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SST2_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "dev.tsv"


def sentences(limit: int) -> list[str]:
    from distilsent.formats import read_labelled

    texts = read_labelled(SST2_DEV).texts
    return (texts * (limit // len(texts) + 1))[:limit]


def in_process(model: str, backend: str, texts: list[str]) -> float:
    import distilsent

    clf = distilsent.load(model, backend=backend, batch_size=32)
    clf.predict(texts[:64])
    # Distinct texts only: predict would run a repeated sentence once, and the server gets no such help.
    unique = list(dict.fromkeys(texts))
    rates = []
    for _ in range(3):  # the median of three: this shared 2-core machine is noisy
        began = time.perf_counter()
        clf.predict(unique)
        rates.append(len(unique) / (time.perf_counter() - began))
    return statistics.median(rates)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, backend: str, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "distilsent", "serve", "--model", model, "--backend", backend]
    cmd += ["--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            status, _ = asyncio.run(request("127.0.0.1", port, "GET", "/ready", b""))
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server not ready after 120 s")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return status, await reader.readexactly(length)


def encode_request(method: str, path: str, body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


async def request(host: str, port: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(encode_request(method, path, body))
    await writer.drain()
    out = await read_response(reader)
    writer.close()
    return out


async def client(
    port: int, texts: list[str], start: int, deadline: float, latencies: list[float], errors: list[str]
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    i = start
    while time.perf_counter() < deadline:
        body = json.dumps({"inputs": texts[i % len(texts)]}).encode()
        began = time.perf_counter()
        writer.write(encode_request("POST", "/v1/classify", body))
        sent += 1
        try:
            status, payload = await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            errors.append(f"connection: {e}")
            break
        latencies.append(time.perf_counter() - began)
        if status != 200:
            errors.append(f"{status}: {payload[:200]!r}")
        i += 1
    writer.close()
    return sent


async def drive(
    port: int,
    texts: list[str],
    clients: int,
    seconds: float,
    pid: int | None = None,
    rss: list[float] | None = None,
) -> tuple[list[float], list[str], int]:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    step = len(texts) // clients

    async def sample() -> None:
        while pid is not None and rss is not None and time.perf_counter() < deadline:
            rss.append(rss_mb(pid))
            await asyncio.sleep(seconds / 10)

    *sent, _ = await asyncio.gather(
        *(client(port, texts, k * step, deadline, latencies, errors) for k in range(clients)), sample()
    )
    return latencies, errors, sum(sent)


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before measuring")
    parser.add_argument("--texts", type=int, default=2000, help="distinct SST-2 dev sentences cycled through")
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for distilsent serve")
    args = parser.parse_args()

    texts = sentences(args.texts)
    baseline = in_process(args.model, args.backend, texts)
    port = free_port()
    proc = start_server(args.model, args.backend, port, args.server_arg)
    try:
        # A warm-up, so that the allocator's first growth to the working set is not counted as a leak.
        asyncio.run(drive(port, texts, args.clients, args.warmup))
        rss: list[float] = []
        rss_start = rss_mb(proc.pid)
        began = time.perf_counter()
        latencies, errors, sent = asyncio.run(drive(port, texts, args.clients, args.seconds, proc.pid, rss))
        elapsed = time.perf_counter() - began
        rss_end = rss_mb(proc.pid)
        metrics = asyncio.run(request("127.0.0.1", port, "GET", "/metrics", b""))[1].decode()
    finally:
        proc.terminate()
        proc.wait(30)
    answered = len(latencies)
    ms = np.array(latencies) * 1000
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    rate = answered / elapsed
    found = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith(
            ("distilsent_batch_size_sum", "distilsent_batch_size_count", "distilsent_model_seconds_sum")
        )
    }
    model_share = found.get("distilsent_model_seconds_sum", 0) / (elapsed + args.warmup)
    calls = found.get("distilsent_batch_size_count", 0)
    per_call = found.get("distilsent_batch_size_sum", 0) / max(calls, 1)
    rows = [
        ("model / backend", f"{args.model} / {args.backend}"),
        ("clients, seconds", f"{args.clients}, {args.seconds:g}"),
        ("requests answered", f"{answered} ({sent - answered} dropped)"),
        ("errors", f"{len(errors)}" + (f" e.g. {errors[0]}" if errors else "")),
        ("requests/s = texts/s", f"{rate:.1f}"),
        ("latency p50 / p95 / p99 ms", f"{p50:.1f} / {p95:.1f} / {p99:.1f}  (p99/p50 {p99 / p50:.1f}x)"),
        ("mean latency ms", f"{statistics.fmean(ms):.1f}"),
        ("texts per batcher cycle (mean)", f"{per_call:.1f} over {calls:.0f} cycles, warm-up included"),
        ("share of wall time in the model", f"{100 * model_share:.0f} %"),
        ("in-process engine texts/s", f"{baseline:.1f}"),
        ("server / in-process", f"{rate / baseline:.2f}"),
        (
            "server RSS MB start -> end",
            f"{rss_start:.0f} -> {rss_end:.0f} ({100 * (rss_end / rss_start - 1):+.1f} %)",
        ),
        ("server RSS MB every tenth of the run", " ".join(f"{x:.0f}" for x in rss)),
        ("cpu cores", str(os.cpu_count())),
    ]
    width = max(len(k) for k, _ in rows)
    print("| measure | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


if __name__ == "__main__":
    main()
