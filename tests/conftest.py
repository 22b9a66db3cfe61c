"""Shared fixtures: a tiny random DistilBERT built once per session, and the real reference checkpoint.

Nothing here touches the network. Tests on the real checkpoint and SST-2 skip with a reason when
``../shared`` is absent (a user's clone); CI always has it.
"""

from __future__ import annotations

import os
import shutil
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REF_MODEL = SHARED / "models" / "minilm-l6-sst2-ref"
SST2 = SHARED / "data" / "sst2"

WORDS = (
    "good bad film movie the a is was great terrible hello my dog cute not very it this and of "
    "to in wonderful awful boring fun plot actors story"
).split()


def build_tiny_model(
    path: Path, *, seed: int = 0, labels: tuple[str, ...] = ("NEGATIVE", "POSITIVE")
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
        # Wider than the default 0.02 so that different texts get clearly different scores.
        initializer_range=0.5,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        architectures=["DistilBertForSequenceClassification"],
    )
    torch.manual_seed(seed)
    DistilBertForSequenceClassification(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only tiny model shared by the session; copy it (``tiny_model``) before changing it."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def tiny_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model that a test may modify."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model_dir: Path):
    import distilsent

    return distilsent.load(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def ref_model_dir() -> Path:
    if not (REF_MODEL / "config.json").is_file():
        pytest.skip(f"reference checkpoint not found at {REF_MODEL} (only in CI and development checkouts)")
    return REF_MODEL


@pytest.fixture(scope="session")
def ref_classifier(ref_model_dir: Path):
    import distilsent

    return distilsent.load(ref_model_dir, device="cpu")


@pytest.fixture(scope="session")
def sst2_dev() -> tuple[list[str], list[int]]:
    path = SST2 / "dev.tsv"
    if not path.is_file():
        pytest.skip(f"SST-2 dev not found at {path} (only in CI and development checkouts)")
    from distilsent.data import read_labelled

    data = read_labelled(path)
    return data.texts, [int(x) for x in data.labels]


@pytest.fixture
def tiny_tsv(tmp_path: Path) -> Path:
    """64 labelled rows a tiny model can learn: label = whether 'good' or 'bad' words dominate."""
    pos = [
        "good film",
        "great movie",
        "wonderful story",
        "fun plot",
        "good actors",
        "great fun",
        "a good dog",
        "cute",
    ]
    neg = [
        "bad film",
        "terrible movie",
        "awful story",
        "boring plot",
        "bad actors",
        "awful fun",
        "a bad dog",
        "boring",
    ]
    rows = ["sentence\tlabel"]
    for i in range(32):
        rows.append(f"{pos[i % len(pos)]} {WORDS[i % 5]}\t1")
        rows.append(f"{neg[i % len(neg)]} {WORDS[i % 5]}\t0")
    path = tmp_path / "tiny.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path
