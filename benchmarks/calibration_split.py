"""Does temperature scaling help on data it was not fitted on? Two-fold split of SST-2 dev.

    python benchmarks/calibration_split.py --model default

Fits T on one half of dev and measures ECE / NLL on the other half, then swaps the halves.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    import distilsent
    from distilsent.evaluation.calibration import fit_temperature, nll
    from distilsent.evaluation.metrics import expected_calibration_error, softmax
    from distilsent.formats import read_labelled

    dev = read_labelled(DEV)
    clf = distilsent.load(args.model, device="cpu", calibrated=False)
    logits, labels = clf.logits(dev.texts), np.array(dev.labels)
    order = np.random.default_rng(0).permutation(len(labels))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])

    print(f"model: {clf.model_dir}")
    print(f"{'fold':<6}{'T':>7}{'ECE before':>12}{'ECE after':>11}{'NLL before':>12}{'NLL after':>11}")
    for fold, (fit, test) in enumerate((halves, halves[::-1]), 1):
        t = fit_temperature(logits[fit], labels[fit])
        z, y = logits[test], labels[test]
        print(
            f"{fold:<6}{t:>7.3f}{expected_calibration_error(softmax(z), y):>12.4f}"
            f"{expected_calibration_error(softmax(z, t), y):>11.4f}{nll(z, y):>12.4f}{nll(z, y, t):>11.4f}"
        )


if __name__ == "__main__":
    main()
