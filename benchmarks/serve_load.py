"""Load test of ``distilsent serve``: N concurrent clients for a bounded time, against the in-process engine.

    python benchmarks/serve_load.py --model default --clients 64 --seconds 60
    python benchmarks/serve_load.py --model default --clients 1024 --texts-per-request 32 --seconds 30

The in-process baseline scores the same SST-2 sentences with ``Classifier.predict`` (the median of
three passes) before the server starts, so the two never compete for the CPU. Then the server runs
as a subprocess on 127.0.0.1 and N clients, each on its own keep-alive connection, send one sentence
per request (or ``--texts-per-request`` sizes, cycled: ``1,32``) for the given time. A client answered
429 or 503 waits the ``Retry-After`` it was given before its next request, as a well-behaved client
does. Printed: requests/s, texts/s, answers by status code, p50/p95/p99 latency of the answered (200)
requests, the Retry-After given, dropped connections, the server's RSS over the run, and its
throughput as a fraction of the in-process engine's.

The clients speak HTTP/1.1 over asyncio streams rather than through httpx: on a 2-core machine the
load generator shares the CPU with the server, and a heavier client would be measured as server cost.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import cpu_line

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


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, float, float | None]:
    """(status, body, Retry-After seconds or 0, the server's own x-total-time in ms or None)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, retry, total = 0, 0.0, None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "retry-after":
            retry = float(value)
        elif name.lower() == "x-total-time":
            total = float(value)
    return status, await reader.readexactly(length), retry, total


def encode_request(method: str, path: str, body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


async def request(host: str, port: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(encode_request(method, path, body))
    await writer.drain()
    status, body, _, _ = await read_response(reader)
    writer.close()
    return status, body


@dataclass
class Tally:
    """What every client saw."""

    latencies: list[float] = field(default_factory=list)  # of 200 answers
    sent_at: list[float] = field(default_factory=list)  # perf_counter() when each of those was sent
    server_ms: list[float] = field(default_factory=list)  # the server's x-total-time of each of those
    codes: collections.Counter[int] = field(default_factory=collections.Counter)
    retry_after: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    texts: int = 0
    dropped: int = 0


async def client(
    port: int, texts: list[str], sizes: list[int], start: int, deadline: float, tally: Tally
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    i = start
    while time.perf_counter() < deadline:
        size = sizes[sent % len(sizes)]
        chosen = [texts[(i + k) % len(texts)] for k in range(size)]
        body = json.dumps({"inputs": chosen[0] if size == 1 else chosen}).encode()
        began = time.perf_counter()
        writer.write(encode_request("POST", "/v1/classify", body))
        sent += 1
        try:
            status, payload, retry, server_ms = await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            tally.dropped += 1
            tally.errors.append(f"connection: {e}")
            break
        tally.codes[status] += 1
        if status == 200:
            tally.latencies.append(time.perf_counter() - began)
            tally.sent_at.append(began)
            tally.server_ms.append(float("nan") if server_ms is None else server_ms)
            tally.texts += size
        else:
            if status not in (429, 503):
                tally.errors.append(f"{status}: {payload[:200]!r}")
            tally.retry_after.append(retry)
            await asyncio.sleep(min(retry, max(0.0, deadline - time.perf_counter())))
            if retry >= 4:  # the server closes keep-alive connections idle for 5 s: reconnect
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i += size
    writer.close()
    return sent


async def drive(
    port: int,
    texts: list[str],
    sizes: list[int],
    clients: int,
    seconds: float,
    pid: int | None = None,
    rss: list[float] | None = None,
) -> tuple[Tally, int]:
    tally = Tally()
    deadline = time.perf_counter() + seconds
    step = max(1, len(texts) // clients)

    async def sample() -> None:
        while pid is not None and rss is not None and time.perf_counter() < deadline:
            rss.append(rss_mb(pid))
            await asyncio.sleep(seconds / 10)

    *sent, _ = await asyncio.gather(
        *(client(port, texts, sizes, k * step, deadline, tally) for k in range(clients)), sample()
    )
    return tally, sum(sent)


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
    parser.add_argument(
        "--texts-per-request", default="1", help="texts in each request, cycled: e.g. 1 or 32 or 1,8,32"
    )
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for distilsent serve")
    args = parser.parse_args()
    print(cpu_line())

    texts = sentences(args.texts)
    sizes = [int(x) for x in args.texts_per_request.split(",")]
    baseline = in_process(args.model, args.backend, texts)
    port = free_port()
    proc = start_server(args.model, args.backend, port, args.server_arg)
    try:
        # A warm-up, so that the allocator's first growth to the working set is not counted as a leak.
        asyncio.run(drive(port, texts, sizes, args.clients, args.warmup))
        rss: list[float] = []
        rss_start = rss_mb(proc.pid)
        began = time.perf_counter()
        tally, sent = asyncio.run(drive(port, texts, sizes, args.clients, args.seconds, proc.pid, rss))
        elapsed = time.perf_counter() - began
        rss_end = rss_mb(proc.pid)
        metrics = asyncio.run(request("127.0.0.1", port, "GET", "/metrics", b""))[1].decode()
    finally:
        proc.terminate()
        proc.wait(30)
    answered = sum(tally.codes.values())
    ms = np.array(tally.latencies or [0.0]) * 1000
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    rate = answered / elapsed
    # Where in the run the slow answers were: a start-up burst reads differently from a steady state.
    third = np.minimum((np.array(tally.sent_at or [began]) - began) * 3 // args.seconds, 2).astype(int)
    by_third = [ms[third == k] for k in range(3)]
    p99_thirds = " / ".join(f"{np.percentile(x, 99):.1f}" if len(x) else "-" for x in by_third)
    # The server's own time (x-total-time: from the parsed request to the answer) beside the client's:
    # what is left is HTTP, the event loop's queue and the load generator itself.
    own = np.array(tally.server_ms or [float("nan")])
    own_thirds = " / ".join(
        f"{np.nanpercentile(own[third == k], 99):.1f}" if np.isfinite(own[third == k]).any() else "-"
        for k in range(3)
    )
    text_rate = tally.texts / elapsed
    errors = tally.errors
    retry = tally.retry_after
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
        (
            "clients, seconds, texts per request",
            f"{args.clients}, {args.seconds:g}, {args.texts_per_request}",
        ),
        (
            "requests answered",
            f"{answered} ({sent - answered} unanswered, {tally.dropped} dropped connections)",
        ),
        ("answers by status", ", ".join(f"{code}: {n}" for code, n in sorted(tally.codes.items()))),
        ("other errors", f"{len(errors)}" + (f" e.g. {errors[0]}" if errors else "")),
        ("requests/s (all answers)", f"{rate:.1f}"),
        ("texts/s classified (200s)", f"{text_rate:.1f}"),
        (
            "200 latency p50 / p95 / p99 ms",
            f"{p50:.1f} / {p95:.1f} / {p99:.1f}  (p99/p50 {p99 / max(p50, 1e-9):.1f}x)",
        ),
        ("200 mean latency ms", f"{statistics.fmean(ms):.1f}"),
        ("200 p99 ms by third of the run (sent)", p99_thirds),
        ("the same, the server's x-total-time", own_thirds),
        (
            "Retry-After given (429/503) s",
            f"mean {statistics.fmean(retry):.1f}, max {max(retry):.0f}" if retry else "none",
        ),
        ("texts per batcher cycle (mean)", f"{per_call:.1f} over {calls:.0f} cycles, warm-up included"),
        ("share of wall time in the model", f"{100 * model_share:.0f} %"),
        ("in-process engine texts/s", f"{baseline:.1f}"),
        ("server / in-process", f"{text_rate / baseline:.2f}"),
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
