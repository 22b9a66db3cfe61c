"""Shared fixtures: a tiny random DistilBERT built once per session, and the real reference checkpoint.

Nothing here touches the network. Tests on the real checkpoint and SST-2 skip with a reason when
``../shared`` is absent (a user's clone); CI always has it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# distilsent's own cache (teacher logits, the assembled MPNet) goes to a scratch folder, never $HOME.
os.environ.setdefault("DISTILSENT_CACHE", tempfile.mkdtemp(prefix="distilsent-test-cache-"))

# dtype='auto' runs bf16 on CPUs with AMX or AVX512-BF16, and the numeric tests compare with fp32
# transformers to 1e-5, which bf16 cannot hold. So every test, subprocesses included, sees a CPU
# without flags unless it sets them itself; bf16 is tested by name (test_engine, test_reference).
os.environ["DISTILSENT_CPU_FLAGS"] = ""

from helpers import REF_MODEL, SST2, WORDS, build_tiny_model


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
    from distilsent.formats import read_labelled

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
