"""End-to-end texts/s on a GPU, Python strings in, labels out, on a DistilBERT-base-shaped model.

    python benchmarks/gpu_throughput.py --texts 200000           # on a machine with a CUDA GPU
    python benchmarks/gpu_throughput.py --device cpu --texts 2000 --batch-size 64   # smoke test

Rows, all on the same model and texts in one run (ratios are against the first row):
  transformers pipeline      pipeline("text-classification") at --pipeline-batch, the model in bf16
  model alone (eager)        the torch model on pre-tokenized, length-sorted batches: the GPU's ceiling
  [model alone (compiled)]   the same through torch.compile, with --compile
  host alone                 distilsent logits / predict with an engine that returns zeros: the
                             host's ceiling (--host-only: these rows alone, no GPU needed)
  distilsent logits          Classifier.logits(texts): tokenization, batching, model, logits
  distilsent predict         Classifier.predict(texts): the same, into Prediction objects

"main µs/text" is CPU time of the calling thread per text: the part of the host work that cannot
spread over cores (tokenization runs on a worker thread and on every core).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import base_shaped_model, sst2_texts


def timed(run: Callable[[], object], n: int, sync: Callable[[], None]) -> tuple[float, float]:
    """(texts/s, calling-thread CPU µs per text) of one call of ``run`` over ``n`` texts."""
    sync()
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    sync()
    return n / (time.perf_counter() - wall), 1e6 * (time.thread_time() - cpu) / n


class NullEngine:
    """Returns zeros at once: what distilsent's host side alone can sustain."""

    backend = "none"
    device = "cpu"

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return np.zeros((len(input_ids), 2), dtype=np.float32)

    def num_parameters(self) -> int:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=200_000, help="distinct SST-2 dev sentences, repeated")
    parser.add_argument("--device", default="cuda", help="'cuda' (default) or 'cpu' for a smoke test")
    parser.add_argument("--batch-size", type=int, default=1024, help="distilsent's texts per model call")
    parser.add_argument("--pipeline-batch", type=int, default=64, help="the pipeline's batch size")
    parser.add_argument(
        "--pipeline-texts", type=int, default=20_000, help="texts for the (slow) pipeline row"
    )
    parser.add_argument("--compile", action="store_true", help="also time the model through torch.compile")
    parser.add_argument(
        "--host-only", action="store_true", help="only the host rows (no model): runs anywhere in seconds"
    )
    args = parser.parse_args()

    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import distilsent

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model_dir = base_shaped_model(Path(tempfile.mkdtemp()) / "distilbert-base-random")
    texts = sst2_texts(args.texts)
    clf = distilsent.load(model_dir, device=args.device, batch_size=args.batch_size)
    dtype = next(clf.engine.model.parameters()).dtype
    print(f"device: {clf.engine.device} ({torch.cuda.get_device_name() if cuda else 'cpu'}); dtype {dtype}")
    print(f"texts: {len(texts):,} distinct SST-2 dev sentences; batch size {args.batch_size}")
    rows: list[tuple[str, float, float]] = []

    if not args.host_only:
        pipe = pipeline("text-classification", model=str(model_dir), device=args.device, dtype=dtype)
        sample = texts[: args.pipeline_texts]
        pipe(sample[:256], batch_size=args.pipeline_batch, truncation=True, max_length=128)
        tps, cpu = timed(
            lambda: pipe(sample, batch_size=args.pipeline_batch, truncation=True, max_length=128),
            len(sample),
            sync,
        )
        rows.append((f"transformers pipeline, batch {args.pipeline_batch}", tps, cpu))

        # The GPU's side alone: every batch tokenized, padded and on the device before the clock starts.
        tokens = clf.tokenizer.encode_batch(texts)
        order = np.argsort(tokens.lengths, kind="stable")
        batches = [
            tuple(
                torch.from_numpy(a).to(clf.engine.device)
                for a in tokens.padded(order[i : i + args.batch_size], 0)
            )
            for i in range(0, len(order), args.batch_size)
        ]
        models = [("model alone (eager)", clf.engine.model)]
        if args.compile:
            models.append(("model alone (torch.compile)", torch.compile(clf.engine.model, dynamic=True)))
        for name, model in models:

            def forward(model=model, batches=batches) -> None:
                with torch.inference_mode():
                    for ids, mask in batches:
                        model(input_ids=ids, attention_mask=mask)

            forward()  # warm-up (and compilation)
            rows.append((name, *timed(forward, len(texts), sync)))
        del batches, models  # free the device for the end-to-end rows

    engine = clf.engine
    clf.engine = NullEngine()
    clf.logits(texts[:2048])
    rows.append(("host alone: logits (no model)", *timed(lambda: clf.logits(texts), len(texts), sync)))
    rows.append(("host alone: predict (no model)", *timed(lambda: clf.predict(texts), len(texts), sync)))
    clf.engine = engine
    if not args.host_only:
        clf.predict(texts[:4096])
        rows.append(("distilsent logits", *timed(lambda: clf.logits(texts), len(texts), sync)))
        rows.append(("distilsent predict", *timed(lambda: clf.predict(texts), len(texts), sync)))

    baseline = None if args.host_only else rows[0][1]
    print(f"{'':<34}{'texts/s':>12}{'vs pipeline':>13}{'main µs/text':>14}")
    for name, tps, cpu in rows:
        ratio = f"{tps / baseline:>12.1f}x" if baseline else f"{'':>13}"
        print(f"{name:<34}{tps:>12,.0f}{ratio}{cpu:>14.1f}")


if __name__ == "__main__":
    main()
