from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import distilsent
from distilsent import LoadConfig, Prediction
from helpers import SCORE_ABS, approx_scores


def test_predict_one_text_returns_one_prediction(tiny_classifier) -> None:
    pred = tiny_classifier.predict("a good film")
    assert isinstance(pred, Prediction)
    assert pred.label in {"NEGATIVE", "POSITIVE"}
    assert pred.score == pred.scores[pred.label] == max(pred.scores.values())
    assert sum(pred.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert next(iter(pred.scores)) == pred.label


def test_predict_list_keeps_input_order(tiny_classifier) -> None:
    texts = ["good", "a terrible boring movie with bad actors", "fun", "the plot of the story was awful"]
    batch = tiny_classifier.predict(texts)
    assert isinstance(batch, list) and len(batch) == 4
    for text, pred in zip(texts, batch, strict=True):
        assert pred.scores == pytest.approx(tiny_classifier.predict(text).scores, abs=1e-5)


def test_repeated_texts_run_once(tiny_model_dir: Path) -> None:
    clf = distilsent.load(tiny_model_dir, device="cpu")
    calls = []
    engine = clf.engine
    clf.engine = lambda ids, mask: calls.append(len(ids)) or engine(ids, mask)
    preds = clf.predict(["good", "bad", "good", "good"])
    assert sum(calls) == 2
    assert preds[0] == preds[2] == preds[3] != preds[1]


def test_predict_empty_list(tiny_classifier) -> None:
    assert tiny_classifier.predict([]) == []


def test_predict_iter_streams_a_generator(tiny_classifier) -> None:
    texts = [f"good film {i}" if i % 2 else f"bad plot {i}" for i in range(25)]
    streamed = list(tiny_classifier.predict_iter((t for t in texts), chunk_size=7))
    expected = tiny_classifier.predict(texts)
    assert len(streamed) == len(expected)
    for got, want in zip(streamed, expected, strict=True):
        assert got.scores == pytest.approx(want.scores, abs=SCORE_ABS)


def test_top_k_and_functions(tiny_classifier) -> None:
    logits = tiny_classifier.logits(["good film"])[0]
    top1 = tiny_classifier.predict("good film", top_k=1)
    assert len(top1.scores) == 1
    raw = tiny_classifier.predict("good film", function_to_apply="none")
    assert sorted(raw.scores.values()) == pytest.approx(sorted(logits.tolist()), abs=SCORE_ABS)
    sig = tiny_classifier.predict("good film", function_to_apply="sigmoid")
    assert sig.score == pytest.approx(1 / (1 + np.exp(-logits.max())), abs=SCORE_ABS)


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        ("", ValueError, "empty"),
        ("   \n", ValueError, "empty"),
        (["ok", ""], ValueError, r"texts\[1\]"),
        (["ok", "fine", " "], ValueError, r"texts\[2\]"),
        (["ok", None], TypeError, r"texts\[1\] is missing \(null\)"),
        ([3.5], TypeError, r"texts\[0\] is float"),
        ([["nested"]], TypeError, r"texts\[0\] is list"),
        (None, TypeError, "str or a list"),
        (42, TypeError, "str or a list"),
    ],
)
def test_bad_inputs_name_the_problem(tiny_classifier, texts, error, match) -> None:
    with pytest.raises(error, match=match):
        tiny_classifier.predict(texts)


def test_predict_iter_names_the_global_index(tiny_classifier) -> None:
    with pytest.raises(ValueError, match=r"texts\[9\]"):
        list(tiny_classifier.predict_iter(["good"] * 9 + [""], chunk_size=4))


@pytest.mark.parametrize(
    ("options", "match"),
    [({"top_k": 0}, "top_k"), ({"function_to_apply": "relu"}, "function_to_apply")],
)
def test_bad_options(tiny_classifier, options, match) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_classifier.predict("good", **options)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"backend": "tensorrt"}, "unknown backend"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_length": 1000}, "max_length"),
        ({"threads": 0}, "threads"),
    ],
)
def test_load_config_validation(fields, match) -> None:
    with pytest.raises(ValueError, match=match):
        LoadConfig(**fields)


