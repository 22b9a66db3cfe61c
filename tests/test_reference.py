"""Integration tests on real checkpoints: the shared reference model and the bundled default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import distilsent
from distilsent.core.models import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.slow


def test_hello_my_dog_is_cute(ref_classifier) -> None:
    pred = ref_classifier.predict("Hello, my dog is cute")
    assert pred.label == "POSITIVE"
    assert pred.score > 0.99


def test_sst2_dev_accuracy(ref_classifier, sst2_dev) -> None:
    texts, labels = sst2_dev
    preds = ref_classifier.predict(texts)
    accuracy = np.mean(
        [ref_classifier.labels.index(p.label) == y for p, y in zip(preds, labels, strict=True)]
    )
    assert accuracy >= 0.895, accuracy


def test_labels_agree_with_transformers_pipeline(ref_model_dir: Path, ref_classifier, sst2_dev) -> None:
    import torch
    from transformers import pipeline

    texts, _ = sst2_dev
    pipe = pipeline("text-classification", model=str(ref_model_dir), device="cpu", dtype=torch.float32)
    theirs = pipe(texts, batch_size=32, truncation=True, max_length=128)
    ours = ref_classifier.predict(texts)
    assert [t["label"] for t in theirs] == [p.label for p in ours]
    np.testing.assert_allclose([t["score"] for t in theirs], [p.score for p in ours], atol=1e-4)


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="no default model bundled")
def test_default_model_dev_accuracy_through_the_cli(sst2_dev) -> None:
    texts, labels = sst2_dev
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "distilsent.cli", "classify"],
        input="\n".join(texts) + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    predicted = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert len(predicted) == len(labels)
    accuracy = np.mean([(p == "POSITIVE") == bool(y) for p, y in zip(predicted, labels, strict=True)])
    # The shipped default measures 89.79 % in fp32 (89.56 % in bf16): a broken load or tokenizer
    # would fall far below this.
    assert accuracy >= 0.895, accuracy


@pytest.mark.slow
def test_bf16_agrees_with_fp32_on_dev(ref_model_dir: Path, ref_classifier, sst2_dev) -> None:
    texts, _ = sst2_dev
    bf16 = distilsent.load(ref_model_dir, device="cpu", dtype="bf16")
    assert bf16.info()["dtype"] == "bfloat16"
    want, got = ref_classifier.logits(texts), bf16.logits(texts)
    # bf16 keeps 8 bits of mantissa: logits of a few units move by a few hundredths.
    assert np.abs(got - want).max() < 0.25
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.995
