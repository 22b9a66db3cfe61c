from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distilsent import DataError, TrainConfig, train
from distilsent.training.train import split_holdout, split_holdout_sentences
from helpers import assert_snippet_agrees, kill_then_resume


def _config(tiny_tsv: Path, tiny_model_dir: Path, output: Path, **overrides) -> TrainConfig:
    fields = {
        "train": str(tiny_tsv),
        "dev": str(tiny_tsv),
        "output": str(output),
        "init": str(tiny_model_dir),
        "learning_rate": 2e-3,
        "batch_size": 8,
        "warmup_steps": 0,
        "epochs": 4,
        "logging_steps": 4,
        **overrides,
    }
    return TrainConfig(**fields)


def test_tiny_training_learns_and_writes_a_complete_model(
    tiny_tsv: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(tiny_tsv, tiny_model_dir, tmp_path / "out")
    result = train(config)
    assert len(result.history) == 4
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_metrics["accuracy"] == max(h["accuracy"] for h in result.history)
    out = result.output
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "train_config.json"):
        assert (out / name).is_file(), name
    assert TrainConfig.from_dict(json.loads((out / "train_config.json").read_text())) == config
    card = (out / "README.md").read_text()
    for section in ("## Training data", "## Results", "## Reproduce", "## Known biases", "sha256", "64"):
        assert section in card
    assert config.command() in card
    # The Hub metadata a model page reads, parsed as huggingface_hub parses it.
    from huggingface_hub import ModelCard

    data = ModelCard.load(out / "README.md").data
    assert data.license == "apache-2.0" and data.pipeline_tag == "text-classification"
    (result_row,) = data.eval_results
    assert result_row.metric_type == "accuracy"
    assert result_row.metric_value == pytest.approx(result.best_metrics["accuracy"], abs=1e-4)
    assert "plain transformers ignores it" in card
    assert_snippet_agrees(out)


def test_command_reproduces_the_config(tmp_path: Path) -> None:
    config = TrainConfig(
        train="t.tsv", output="out", learning_rate=3e-5, group_by_length=False, eval_steps=500
    )
    from distilsent.cli import _build_parser, config_from_args

    args = _build_parser().parse_args(config.command().split()[1:])
    assert config_from_args(TrainConfig, args) == config


