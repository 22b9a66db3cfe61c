"""Helpers shared by several test modules (test modules never import each other)."""

from __future__ import annotations

import os
import signal
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import DistilBertForSequenceClassification, DistilBertTokenizer

import distilsent

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REF_MODEL = SHARED / "models" / "minilm-l6-sst2-ref"
SST2 = Path(os.environ.get("DISTILSENT_SST2_DIR") or SHARED / "data" / "sst2")
"""SST-2 train and dev; DISTILSENT_SST2_DIR where ../shared does not travel (scripts/device_run.sh)."""

WORDS = (
    "good bad film movie the a is was great terrible hello my dog cute not very it this and of "
    "to in wonderful awful boring fun plot actors story"
).split()


def build_tiny_model(
    path: Path,
    *,
    seed: int = 0,
    labels: tuple[str, ...] = ("NEGATIVE", "POSITIVE"),
    initializer_range: float = 0.5,
) -> Path:
    """A 2-layer, 32-dim DistilBERT classifier with a small WordPiece vocabulary, saved to ``path``."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    vocab += list(string.digits) + list(".,!?'-") + WORDS
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=True).save(str(path / "tokenizer.json"))
    DistilBertTokenizer.from_pretrained(path).save_pretrained(path)
    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=37,
        max_position_embeddings=512,
        # Wider than the default 0.02 so that different texts get clearly different scores (such a
        # model barely trains; tests that need learning pass the default 0.02).
        initializer_range=initializer_range,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        architectures=["DistilBertForSequenceClassification"],
    )
    torch.manual_seed(seed)
    DistilBertForSequenceClassification(config).save_pretrained(path)
    return path


def tiny_bert_config(vocab_size: int, **extra: Any) -> Any:
    """A 2-layer, 32-dim ``BertConfig``, the tiny model's shape in BERT layout."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        **extra,
    )


def build_tiny_bert(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer, 32-dim BERT (not DistilBERT) classifier with the tiny model's vocabulary."""
    import torch
    from transformers import BertForSequenceClassification

    build_tiny_model(path, seed=seed)  # for the vocabulary and tokenizer files
    for weights in path.glob("*.safetensors"):
        weights.unlink()
    config = tiny_bert_config(
        len((path / "vocab.txt").read_text().split()),
        initializer_range=0.5,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        architectures=["BertForSequenceClassification"],
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


SNIPPET_TEXTS = [
    "Hello, my dog is cute",
    "A boring, tedious and terrible film.",
    "good fun",
    "the plot was awful",
]

# The same float32 model run on the same text in a different batch (other padding, another kernel
# blocking: AVX2 on one machine, AVX-512/AMX on another) differs by up to ~1e-6 in a probability;
# 1e-5 absolute holds on both kinds of machine and still fails on any real difference (a wrong
# label order, a missed temperature or truncation changes scores by far more).
SCORE_ABS = 1e-5


def approx_scores(expected: object) -> object:
    """``pytest.approx`` with the cross-CPU float32 tolerance for scores and logits."""
    return pytest.approx(expected, abs=SCORE_ABS, rel=1e-5)


def seed_snippet(model_dir: Path, text: str) -> str:
    """The product's promise: plain transformers loads the directory and labels the text."""
    tokenizer = DistilBertTokenizer.from_pretrained(model_dir)
    model = DistilBertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    predicted_class_id = logits.argmax().item()
    return model.config.id2label[predicted_class_id]


def assert_snippet_agrees(model_dir: Path) -> None:
    clf = distilsent.load(model_dir, device="cpu")
    for text in SNIPPET_TEXTS:
        assert seed_snippet(model_dir, text) == clf.predict(text).label, text


def kill_then_resume(config: Any, *, checkpoint: int) -> None:
    """Run ``config.command()`` in a process, SIGKILL it once a checkpoint at or past step ``checkpoint``
    is saved, then ``--resume``."""
    argv = [sys.executable, "-m", "distilsent.cli", *config.command().split()[1:]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    checkpoints = Path(config.output) / "checkpoints"
    deadline = time.monotonic() + 120

    def saved() -> bool:
        # Any complete checkpoint at or past the step: save_total_limit may already have deleted the
        # one at exactly that step by the time this loop looks.
        states = checkpoints.glob("checkpoint-*/trainer_state.json")
        return any(int(p.parent.name.rpartition("-")[2]) >= checkpoint for p in states)

    try:
        while not saved():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (Path(config.output) / "model.safetensors").exists()
    done = subprocess.run([*argv, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def cli_in_fresh_process(args: list[str]) -> tuple[str, bool]:
    """``distilsent ARGS``'s output in a new interpreter, and whether it imported transformers."""
    code = (
        "import sys\n"
        "from distilsent.cli import main\n"
        f"code = main({args!r})\n"
        "print('transformers' in sys.modules, code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *output, last = proc.stdout.splitlines()
    imported, exit_code = last.split()
    assert exit_code == "0", proc.stdout + proc.stderr
    return "\n".join(output), imported == "True"
