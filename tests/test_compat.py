"""The seed snippet must run on every model directory distilsent reads or writes, and agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import DistilBertForSequenceClassification, DistilBertTokenizer

import distilsent

TEXTS = ["Hello, my dog is cute", "A boring, tedious and terrible film.", "good fun", "the plot was awful"]


def seed_snippet(model_dir: Path, text: str) -> str:
    tokenizer = DistilBertTokenizer.from_pretrained(model_dir)
    model = DistilBertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    predicted_class_id = logits.argmax().item()
    return model.config.id2label[predicted_class_id]


def assert_snippet_agrees(model_dir: Path) -> None:
    clf = distilsent.load(model_dir, device="cpu")
    for text in TEXTS:
        assert seed_snippet(model_dir, text) == clf.predict(text).label, text


def test_tiny_model(tiny_model_dir: Path) -> None:
    assert_snippet_agrees(tiny_model_dir)


@pytest.mark.slow
def test_reference_checkpoint(ref_model_dir: Path) -> None:
    assert_snippet_agrees(ref_model_dir)


def test_default_model() -> None:
    from distilsent.models import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("no default model bundled in this checkout")
    assert_snippet_agrees(DEFAULT_MODEL_DIR)
