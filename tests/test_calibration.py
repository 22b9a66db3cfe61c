from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import distilsent
from distilsent.cli import main
from distilsent.evaluation.calibration import fit_temperature, nll
from distilsent.evaluation.metrics import expected_calibration_error


def test_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(4000, 2))
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = (rng.random(4000) < p[:, 1]).astype(int)
    # Logits three times too large: the fitted temperature should undo that.
    assert fit_temperature(3 * true_logits, labels) == pytest.approx(3.0, rel=0.1)
    assert nll(3 * true_logits, labels, 3.0) < nll(3 * true_logits, labels)


@pytest.fixture
def overconfident_model(tiny_model: Path) -> Path:
    """The tiny model with its classifier scaled up 30×: same labels, absurd confidence."""
    weights = load_file(tiny_model / "model.safetensors")
    weights["classifier.weight"] = weights["classifier.weight"] * 30
    weights["classifier.bias"] = weights["classifier.bias"] * 30
    save_file(weights, tiny_model / "model.safetensors", metadata={"format": "pt"})
    return tiny_model


def test_calibrate_lowers_ece_and_keeps_labels(overconfident_model: Path, tiny_tsv: Path, capsys) -> None:
    before = distilsent.load(overconfident_model, device="cpu")
    texts = [line.split("\t")[0] for line in tiny_tsv.read_text().splitlines()[1:]]
    labels = np.array([int(line.split("\t")[1]) for line in tiny_tsv.read_text().splitlines()[1:]])
    probs_before = before.predict_proba(texts)

    assert main(["calibrate", str(overconfident_model), "--dev", str(tiny_tsv)]) == 0
    assert "temperature" in capsys.readouterr().out
    config = json.loads((overconfident_model / "config.json").read_text())
    assert config["distilsent_temperature"] > 1

    after = distilsent.load(overconfident_model, device="cpu")
    probs_after = after.predict_proba(texts)
    assert (probs_after.argmax(1) == probs_before.argmax(1)).all()
    assert expected_calibration_error(probs_after, labels) < expected_calibration_error(probs_before, labels)
    # calibrated=False gives the raw scores back.
    raw = distilsent.load(overconfident_model, device="cpu", calibrated=False).predict_proba(texts)
    np.testing.assert_allclose(raw, probs_before, atol=1e-6)
    # The seed snippet still loads the directory: transformers ignores the extra config key.
    from transformers import DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification.from_pretrained(overconfident_model, dtype=torch.float32)
    ids, mask = after.tokenizer.pad(after.tokenizer.encode(texts[:1]))
    with torch.no_grad():
        plain = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
    np.testing.assert_allclose(plain.softmax(-1).numpy(), raw[:1], atol=1e-5)


def test_calibrate_on_the_training_rows_held_out_of_the_model(
    overconfident_model: Path, tiny_tsv: Path, capsys
) -> None:
    from distilsent.training.train import heldout_rows, split_holdout

    recipe = {"train": str(tiny_tsv), "select_on": "holdout", "holdout_fraction": 0.25, "seed": 3}
    (overconfident_model / "train_config.json").write_text(json.dumps(recipe))
    rows = tiny_tsv.read_text().splitlines()[1:]
    kept, held = split_holdout(len(rows), 0.25, 3)
    assert len(held) == 16 and not set(kept) & set(held)
    data = heldout_rows(overconfident_model)
    assert data.texts == [rows[i].split("\t")[0] for i in held]
    assert [int(x) for x in data.labels] == [int(rows[i].split("\t")[1]) for i in held]

    assert main(["calibrate", str(overconfident_model), "--holdout"]) == 0
    assert "the 16 training rows held out of" in capsys.readouterr().out
    assert json.loads((overconfident_model / "config.json").read_text())["distilsent_temperature"] > 1


@pytest.mark.parametrize(
    "recipe, match",
    [
        (
            {"train": "t.tsv", "select_on": "dev", "holdout_fraction": 0.02, "seed": 42},
            "not trained with --select-on holdout",
        ),
        (
            {"train": "missing.tsv", "select_on": "holdout", "holdout_fraction": 0.02, "seed": 42},
            "names the training file missing.tsv",
        ),
        (None, "cannot read the training recipe"),
        ({"train": "t.tsv", "select_on": "holdout"}, "the training recipe lacks 'holdout_fraction'"),
    ],
)
def test_calibrate_holdout_says_why_it_cannot(tiny_model: Path, recipe, match: str, capsys) -> None:
    if recipe is not None:
        (tiny_model / "train_config.json").write_text(json.dumps(recipe))
    assert main(["calibrate", str(tiny_model), "--holdout"]) == 2
    assert match in capsys.readouterr().err