def test_float16_save_halves_the_weights(tiny_tsv: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    result = train(_config(tiny_tsv, tiny_model_dir, tmp_path / "out", epochs=1, save_dtype="float16"))
    weights = load_file(result.output / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float16}


def test_a_warm_up_longer_than_the_run_is_reported(
    tiny_tsv: Path, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The published recipe's 600 warm-up steps on 64 rows: 8 steps a pass, 2 passes.
    config = _config(tiny_tsv, tiny_model_dir, tmp_path / "out", dev=None, epochs=2, warmup_steps=600)
    with caplog.at_level("WARNING", logger="distilsent.training.train"):
        train(config)
    run = "warm-up (600 steps) is not shorter than the whole run (16 optimizer steps on 64 rows)"
    assert run in caplog.text
    assert "peaks at 5.3e-05 instead of 0.002" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="distilsent.training.train"):
        train(_config(tiny_tsv, tiny_model_dir, tmp_path / "out2", dev=None, epochs=2, warmup_steps=15))
    assert "warm-up" not in caplog.text


def test_counterfactual_augmentation_trains(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "train.tsv"
    rows = ["a fine film from france\t1", "the man was dull\t0", "great\t1", "awful\t0"] * 4
    data.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    config = _config(data, tiny_model_dir, tmp_path / "out", dev=None, epochs=1, augment="counterfactual")
    with caplog.at_level("WARNING", logger="distilsent.training.train"):
        result = train(config)
    assert (result.output / "model.safetensors").is_file()
    assert "8 of 16 sentences name an identity term; 16 copies added" in caplog.text


def _identity_data(tmp_path: Path) -> Path:
    data = tmp_path / "train.tsv"
    rows = ["a fine film from france\t1", "the man was dull\t0", "great\t1", "awful\t0"] * 4
    data.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return data


def _paired_batch(tiny_model_dir: Path) -> tuple[torch.nn.Module, list[list[int]], dict, Any]:
    """The tiny model without dropout, three sentences' ids, their collated batch in which sentence 1
    is a copy of sentence 0, and training arguments for a trainer that is never run."""
    from transformers import AutoTokenizer, DistilBertForSequenceClassification, TrainingArguments

    from distilsent.training.train import _PairCollator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # No dropout: the pairing term is only added in training mode, and must be reproducible here.
    model = DistilBertForSequenceClassification.from_pretrained(
        tiny_model_dir, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0
    )
    ids = tokenizer(["a film from france", "a film from peru", "dull"])["input_ids"]
    features = [
        {"input_ids": ids[0], "labels": 1},
        {"input_ids": ids[1], "labels": 1, "pair_input_ids": ids[0]},
        {"input_ids": ids[2], "labels": 0},
    ]
    batch = _PairCollator(tokenizer)(features)
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    return model, ids, batch, args


def test_pairing_loss_adds_the_weighted_squared_log_probability_gap(tiny_model_dir: Path) -> None:
    from distilsent.training.train import _pairing_trainer

    model, ids, batch, args = _paired_batch(tiny_model_dir)
    assert batch["pair_rows"].tolist() == [1] and batch["pair_input_ids"].shape[0] == 1
    trainer = _pairing_trainer(2.5)(model=model, args=args)
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        cross_entropy = torch.nn.functional.cross_entropy(plain.logits, batch["labels"])
        log_p = plain.logits[1].log_softmax(-1)
        log_q = model(input_ids=torch.tensor([ids[0]])).logits[0].log_softmax(-1)
    expected = cross_entropy + 2.5 * (log_p - log_q).pow(2).mean()
    assert (log_p - log_q).abs().max() > 1e-3  # the swap changes the prediction, so the term is live
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_distill_adds_the_gap_to_a_frozen_teacher_on_unpaired_sentences(tiny_model_dir: Path) -> None:
    import copy

    from distilsent.training.train import _pairing_trainer

    model, ids, batch, args = _paired_batch(tiny_model_dir)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.no_grad():
        teacher.classifier.bias.add_(torch.tensor([1.5, -1.5]))  # a teacher that disagrees
    trainer = _pairing_trainer(2.5, 0.5, teacher)(model=model, args=args)
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())

    def log_probs(net: torch.nn.Module, i: int) -> torch.Tensor:
        return net(input_ids=torch.tensor([ids[i]])).logits[0].log_softmax(-1)

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        cross_entropy = torch.nn.functional.cross_entropy(logits, batch["labels"])
        pairing = (log_probs(model, 1) - log_probs(model, 0)).pow(2).mean()
        # Rows 0 and 2 name nothing swapped: they are held to the teacher; the copy (row 1) is not.
        kept = [(log_probs(model, i) - log_probs(teacher, i)).pow(2).mean() for i in (0, 2)]
    assert min(k.item() for k in kept) > 1e-3
    expected = cross_entropy + 2.5 * pairing + 0.5 * (kept[0] + kept[1]) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_distill_keeps_the_starting_models_predictions(tiny_model_dir: Path, tmp_path: Path) -> None:
    from distilsent import load

    data = _identity_data(tmp_path)
    texts = [line.split("\t")[0] for line in data.read_text().splitlines()[1:]]
    start = load(tiny_model_dir).predict_proba(texts)[:, 1]
    moved = []
    # Adam moves each weight by about the learning rate whatever its gradient, so at this file's usual
    # 2e-3 the tiny model drifts either way (measured: 0.22 without, 0.33 with); at 5e-4 it does not.
    for distill in (0.0, 5.0):
        config = _config(
            data, tiny_model_dir, tmp_path / f"out{distill}", dev=None, epochs=3, learning_rate=5e-4,
            distill=distill,
        )  # fmt: skip
        moved.append(float(np.abs(load(train(config).output).predict_proba(texts)[:, 1] - start).mean()))
    assert moved[1] < 0.5 * moved[0], moved  # measured: 0.21 without, 0.08 with


def test_consistency_pulls_copies_towards_their_originals(tiny_model_dir: Path, tmp_path: Path) -> None:
    from distilsent import load
    from distilsent.training.augment import counterfactual

    data = _identity_data(tmp_path)
    rows = [line.split("\t") for line in data.read_text().splitlines()[1:]]
    gaps = []
    # Weight 1: the tiny random model's log-probabilities are extreme, and a larger weight only hits
    # the gradient clipping.
    for weight in (0.0, 1.0):
        config = _config(
            data, tiny_model_dir, tmp_path / f"out{weight}", dev=None, epochs=3,
            augment="counterfactual", augment_copies=4, consistency=weight,
        )  # fmt: skip
        clf = load(train(config).output)
        # The copies training made (same rows, same seed), each against the sentence it came from.
        texts, _, stats = counterfactual([t for t, _ in rows], [int(y) for _, y in rows], copies=4, seed=42)
        probs = clf.predict_proba(texts)[:, 1]
        first = len(rows)
        gaps.append(float(np.mean([abs(probs[first + k] - probs[s]) for k, s in enumerate(stats.sources)])))
    assert gaps[1] < 0.6 * gaps[0], gaps  # measured: 0.45 without, 0.20 with


def test_inserted_pairs_train_with_the_consistency_loss(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distilsent.training.train import _PairCollator

    seen: list[int] = []
    collate = _PairCollator.__call__

    def counting(self, features):
        seen.append(sum("pair_input_ids" in f for f in features))
        return collate(self, features)

    monkeypatch.setattr(_PairCollator, "__call__", counting)

    config = _config(
        _identity_data(tmp_path), tiny_model_dir, tmp_path / "out", dev=None, epochs=1,
        augment="counterfactual", augment_insert=24, consistency=1.0,
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="distilsent.training.train"):
        train(config)
    assert "24 sentences with an inserted identity term added" in caplog.text
    # 16 counterfactual copies + 24 inserted sentences carry a pair; the 16 originals do not.
    assert sum(seen) == 16 + 24, seen


def test_template_pairs_are_unlabelled_and_tied_by_the_consistency_loss(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distilsent.training.train import _PairCollator

    seen: list[tuple[int, int]] = []
    collate = _PairCollator.__call__

    def counting(self, features):
        unlabelled = sum(f["labels"] == -100 for f in features)
        seen.append((sum("pair_input_ids" in f for f in features), unlabelled))
        return collate(self, features)

    monkeypatch.setattr(_PairCollator, "__call__", counting)
    config = _config(
        _identity_data(tmp_path), tiny_model_dir, tmp_path / "out", dev=None, epochs=1,
        augment="counterfactual", augment_templates=20, consistency=1.0, distill=1.0,
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="distilsent.training.train"):
        train(config)
    assert "20 unlabelled template pairs added" in caplog.text
    # 16 counterfactual copies + 20 template sentences carry a pair; only the 20 have no label.
    assert (sum(p for p, _ in seen), sum(u for _, u in seen)) == (16 + 20, 20)


def test_a_batch_without_labels_is_trained_by_the_consistency_term_alone(tiny_model_dir: Path) -> None:
    from distilsent.training.train import _pairing_trainer

    model, ids, batch, args = _paired_batch(tiny_model_dir)
    batch = dict(batch)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    model.train()
    loss = _pairing_trainer(2.5)(model=model, args=args).compute_loss(model, batch)
    with torch.no_grad():
        log_p = model(input_ids=torch.tensor([ids[1]])).logits[0].log_softmax(-1)
        log_q = model(input_ids=torch.tensor([ids[0]])).logits[0].log_softmax(-1)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(2.5 * (log_p - log_q).pow(2).mean().item(), rel=1e-5)


def test_check_augmentation_adds_labelled_sentences_and_invariance_pairs(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distilsent.evaluation.check import load_suite, training_examples
    from distilsent.training.train import _PairCollator

    seen: list[tuple[int, int]] = []
    collate = _PairCollator.__call__

    def counting(self, features):
        batch = collate(self, features)
        free = int(batch["free_rows"].sum()) if "free_rows" in batch else 0
        seen.append((sum("pair_input_ids" in f for f in features), free))
        return batch

    monkeypatch.setattr(_PairCollator, "__call__", counting)
    config = _config(
        _identity_data(tmp_path), tiny_model_dir, tmp_path / "out", dev=None, epochs=1,
        augment="check", check_samples=2, check_copies=2, consistency=1.0, distill=1.0,
    )  # fmt: skip
    train(config)
    labelled, pairs = training_examples(load_suite(), samples=2)
    assert sum(p for p, _ in seen) == len(pairs)
    # The mft sentences are free of the distillation term, which would hold them to the old model.
    assert sum(f for _, f in seen) == 2 * len(labelled)


def test_bitfit_changes_only_biases_norms_and_the_head(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _identity_data(tmp_path)
    result = train(_config(data, tiny_model_dir, tmp_path / "out", dev=None, epochs=1, trainable="bitfit"))
    before, after = (
        load_file(tiny_model_dir / "model.safetensors"),
        load_file(result.output / "model.safetensors"),
    )
    changed = {name for name in after if not torch.equal(before[name], after[name])}
    assert "classifier.weight" in changed and any(name.endswith("sa_layer_norm.bias") for name in changed)
    assert all(name.endswith(".bias") or "norm" in name.lower() or "classifier" in name for name in changed)
    assert "distilbert.embeddings.word_embeddings.weight" not in changed


def test_bad_data_fails_before_training(tiny_model_dir: Path, tmp_path: Path, tiny_tsv: Path) -> None:
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\ngood\t1\nodd\t7\n")
    with pytest.raises(DataError, match=r"labels \['7'\]"):
        train(_config(tiny_tsv, tiny_model_dir, tmp_path / "out", dev=str(dev)))
    assert not (tmp_path / "out").exists()


def test_existing_output_is_not_clobbered(tiny_tsv: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(DataError, match=r"--resume .* or --overwrite"):
        train(_config(tiny_tsv, tiny_model_dir, out))
    assert (out / "keep.txt").read_text() == "precious"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"learning_rate": 0}, "learning_rate"),
        ({"max_length": 4}, "max_length"),
        ({"dropout": 1.5}, "dropout"),
        ({"precision": "fp8"}, "precision"),
        ({"early_stopping_patience": 2, "dev": None}, "dev file"),
        ({"augment": "mixup"}, "counterfactual, check"),
        ({"check_tests": "x.yaml"}, "--augment check"),
        ({"augment": "counterfactual", "augment_copies": 0}, "augment_copies"),
        ({"consistency": 1.0}, "--augment counterfactual"),
        ({"augment": "counterfactual", "consistency": -1.0}, "consistency"),
        ({"distill": -1.0}, "distill"),
        ({"distill": 1.0, "augment": "counterfactual"}, "--consistency"),
        ({"trainable": "lora"}, "bitfit"),
        ({"augment_templates": -1}, "augment_templates"),
        ({"augment_invented": 1.5}, "augment_invented"),
        ({"augment": "counterfactual", "augment_templates": 5}, "--consistency W"),
        ({"holdout_by": "phrase"}, "'sentence' or 'row'"),
    ],
)
def test_config_validation(fields, match, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"train": "t.tsv", "output": str(tmp_path), **fields})


@pytest.mark.slow
def test_kill_then_resume_reaches_the_same_model(
    tiny_tsv: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    overrides = {"epochs": 12, "eval_steps": 4}
    reference = train(_config(tiny_tsv, tiny_model_dir, tmp_path / "reference", **overrides)).output

    config = _config(tiny_tsv, tiny_model_dir, tmp_path / "killed", **overrides)
    kill_then_resume(config, checkpoint=40)
    resumed, expected = (
        load_file(Path(config.output) / "model.safetensors"),
        load_file(reference / "model.safetensors"),
    )
    ref_metrics = json.loads((reference / "train_metrics.json").read_text())
    got_metrics = json.loads((Path(config.output) / "train_metrics.json").read_text())
    # The resumed run evaluated at the same steps and kept the same best step as the uninterrupted one.
    assert [h["step"] for h in got_metrics["history"]] == [h["step"] for h in ref_metrics["history"]]
    assert got_metrics["best"]["step"] == ref_metrics["best"]["step"]
    # Weights agree up to float noise. This tiny model (weights drawn with std 0.5, lr 2e-3) amplifies the
    # last-bit differences of multi-threaded reductions: up to 1.7e-3 was seen on the classifier bias in
    # about one run in four, which failed the former 1e-5 tolerance.
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, atol=5e-3, rtol=1e-3, msg=name)


@pytest.mark.parametrize("state", ["", '{"global_step": 8, "log_hist'], ids=["empty", "cut short"])
def test_resume_skips_a_checkpoint_whose_trainer_state_a_kill_cut_short(
    tiny_tsv: Path, tiny_model_dir: Path, tmp_path: Path, caplog, state: str
) -> None:
    config = _config(tiny_tsv, tiny_model_dir, tmp_path / "out", epochs=3, eval_steps=4)
    train(config)
    output = Path(config.output)
    checkpoints = sorted(
        (output / "checkpoints").glob("checkpoint-*"), key=lambda c: int(c.name.rpartition("-")[2])
    )
    assert len(checkpoints) >= 2
    # What a kill leaves while the Trainer writes the last file of its last checkpoint (not
    # atomically), before the final model: the file opened, its text not (or not all) written.
    (output / "model.safetensors").unlink()
    (checkpoints[-1] / "trainer_state.json").write_text(state)
    with caplog.at_level("WARNING"):
        train(config, resume=True)
    assert f"removing incomplete checkpoint {checkpoints[-1]}" in caplog.text
    assert (output / "model.safetensors").is_file()
    assert json.loads((output / "train_metrics.json").read_text())["history"]


def test_resume_refuses_changed_settings(tiny_tsv: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    train(_config(tiny_tsv, tiny_model_dir, tmp_path / "out", epochs=1))
    with pytest.raises(ValueError, match="different settings"):
        train(_config(tiny_tsv, tiny_model_dir, tmp_path / "out", epochs=2), resume=True)


# A treebank in miniature, as SST-2's train file is: sentences, and phrases cut from them.
_SENTENCES = [
    "the film is a charming , funny ride",
    "the plot is thin and the acting wooden",
    "a dull , lifeless remake",
    "an utterly charming film",
    "it never finds its rhythm",
    "warm , funny and wise",
]
_PHRASES = [
    "charming , funny ride",
    "the film",
    "the acting wooden",
    "lifeless remake",
    "charming film",
    "charming",
]


def test_sentence_holdout_keeps_every_part_of_a_held_out_sentence_out_of_training() -> None:
    texts = _SENTENCES + _PHRASES + ["a dull , lifeless remake"]  # and a duplicate
    for seed in range(20):
        kept, held = split_holdout_sentences(texts, 0.34, seed)
        assert held == split_holdout_sentences(texts, 0.34, seed)[1]
        # Two of the six sentences: phrases are never drawn, and a duplicate only as its first copy.
        assert len(held) == 2 and set(held) <= set(range(6))
        inside = {i for i, t in enumerate(texts) if any(f" {t} " in f" {texts[h]} " for h in held)}
        assert kept == sorted(set(range(len(texts))) - inside)
    # A phrase of a held-out sentence stays out even where a kept sentence holds it too.
    kept, held = next(
        split
        for seed in range(50)
        if 0 in (split := split_holdout_sentences(texts, 0.34, seed))[1] and 3 not in split[1]
    )
    assert texts.index("charming") not in kept and texts.index("charming film") in kept
    # The models are uncased, so a phrase in other case is the same input.
    assert split_holdout_sentences(["The Film is great", "the film"], 0.1, 0) == ([], [0])


def test_sentence_holdout_is_a_row_holdout_where_no_row_lies_inside_another() -> None:
    texts = [f"review number {i} says {w}" for i, w in enumerate(["yes", "no"] * 50)]
    kept, held = split_holdout_sentences(texts, 0.1, 7)
    assert len(held) == 10 and sorted(kept + held) == list(range(100))
    assert len(split_holdout(100, 0.1, 7)[1]) == 10


def test_sentence_holdout_is_recorded_and_reused(
    tiny_tsv: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from distilsent.training.train import heldout_rows

    rows = [line.split("\t") for line in tiny_tsv.read_text().splitlines()[1:]]
    texts = [r[0] for r in rows] + ["good film"]  # a phrase of 'good film <word>'
    data = tmp_path / "tree.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{int('good' in t)}\n" for t in texts))
    config = _config(data, tiny_model_dir, tmp_path / "out", select_on="holdout", holdout_fraction=0.25)
    assert config.holdout_by == "sentence"
    result = train(config)
    metrics = json.loads((result.output / "train_metrics.json").read_text())
    held = split_holdout_sentences(texts, 0.25, config.seed)[1]
    assert metrics["holdout"] == {"by": "sentence", "rows": len(held)}
    assert heldout_rows(result.output).texts == [texts[i] for i in held]
    assert f"{len(held)} held-out training sentences" in (result.output / "README.md").read_text()


def test_a_recipe_from_before_holdout_by_reads_as_a_row_holdout(tmp_path: Path) -> None:
    # --resume compares the recorded recipe with the command's; an old one must keep its split.
    old = {"train": "t.tsv", "output": str(tmp_path), "select_on": "holdout", "holdout_fraction": 0.02}
    assert TrainConfig.from_dict(old).holdout_by == "row"
    assert TrainConfig(train="t.tsv", output=str(tmp_path)).holdout_by == "sentence"
