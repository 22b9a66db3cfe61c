"""spaCy's own text classifier against distilsent inside spaCy, on SST-2, in one run.

    python benchmarks/spacy_textcat.py                      # spaCy's efficiency textcat (bag of n-grams)
    python benchmarks/spacy_textcat.py --optimize accuracy  # its ensemble, with a CNN: slower to train

(``accuracy`` without the static word vectors its config names: they come with ``en_core_web_lg``,
which spaCy downloads from GitHub, not from a package registry.)

spaCy's textcat is trained here the way its docs set one up (``spacy init config --pipeline textcat
--optimize ...``, then ``spacy train``) on SST-2 train, its best model chosen on a held-out slice of
the training sentences (10 %, whole sentences with their phrases left out of training, as
``distilsent train --select-on holdout`` does), never on SST-2 dev. Then, on the same 1,000 distinct
SST-2 dev sentences, each row's ``nlp.pipe`` texts/s (a warm pass), its SST-2 dev accuracy (one
look, after training), and the transformers pipeline at batch 32 on the default model, the ratio
baseline. distilsent runs as the ``"distilsent"`` component of a blank English pipeline with the
bundled default model; its training was not redone here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import DEV, cpu_line, sst2_texts, throughput

TRAIN = DEV.parent / "train.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--optimize", choices=("efficiency", "accuracy"), default="efficiency")
    parser.add_argument("--texts", type=int, default=1000, help="texts per throughput pass")
    parser.add_argument("--max-steps", type=int, default=6000, help="spaCy training steps at most")
    parser.add_argument("--work", type=Path, help="folder for spaCy's data and model (default: temporary)")
    args = parser.parse_args()

    import spacy
    import torch
    from spacy.tokens import DocBin
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import distilsent
    from distilsent.formats import read_labelled
    from distilsent.training.train import split_holdout_sentences

    hf_logging.disable_progress_bar()
    print(cpu_line())
    work = args.work or Path(tempfile.mkdtemp(prefix="spacy-textcat-"))
    work.mkdir(parents=True, exist_ok=True)
    train_data, dev_data = read_labelled(TRAIN), read_labelled(DEV)
    names = {0: "NEGATIVE", 1: "POSITIVE"}
    train_rows, holdout_rows = split_holdout_sentences(list(train_data.texts), 0.1, 42)
    blank = spacy.blank("en")
    for split, rows in (("train", train_rows), ("holdout", holdout_rows)):
        docs = DocBin()
        for i in rows:
            doc = blank.make_doc(train_data.texts[i])
            doc.cats = {name: float(train_data.labels[i] == k) for k, name in names.items()}
            docs.add(doc)
        docs.to_disk(work / f"{split}.spacy")
    print(
        f"spaCy data: {len(train_rows)} training rows, {len(holdout_rows)} held-out rows; work folder {work}"
    )
    spacy_cli = [sys.executable, "-m", "spacy"]
    config = work / "config.cfg"
    init = [
        "init",
        "config",
        str(config),
        "--lang",
        "en",
        "--pipeline",
        "textcat",
        "--optimize",
        args.optimize,
    ]
    subprocess.run([*spacy_cli, *init, "--force"], check=True, capture_output=True)
    train_cmd = [*spacy_cli, "train", str(config), "--output", str(work / "model")]
    train_cmd += ["--paths.train", str(work / "train.spacy"), "--paths.dev", str(work / "holdout.spacy")]
    train_cmd += ["--training.max_steps", str(args.max_steps)]
    if args.optimize == "accuracy":
        # Its config reads en_core_web_lg's word vectors, a model spaCy downloads from GitHub, not PyPI.
        train_cmd += [
            "--paths.vectors",
            "null",
            "--components.tok2vec.model.embed.include_static_vectors",
            "false",
        ]
    print("training spaCy's textcat:", " ".join(train_cmd[2:]), flush=True)
    subprocess.run(train_cmd, check=True, stdout=subprocess.DEVNULL)
    spacy_nlp = spacy.load(work / "model" / "model-best")

    ours = spacy.blank("en")
    ours.add_pipe("distilsent")
    texts = sst2_texts(args.texts)
    clf = distilsent.load()
    pipe = pipeline("text-classification", model=str(clf.model_dir), device="cpu", dtype=torch.float32)
    baseline = throughput(lambda t: pipe(t, batch_size=32, truncation=True, max_length=128), texts)[1]
    gold = [names[y] for y in dev_data.labels]

    def accuracy(nlp: spacy.Language) -> float:
        docs = nlp.pipe(dev_data.texts)
        return (
            100 * sum(max(d.cats, key=d.cats.get) == g for d, g in zip(docs, gold, strict=True)) / len(gold)
        )

    print(f"\ntransformers pipeline, batch 32 (default model): {baseline:.1f} texts/s")
    print(f"{'pipeline':<44}{'texts/s':>9}{'vs transformers b32':>21}{'dev acc':>9}")
    for name, nlp in (
        (f"spaCy textcat ({args.optimize})", spacy_nlp),
        ("distilsent in spaCy (default)", ours),
    ):
        rate = throughput(lambda t, nlp=nlp: list(nlp.pipe(t)), texts)[1]
        print(f"{name:<44}{rate:>9.1f}{rate / baseline:>20.2f}x{accuracy(nlp):>8.2f}%", flush=True)


if __name__ == "__main__":
    main()