def test_load_rejects_unknown_options(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown LoadConfig fields"):
        distilsent.load(tiny_model_dir, batchsize=4)


def test_generic_labels_stay_as_they_are(tmp_path: Path) -> None:
    from helpers import build_tiny_model

    clf = distilsent.load(
        build_tiny_model(tmp_path / "m", labels=("LABEL_0", "LABEL_1", "LABEL_2")), device="cpu"
    )
    assert clf.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert set(clf.predict("good").scores) == {"LABEL_0", "LABEL_1", "LABEL_2"}


def test_ten_megabyte_text_is_truncated(tiny_classifier) -> None:
    pred = tiny_classifier.predict("good film " * 1_000_000)
    assert pred.scores == pytest.approx(tiny_classifier.predict("good film " * 63).scores, abs=1e-5)


def test_repr_and_info(tiny_classifier, tiny_model_dir: Path) -> None:
    assert repr(tiny_classifier).startswith("distilsent.Classifier(")
    info = tiny_classifier.info()
    assert info["labels"] == ["NEGATIVE", "POSITIVE"]
    assert info["backend"] == "torch" and info["device"] == "cpu"
    assert info["parameters"] > 0
    assert info["model_dir"] == str(tiny_model_dir.resolve())


def test_public_api_is_declared_once() -> None:
    import types

    public = {
        name
        for name in dir(distilsent)  # the lazily imported names included
        if not name.startswith("_") and not isinstance(getattr(distilsent, name), types.ModuleType)
    }
    # Every public name is in __all__ and nothing else is: no name exported by accident.
    assert set(distilsent.__all__) - {"__version__"} == public - {"annotations"}
    assert len(set(distilsent.__all__)) == len(distilsent.__all__)
    for name in set(distilsent.__all__) - {"__version__"}:
        assert getattr(distilsent, name).__module__.startswith("distilsent."), name
    assert {"load", "Classifier", "Prediction", "LoadConfig", "train", "TrainConfig"} <= set(
        distilsent.__all__
    )


def test_long_lists_are_tokenized_in_chunks_with_the_same_result(tiny_classifier, monkeypatch) -> None:
    import distilsent.core.classifier

    texts = [f"good film {i}" if i % 3 else "bad plot" for i in range(50)]
    whole = tiny_classifier.logits(texts)
    monkeypatch.setattr(distilsent.core.classifier, "_TOKENIZE_CHUNK", 7)
    chunks = []
    encode = tiny_classifier.tokenizer.encode_batch
    monkeypatch.setattr(
        tiny_classifier.tokenizer, "encode_batch", lambda t: chunks.append(len(t)) or encode(t)
    )
    np.testing.assert_allclose(tiny_classifier.logits(texts), whole, atol=1e-5)
    assert chunks == [7] * 4 + [6]  # 34 distinct texts


@pytest.mark.parametrize("action", ["flag", "keep"])
def test_predict_tokenizes_each_distinct_text_once(tiny_classifier, monkeypatch, action: str) -> None:
    texts = ["good film", "bad plot", "good film", "\U0001f389\U0001f389"]
    want = tiny_classifier.logits(texts)
    batches = []
    encode = tiny_classifier.tokenizer.encode_batch
    monkeypatch.setattr(
        tiny_classifier.tokenizer, "encode_batch", lambda t: batches.append(list(t)) or encode(t)
    )
    preds = tiny_classifier.predict(texts, on_out_of_scope=action, function_to_apply="none")
    assert batches == [["good film", "bad plot", "\U0001f389\U0001f389"]]
    np.testing.assert_allclose(
        [[p.scores[label] for label in tiny_classifier.labels] for p in preds], want, atol=1e-5
    )
    assert (preds[3].warning is not None) == (action == "flag")
    assert preds[0].warning is None


def test_gc_is_paused_only_inside_the_block() -> None:
    import gc

    from distilsent.core._gc import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's choice is left alone
    finally:
        gc.enable()


def test_batch_size_defaults_to_what_the_device_needs(tiny_model_dir: Path, monkeypatch) -> None:
    import distilsent.core.classifier

    assert distilsent.load(tiny_model_dir, device="cpu").batch_size == 32
    assert distilsent.load(tiny_model_dir, device="cpu", batch_size=8).batch_size == 8
    real = distilsent.core.classifier.create_engine

    def on_a_gpu(*args, **kwargs):
        engine = real(*args, **kwargs)
        engine.device = "cuda:0"
        return engine

    monkeypatch.setattr(distilsent.core.classifier, "create_engine", on_a_gpu)
    assert distilsent.load(tiny_model_dir, device="cpu").batch_size == 1024


def test_predict_iter_tokenizes_the_next_chunk_while_the_model_runs(tiny_classifier) -> None:
    import threading

    encoded_on = []
    encode = tiny_classifier.tokenizer.encode_batch

    def recording(texts):
        encoded_on.append(threading.current_thread().name)
        return encode(texts)

    tiny_classifier.tokenizer.encode_batch = recording
    try:
        texts = [f"good film {i}" for i in range(20)] + [None]
        stream = tiny_classifier.predict_iter(iter(texts), chunk_size=10)
        got = [next(stream) for _ in range(20)]  # the bad text in the last chunk waits its turn
        with pytest.raises(TypeError, match=r"texts\[20\] is missing"):
            next(stream)
    finally:
        del tiny_classifier.tokenizer.encode_batch
    assert len(encoded_on) == 2 and all(name.startswith("distilsent-tokenize") for name in encoded_on)
    for streamed, whole in zip(got, tiny_classifier.predict(texts[:20]), strict=True):
        assert streamed.scores == pytest.approx(whole.scores, abs=1e-5)


def test_dtype_is_checked_and_reported(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        LoadConfig(dtype="int4")
    with pytest.raises(ValueError, match="torch backend"):
        LoadConfig(backend="onnx", dtype="bf16")
    clf = distilsent.load(tiny_model_dir, device="cpu", dtype="bf16")
    assert clf.info()["dtype"] == "bfloat16"
    assert clf.predict("good film").label in clf.labels


def test_text_pairs_match_the_transformers_pipeline(tiny_model_dir: Path, tiny_classifier) -> None:
    import torch
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(tiny_model_dir), device="cpu", dtype=torch.float32)
    pairs = [("good film", "bad plot"), ("fun", "the story was awful " * 60), ("great actors " * 70, "dull")]
    expected = [
        pipe({"text": a, "text_pair": b}, truncation=True, max_length=128, top_k=None) for a, b in pairs
    ]
    got = tiny_classifier.predict(pairs)
    assert len(got) == 3
    for pred, want in zip(got, expected, strict=True):
        assert pred.scores == approx_scores({e["label"]: e["score"] for e in want})
    one = tiny_classifier.predict(pairs[0])
    assert isinstance(one, distilsent.Prediction) and one.scores == approx_scores(got[0].scores)
    assert tiny_classifier.predict_pairs([]) == []
    with pytest.raises(ValueError, match=r"texts\[1\]\[0\] is empty"):
        tiny_classifier.predict([("a", "b"), ("", "c")])
    with pytest.raises(TypeError, match=r"texts\[0\] is tuple, not a string"):
        tiny_classifier.predict([("a", "b", "c")])  # not a pair: read as a list of texts


def test_per_call_batch_size_truncation_and_max_length_match_the_pipeline(
    tiny_model_dir: Path, tiny_classifier
) -> None:
    import torch
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(tiny_model_dir), device="cpu", dtype=torch.float32)
    texts = ["good film", "the story was awful " * 10, "great actors and a dull plot " * 3]
    want = pipe(texts, batch_size=2, truncation=True, max_length=16, top_k=None)
    got = tiny_classifier.predict(texts, batch_size=2, max_length=16)
    for pred, expected in zip(got, want, strict=True):
        assert pred.scores == approx_scores({e["label"]: e["score"] for e in expected})
    loaded = tiny_classifier.batch_size
    assert tiny_classifier.predict(texts, batch_size=1)[1].scores == approx_scores(
        tiny_classifier.predict(texts)[1].scores
    )
    assert tiny_classifier.batch_size == loaded  # a per-call size is not kept
    # Different from the loaded max_length (128): the long text is cut at 16 tokens, the short one not.
    assert tiny_classifier.predict(texts[0], max_length=16).scores == approx_scores(
        tiny_classifier.predict(texts[0]).scores
    )
    assert tiny_classifier.predict(texts[1], max_length=16).score != tiny_classifier.predict(texts[1]).score
    with pytest.raises(
        ValueError, match=r"texts\[1\] is longer than max_length \(16 tokens\) and truncation=False"
    ):
        tiny_classifier.predict(texts, max_length=16, truncation=False)
    assert len(tiny_classifier.predict(texts, truncation=False)) == 3  # all fit in 128
    for bad, message in (
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"max_length": 1000}, "max_length must be between 3 and 512"),
        ({"truncation": "yes"}, "truncation must be True or False"),
    ):
        with pytest.raises(ValueError, match=message):
            tiny_classifier.predict(texts, **bad)
    pair = tiny_classifier.predict(("good film", "the story was awful " * 10), max_length=16)
    expected = pipe(
        {"text": "good film", "text_pair": "the story was awful " * 10},
        truncation=True,
        max_length=16,
        top_k=None,
    )
    assert pair.scores == approx_scores({e["label"]: e["score"] for e in expected})


def test_info_states_where_plain_transformers_truncates_differently(tiny_model: Path) -> None:
    import json

    config_path = tiny_model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = 512
    config_path.write_text(json.dumps(config))
    info = distilsent.load(tiny_model, device="cpu").info()
    assert "model_max_length 512" in info["max_length_note"] and "at 128" in info["max_length_note"]
    assert "max_length_note" not in distilsent.load(tiny_model, device="cpu", max_length=512).info()
