"""Rows/s scoring a JSONL file: ``distilsent batch`` (local and Ray) against a transformers pipeline loop.

    python benchmarks/batch_throughput.py --model default --rows 100000

The input is SST-2 train+dev sentences (68k distinct) cycled to ``--rows`` rows, written as
``{"id", "text"}`` JSONL. Each engine scores the same file in this one run, end to end (start-up,
reading, scoring, writing):

- ``distilsent batch`` with the local engine (one process, every core);
- ``distilsent batch --engine ray`` on a local Ray started by the command (one actor);
- a plain loop over ``transformers.pipeline("text-classification")`` with ``batch_size=32`` reading the
  same JSONL and writing a JSONL result — on the first ``--pipeline-rows`` rows only, since at its
  speed the whole file would take most of an hour on 2 cores; its rows/s is what is compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import cpu_line

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def make_input(path: Path, rows: int) -> None:
    from distilsent.formats import read_labelled

    texts = read_labelled(SST2 / "train.tsv").texts + read_labelled(SST2 / "dev.tsv").texts
    with path.open("w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")


def run_cli(args: list[str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "distilsent", "batch", *args], capture_output=True, text=True
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"distilsent batch failed: {done.stderr}")
    print("   ", done.stdout.strip(), file=sys.stderr)
    return seconds


def pipeline_loop(model_dir: Path, src: Path, dst: Path, rows: int) -> float:
    began = time.perf_counter()
    import torch
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(model_dir), dtype=torch.float32, device="cpu")
    records = []
    with src.open() as f:
        for line, _ in zip(f, range(rows)):
            records.append(json.loads(line))
    results = clf([r["text"] for r in records], batch_size=32, truncation=True)
    with dst.open("w") as out:
        for r, res in zip(records, results):
            out.write(json.dumps({"id": r["id"], "label": res["label"], "score": res["score"]}) + "\n")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pipeline-rows", type=int, default=10_000)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    print(cpu_line())

    from distilsent.core.models import resolve_model

    model_dir = resolve_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        make_input(src, args.rows)
        results = []
        print("transformers pipeline loop ...", file=sys.stderr)
        seconds = pipeline_loop(model_dir, src, Path(tmp) / "pipe.jsonl", args.pipeline_rows)
        results.append(("transformers pipeline loop, batch 32", args.pipeline_rows, seconds))
        print("distilsent batch (local) ...", file=sys.stderr)
        seconds = run_cli([str(src), str(Path(tmp) / "local.jsonl"), "--model", args.model, "--no-progress"])
        results.append(("distilsent batch, local engine", args.rows, seconds))
        if not args.skip_ray:
            print("distilsent batch --engine ray ...", file=sys.stderr)
            out = Path(tmp) / "ray.parquet"
            seconds = run_cli([str(src), str(out), "--model", args.model, "--engine", "ray", "--no-progress"])
            results.append(("distilsent batch, Ray engine (local, 1 actor)", args.rows, seconds))
    base = results[0][1] / results[0][2]
    print(f"\nmodel {args.model}; {args.rows:,} rows of SST-2 sentences", end="")
    print(f" (pipeline: the first {args.pipeline_rows:,})\n")
    print("| engine | rows | seconds | rows/s | vs pipeline |\n|---|---|---|---|---|")
    for name, rows, seconds in results:
        rate = rows / seconds
        print(f"| {name} | {rows:,} | {seconds:.1f} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
