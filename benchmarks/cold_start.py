"""Seconds from a shell command to a printed label: `distilsent classify` vs the transformers pipeline.

    python benchmarks/cold_start.py --model default --runs 5

Each run starts a fresh Python process that classifies one sentence and exits: what a user waits
for when typing the command. The contenders (the torch backend, the onnx one where the ``onnx``
extra is installed, the pipeline) take turns, so that a slow spell of the machine hits all of them,
after one untimed run each (disk cache; the onnx row's ONNX export, cached for the model after
that). The table has each one's median and fastest wall time and the pipeline's median over its
own (the ratio), with the CPU line first. All run offline on the CPU, on the same model directory;
the pipeline in fp32 (as in ``benchmarks/throughput.py``), distilsent in its ``auto`` dtype.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import cpu_line

TEXT = "Hello, my dog is cute"


def commands(model_dir: Path) -> dict[str, list[str]]:
    """The shell commands timed, by row name."""
    pipeline = (
        "import torch\n"
        "from transformers import pipeline\n"
        f"clf = pipeline('text-classification', model={str(model_dir)!r}, device='cpu',"
        " dtype=torch.float32)\n"
        f"print(clf({TEXT!r}))\n"
    )
    classify = ["distilsent", "classify", "-m", str(model_dir), "--device", "cpu", TEXT]
    rows = {"distilsent classify": classify}
    if importlib.util.find_spec("onnxruntime") is not None:  # the onnx extra
        rows["distilsent classify --backend onnx"] = [*classify[:-1], "--backend", "onnx", TEXT]
    rows["transformers pipeline"] = [sys.executable, "-c", pipeline]
    return rows


def wall_seconds(command: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="'default', or a model directory")
    parser.add_argument("--runs", type=int, default=5, help="cold starts of each command")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be 1 or more")

    from distilsent.core.models import resolve_model

    model_dir = resolve_model(args.model)
    print(cpu_line())
    print(f"model: {model_dir}; {args.runs} cold starts each, taking turns")
    rows = commands(model_dir)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for command in rows.values():  # fills the disk cache; the onnx row's first run also exports
        wall_seconds(command)
    for _ in range(args.runs):
        for name, command in rows.items():
            times[name].append(wall_seconds(command))
    base = statistics.median(times["transformers pipeline"])
    print(f"{'command':<36}{'median s':>10}{'fastest s':>11}{'pipeline / this':>17}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<36}{median:>10.2f}{min(seconds):>11.2f}{base / median:>16.2f}x")


if __name__ == "__main__":
    main()
