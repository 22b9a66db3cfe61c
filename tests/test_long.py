from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import distilsent
from distilsent.core.tokenization import TextTokenizer
from helpers import SCORE_ABS

LONG = " ".join(f"good film {i} bad plot" for i in range(200))


def test_chunking_a_short_text_equals_the_plain_prediction(tiny_model_dir: Path, tiny_classifier) -> None:
    chunked = distilsent.load(tiny_model_dir, device="cpu", long="chunk")
    for text in ["good film", "a terrible, boring movie with bad actors"]:
        pred = chunked.predict(text)
        assert pred.windows == 1
        assert pred.scores == pytest.approx(tiny_classifier.predict(text).scores, abs=SCORE_ABS)


def test_windows_cover_the_text_with_overlap(tiny_model_dir: Path) -> None:
    tok = TextTokenizer(tiny_model_dir, max_length=32)
    content = tok._plain.encode(LONG, add_special_tokens=False).ids
    windows = tok.windows(LONG, stride=6, max_windows=1000)
    assert all(w[0] == tok.cls_id and w[-1] == tok.sep_id and len(w) <= 32 for w in windows)
    inner = [w[1:-1] for w in windows]
    assert inner[0] == content[:30]
    assert inner[1][:6] == inner[0][-6:]  # the stride is shared
    rebuilt = inner[0] + [t for w in inner[1:] for t in w[6:]]
    assert rebuilt == content
    assert len(tok.windows(LONG, stride=6, max_windows=3)) == 3


@pytest.mark.parametrize("aggregate", ["mean", "weighted", "max-confidence"])
def test_chunked_prediction_reports_windows(tiny_model_dir: Path, aggregate: str) -> None:
    clf = distilsent.load(tiny_model_dir, device="cpu", long="chunk", aggregate=aggregate, stride=16)
    pred = clf.predict(LONG)
    assert pred.windows > 5 and pred.to_dict()["windows"] == pred.windows
    assert sum(pred.scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_tail_and_head_tail_truncation(tiny_model_dir: Path) -> None:
    text = "good " * 100 + "bad " * 100
    head = TextTokenizer(tiny_model_dir, max_length=10).encode([text])[0]
    tail = TextTokenizer(tiny_model_dir, max_length=10, truncation_side="tail").encode([text])[0]
    both = TextTokenizer(tiny_model_dir, max_length=10, truncation_side="head+tail").encode([text])[0]
    good, bad = head[1], tail[1]
    assert good != bad
    assert head[1:-1] == [good] * 8 and tail[1:-1] == [bad] * 8
    assert both[1:-1] == [good] * 4 + [bad] * 4
    short = TextTokenizer(tiny_model_dir, max_length=10, truncation_side="tail").encode(["good bad"])[0]
    assert short == [*head[:2], bad, head[-1]]


def test_neutral_band(tiny_model_dir: Path, tiny_classifier) -> None:
    texts = ["good film", "bad plot", "fun", "awful story", "the dog", "cute"]
    p1 = tiny_classifier.predict_proba(texts)[:, 1]
    low, high = float(np.quantile(p1, 0.25)), float(np.quantile(p1, 0.75))
    clf = distilsent.load(tiny_model_dir, device="cpu", neutral_band=f"{low}:{high}", neutral_label="MIXED")
    for pred, p in zip(clf.predict(texts), p1, strict=True):
        assert (pred.label == "MIXED") == (low <= p <= high)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"neutral_band": "0.7:0.3"}, "low < high"),
        ({"neutral_band": "half"}, "0.35:0.65"),
        ({"long": "summarise"}, "long must be"),
        ({"truncation_side": "middle"}, "truncation_side"),
        ({"aggregate": "median"}, "aggregate"),
        ({"stride": 200, "long": "chunk"}, "stride"),
    ],
)
def test_option_validation(fields, match) -> None:
    with pytest.raises(ValueError, match=match):
        distilsent.LoadConfig(**fields)


def test_neutral_band_needs_two_labels(tmp_path: Path) -> None:
    from helpers import build_tiny_model

    model = build_tiny_model(tmp_path / "m", labels=("A", "B", "C"))
    with pytest.raises(ValueError, match="two-label"):
        distilsent.load(model, device="cpu", neutral_band="0.4:0.6")
    # The same check serves per-request bands (the HTTP server's neutral_band field).
    clf = distilsent.load(model, device="cpu")
    assert clf.band(None) is None
    with pytest.raises(ValueError, match="two-label"):
        clf.band("0.4:0.6")
