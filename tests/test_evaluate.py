from __future__ import annotations

import json
from pathlib import Path

import pytest

from distilsent import DataError
from distilsent.cli import main
from distilsent.core.classifier import load
from distilsent.evaluation.evaluate import evaluate, write_report
from distilsent.formats import read_labelled


def test_eval_on_tiny_model(tiny_model_dir: Path, tiny_tsv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["eval", str(tiny_tsv), "--model", str(tiny_model_dir), "--report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "ECE" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"] == 64
    assert sum(map(sum, metrics["confusion_matrix"])) == 64
    for name in ("report.md", "report.html", "reliability.png", "confusion.png", "scores.png", "length.png"):
        assert (out / name).stat().st_size > 0, name


def test_unknown_labels_are_listed_with_the_models_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("sentence\tlabel\ngood\tPOSITIVE\nmeh\tNEUTRAL\n")
    with pytest.raises(DataError, match=r"\['NEUTRAL'\].*0=NEGATIVE"):
        evaluate(load(tiny_model_dir, device="cpu"), read_labelled(path))


def test_one_class_file_says_what_cannot_be_computed(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("sentence\tlabel\ngood\t1\nfun\t1\n")
    result = evaluate(load(tiny_model_dir, device="cpu"), read_labelled(path))
    assert result.metrics["roc_auc"] is None
    assert "two classes" in result.metrics["notes"][0]
    write_report(result, tmp_path / "report")  # plots and tables cope with one class
    written = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"metrics.json", "report.md", "report.html"} <= written
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["roc_auc"] is None and "two classes" in saved["notes"][0]


@pytest.mark.slow
def test_report_for_the_reference_checkpoint(
    ref_model_dir: Path, ref_classifier, sst2_dev, tmp_path: Path
) -> None:
    from PIL import Image

    out = tmp_path / "report"
    argv = [
        "eval",
        str(_dev()),
        "--model",
        str(ref_model_dir),
        "--report",
        str(out),
        "--compare",
        str(ref_model_dir),
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    texts, labels = sst2_dev
    preds = ref_classifier.predict(texts)
    accuracy = sum(
        ref_classifier.labels.index(p.label) == y for p, y in zip(preds, labels, strict=True)
    ) / len(labels)
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["compare"]["difference"] == 0 and not metrics["compare"]["significant"]
    assert metrics["compare"]["mcnemar"] == {"a_only": 0, "b_only": 0, "p_value": 1.0}
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            image.verify()


def _dev() -> Path:
    from helpers import SST2

    return SST2 / "dev.tsv"


def test_eval_with_a_text_pair_column(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "pairs.tsv"
    pairs = [("good film", "bad plot"), ("the actors", "were wonderful"), ("dull", "not fun"), ("a", "b")]
    data.write_text(
        "text\tsecond\tlabel\n" + "".join(f"{a}\t{b}\t{i % 2}\n" for i, (a, b) in enumerate(pairs))
    )
    clf = load(tiny_model_dir, device="cpu")
    labelled = read_labelled(data, text_pair_column="second")
    assert labelled.inputs() == pairs
    result = evaluate(clf, labelled)
    expected = clf.predict(pairs)
    assert [clf.labels[i] for i in result.probs.argmax(1)] == [p.label for p in expected]
    assert result.texts[0] == "good film [SEP] bad plot"
    assert main(["eval", str(data), "--model", str(tiny_model_dir), "--text-pair-column", "second"]) == 0
    assert f"({len(pairs)} texts)" in capsys.readouterr().out
    with pytest.raises(DataError, match="no text pair column 'third'"):
        read_labelled(data, text_pair_column="third")
