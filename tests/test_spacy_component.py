from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_snippet_agrees

spacy = pytest.importorskip("spacy")

TEXTS = ["good film", "a bad , boring movie", "   ", "great fun", "terrible plot"]


@pytest.fixture
def nlp(tiny_model_dir: Path):
    pipeline = spacy.blank("en")
    pipeline.add_pipe("distilsent", config={"model": str(tiny_model_dir), "load": {"device": "cpu"}})
    return pipeline


def test_the_factory_is_found_through_the_entry_point_and_sets_the_scores(nlp, tiny_classifier) -> None:
    doc = nlp("good film")
    expected = tiny_classifier.predict("good film")
    assert doc.cats == pytest.approx(expected.scores, abs=1e-6)
    assert doc._.distilsent == expected.to_dict()
    assert nlp.get_pipe("distilsent").labels == tuple(tiny_classifier.labels)


def test_pipe_scores_each_batch_and_leaves_empty_docs_unscored(nlp, tiny_classifier) -> None:
    docs = list(nlp.pipe(TEXTS, batch_size=2))
    expected = tiny_classifier.predict([t for t in TEXTS if t.strip()])
    scored = [doc for doc in docs if doc.cats]
    assert [doc.text for doc in scored] == [t for t in TEXTS if t.strip()]
    for doc, prediction in zip(scored, expected, strict=True):
        assert doc.cats == pytest.approx(prediction.scores, abs=1e-6)
    assert docs[2].cats == {} and docs[2]._.distilsent is None


def test_a_saved_pipeline_carries_its_model(nlp, tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "source"
    shutil.copytree(tiny_model_dir, copy)
    pipeline = spacy.blank("en")
    pipeline.add_pipe("distilsent", config={"model": str(copy), "load": {"device": "cpu", "max_length": 64}})
    before = pipeline("a bad , boring movie").cats
    pipeline.to_disk(tmp_path / "pipeline")
    shutil.rmtree(copy)  # the saved pipeline must not need the directory it was built from
    loaded = spacy.load(tmp_path / "pipeline")
    component = loaded.get_pipe("distilsent")
    assert loaded("a bad , boring movie").cats == pytest.approx(before, abs=1e-6)
    assert component.classifier.model_dir == tmp_path / "pipeline" / "distilsent" / "model"
    assert component.classifier.config.max_length == 64
    assert_snippet_agrees(component.classifier.model_dir)
    loaded.to_disk(tmp_path / "pipeline")  # over itself: the model it reads must survive
    assert spacy.load(tmp_path / "pipeline")("a bad , boring movie").cats == pytest.approx(before, abs=1e-6)


def test_bad_options_are_refused_when_the_pipe_is_added(tiny_model_dir: Path) -> None:
    pipeline = spacy.blank("en")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        pipeline.add_pipe("distilsent", config={"model": str(tiny_model_dir), "load": {"backend": "nope"}})
    with pytest.raises(ValueError, match="not inside 'load'"):
        pipeline.add_pipe("distilsent", config={"load": {"model": str(tiny_model_dir)}})


def test_evaluate_uses_spacys_scorer(nlp, tiny_classifier) -> None:
    from spacy.training import Example

    texts = [t for t in TEXTS if t.strip()]
    gold = ["POSITIVE", "NEGATIVE", "POSITIVE", "NEGATIVE"]
    labels = tiny_classifier.labels
    examples = [
        Example.from_dict(nlp.make_doc(t), {"cats": {label: float(label == g) for label in labels}})
        for t, g in zip(texts, gold, strict=True)
    ]
    scores = nlp.evaluate(examples)
    predicted = [p.label for p in tiny_classifier.predict(texts)]
    f1s = []
    for label in labels:
        tp = sum(p == g == label for p, g in zip(predicted, gold, strict=True))
        fp = sum(p == label != g for p, g in zip(predicted, gold, strict=True))
        fn = sum(g == label != p for p, g in zip(predicted, gold, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    assert scores["cats_score"] == pytest.approx(sum(f1s) / len(f1s))


@pytest.mark.slow
def test_the_reference_checkpoint_through_spacy_matches_the_classifier(
    ref_model_dir: Path, ref_classifier, sst2_dev
) -> None:
    texts = sst2_dev[0][:64]
    pipeline = spacy.blank("en")
    pipeline.add_pipe("distilsent", config={"model": str(ref_model_dir), "load": {"device": "cpu"}})
    labels = [max(doc.cats, key=doc.cats.get) for doc in pipeline.pipe(texts, batch_size=16)]
    assert labels == [p.label for p in ref_classifier.predict(texts)]


def test_a_multi_label_model_is_scored_as_spacys_multilabel_textcat(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import json

    from spacy.training import Example

    multi = tmp_path / "multi"
    shutil.copytree(tiny_model_dir, multi)
    config = json.loads((multi / "config.json").read_text())
    (multi / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    pipeline = spacy.blank("en")
    pipeline.add_pipe("distilsent", config={"model": str(multi), "load": {"device": "cpu"}})
    doc = pipeline("good film")
    component = pipeline.get_pipe("distilsent")
    logits = component.classifier.logits(["good film"])[0]
    sigmoid = {label: 1 / (1 + math.exp(-x)) for label, x in zip(component.labels, logits, strict=True)}
    assert doc.cats == pytest.approx(sigmoid, abs=1e-6)
    labels = component.labels
    example = Example.from_dict(pipeline.make_doc("good film"), {"cats": {label: 1.0 for label in labels}})
    assert pipeline.evaluate([example])["cats_score_desc"] == "macro AUC"


def test_docs_serialize_and_n_process_runs_after_the_parent_used_the_model(tiny_model_dir: Path) -> None:
    """In a fresh interpreter with a time limit: a hang (torch's threads after fork) must fail, not
    stall the suite."""
    code = f"""
import spacy
from spacy.tokens import DocBin
nlp = spacy.blank("en")
nlp.add_pipe("distilsent", config={{"model": {str(tiny_model_dir)!r}, "load": {{"device": "cpu"}}}})
nlp("good film")  # the parent runs the model before spaCy forks its workers
texts = ["good film", "a bad , boring movie", "great fun", "terrible plot"] * 8
forked = list(nlp.pipe(texts, n_process=2, batch_size=4))
alone = list(nlp.pipe(texts, batch_size=4))
assert [d.cats for d in forked] == [d.cats for d in alone]
docs = DocBin(store_user_data=True, docs=forked[:2])
back = list(docs.get_docs(nlp.vocab))
assert back[1]._.distilsent == forked[1]._.distilsent and back[1]._.distilsent["label"]
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
