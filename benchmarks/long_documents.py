"""Long documents: truncation vs chunking, on reviews longer than the model's 128-token window.

    python benchmarks/long_documents.py --model default --documents 200

Each document holds 3 SST-2 dev sentences of one label, placed at random among neutral filler sentences
(plot summary, running time, cast) so that the whole runs to 300-600 tokens: what a real review looks
like, where the opinion is not necessarily in the first 128 tokens. Prints accuracy per strategy,
measured on the same documents in one run.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import cpu_line

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"

FILLER = [
    "The film was released in the spring and runs for about two hours.",
    "It follows a family that moves from the city to a small town on the coast.",
    "The story takes place over a single summer in the late nineteen seventies.",
    "Most of the scenes were shot on location, in an old house near the harbour.",
    "The cast includes several actors who previously worked with the director.",
    "The script is based on a novel that was published about ten years earlier.",
    "The main character is a schoolteacher who has recently lost her job.",
    "Her brother arrives in the second act, and the two of them start a business.",
    "There is a subplot about a neighbour who repairs boats for a living.",
    "The music was written by a composer known mostly for his work in television.",
    "The film is in english, with a few lines of french in the final third.",
    "It was screened at two festivals before its theatrical release.",
    "The running time includes a short prologue set twenty years later.",
    "Several scenes take place at night, in a diner next to the railway station.",
    "The director also co-wrote the screenplay with a long-time collaborator.",
]


def make_documents(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    from distilsent.formats import read_labelled

    dev = read_labelled(DEV)
    by_label = {0: [], 1: []}
    for text, label in zip(dev.texts, dev.labels, strict=True):
        by_label[int(label)].append(text)
    rng = random.Random(seed)
    docs, labels = [], []
    for i in range(n):
        label = i % 2
        parts = [rng.choice(FILLER) for _ in range(rng.randint(30, 50))]
        for sentence in rng.sample(by_label[label], 3):
            parts.insert(rng.randint(0, len(parts)), sentence)
        docs.append(" ".join(parts))
        labels.append(label)
    return docs, labels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--documents", type=int, default=200)
    args = parser.parse_args()
    print(cpu_line())

    import numpy as np

    import distilsent

    docs, labels = make_documents(args.documents)
    y = np.array(labels)
    base = distilsent.load(args.model, device="cpu")
    windows = np.mean([len(base.tokenizer.windows(d, 0, 64)) for d in docs])
    print(f"model: {base.model_dir}; {len(docs)} documents, {windows:.1f} windows of 126 tokens on average")
    strategies = [
        ("truncate head (default)", {}),
        ("truncate tail", {"truncation_side": "tail"}),
        ("truncate head+tail", {"truncation_side": "head+tail"}),
        ("chunk, mean", {"long": "chunk", "aggregate": "mean"}),
        ("chunk, weighted", {"long": "chunk", "aggregate": "weighted"}),
        ("chunk, max-confidence", {"long": "chunk", "aggregate": "max-confidence"}),
    ]
    print(f"{'strategy':<28}{'accuracy':>10}")
    for name, options in strategies:
        clf = distilsent.load(args.model, device="cpu", **options)
        accuracy = (clf.predict_proba(docs).argmax(1) == y).mean()
        print(f"{name:<28}{100 * accuracy:>9.1f}%")


if __name__ == "__main__":
    main()
