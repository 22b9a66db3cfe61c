"""Candidate defaults side by side, in one run: dev accuracy, macro-F1, ECE, the held-out slice, size.

    python scripts/compare_models.py default runs/student ../shared/models/minilm-l6-sst2-ref runs/teacher

The held-out slice is the one ``train``/``distill --select-on holdout`` keeps out of training (by default
seed 42, 10 % of SST-2 train's sentences; ``--holdout-by row --fraction 0.02`` for runs from before
sentences were held out); a model trained on all of train has seen it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import distilsent
from distilsent.evaluation.metrics import expected_calibration_error, macro_f1
from distilsent.formats import read_labelled
from distilsent.training.train import HOLDOUT_UNITS, holdout_split

SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="'default', model directories or hub ids")
    parser.add_argument("--seed", type=int, default=42, help="the training run's seed")
    parser.add_argument("--fraction", type=float, default=0.1, help="the training run's holdout_fraction")
    parser.add_argument(
        "--holdout-by", choices=HOLDOUT_UNITS, default="sentence", help="the training run's holdout_by"
    )
    args = parser.parse_args()
    dev, train = read_labelled(SST2 / "dev.tsv"), read_labelled(SST2 / "train.tsv")
    _, held = holdout_split(train.texts, args.holdout_by, args.fraction, args.seed)
    held_texts = [train.texts[i] for i in held]
    held_y = np.array([int(train.labels[i]) for i in held])
    dev_y = np.array([int(y) for y in dev.labels])
    for name in args.models:
        clf = distilsent.load(name, device="cpu")
        probs, held_probs = clf.predict_proba(dev.texts), clf.predict_proba(held_texts)
        row = {
            "dev_accuracy": round(float((probs.argmax(1) == dev_y).mean()), 4),
            "dev_macro_f1": round(macro_f1(probs, dev_y), 4),
            "dev_ece": round(expected_calibration_error(probs, dev_y), 4),
            "holdout_accuracy": round(float((held_probs.argmax(1) == held_y).mean()), 4),
            "parameters": clf.engine.num_parameters(),
        }
        print(name, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
