"""``distilsent eval``: metrics on a labelled file, and a report a person would rather look at than read.

The report directory holds ``metrics.json`` (everything, machine-readable), ``report.md`` and
``report.html`` (the same tables, with the plots inline), and PNG plots drawn with matplotlib: the
reliability diagram, the confusion matrix, the score histogram per class, accuracy by length, and
accuracy against coverage for the neutral band.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilsent.core.classifier import Classifier
from distilsent.core.errors import InvalidInputError, MissingExtraError
from distilsent.evaluation import metrics as m
from distilsent.formats import LabelledData, encode_labels

__all__ = ["EvalResult", "evaluate", "write_report"]

LENGTH_BUCKETS = ((1, 5), (6, 10), (11, 20), (21, 40), (41, None))  # words


@dataclass
class EvalResult:
    """Predictions and metrics of one model on one labelled file."""

    model: str
    labels: list[str]
    texts: list[str]
    y: np.ndarray
    probs: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> np.ndarray:
        return self.probs.argmax(1) == self.y


def _bucket_name(low: int, high: int | None) -> str:
    return f"{low}+ words" if high is None else f"{low}-{high} words"


def evaluate(clf: Classifier, data: LabelledData) -> EvalResult:
    """Run ``clf`` on ``data`` and compute every metric; labels unknown to the model raise ``DataError``."""
    y = np.array(encode_labels(data, dict(enumerate(clf.labels))))
    raw = None
    if data.pairs is not None and clf.config.long != "truncate":
        raise InvalidInputError("text pairs are truncated, never chunked: evaluate them with long='truncate'")
    if clf.config.long == "truncate":
        # One inference pass gives both the calibrated scores and, for comparison, the raw ones.
        logits = clf.logits(data.inputs())
        probs = m.softmax(logits, clf.temperature)
        if clf.temperature != 1.0:
            raw = m.softmax(logits)
    else:
        probs = clf.predict_proba(data.texts)
    # A pair is shown as the model reads it, the two texts around its separator.
    shown = data.texts if data.pairs is None else [f"{a} [SEP] {b}" for a, b in zip(data.texts, data.pairs)]
    result = EvalResult(model=str(clf.model_dir), labels=clf.labels, texts=shown, y=y, probs=probs)
    k = len(clf.labels)
    out: dict[str, Any] = {
        "model": str(clf.model_dir),
        "data": str(data.path),
        "examples": len(y),
        "labels": clf.labels,
        "accuracy": m.accuracy(probs, y),
        "macro_f1": m.macro_f1(probs, y),
        "log_loss": m.log_loss(probs, y),
        "brier": m.brier_score(probs, y),
        "ece": m.expected_calibration_error(probs, y),
        "temperature": clf.temperature,
        "confusion_matrix": m.confusion_matrix(probs, y, k).tolist(),
        "reliability": m.reliability_bins(probs, y),
        "coverage": m.coverage_curve(probs, y),
    }
    auc = m.roc_auc(probs, y)
    out["roc_auc"] = auc
    if auc is None:
        out["notes"] = ["ROC-AUC needs examples of at least two classes; this file has one"]
    if raw is not None:
        out["ece_uncalibrated"] = m.expected_calibration_error(raw, y)
        out["log_loss_uncalibrated"] = m.log_loss(raw, y)
    words = np.array([len(t.split()) for t in data.texts])
    correct = result.correct
    out["by_length"] = []
    for low, high in LENGTH_BUCKETS:
        mask = (words >= low) & (words <= (high or 10**9))
        if mask.any():
            out["by_length"].append(
                {
                    "bucket": _bucket_name(low, high),
                    "count": int(mask.sum()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    wrong = np.flatnonzero(~correct)
    worst = wrong[np.argsort(-probs[wrong].max(1), kind="stable")][:20]
    out["confident_mistakes"] = [
        {
            "index": int(i),
            "text": shown[i],
            "label": clf.labels[y[i]],
            "predicted": clf.labels[int(probs[i].argmax())],
            "score": float(probs[i].max()),
        }
        for i in worst
    ]
    result.metrics = out
    return result


def compare(a: EvalResult, b: EvalResult) -> dict[str, Any]:
    """Paired bootstrap on the accuracy difference a - b (same examples, same order), and McNemar's
    exact test on the examples where the two disagree."""
    stats: dict[str, Any] = dict(m.paired_bootstrap(a.correct, b.correct))
    stats["mcnemar"] = m.mcnemar_exact(a.correct, b.correct)
    stats["model_a"], stats["model_b"] = a.model, b.model
    stats["significant"] = not (stats["low"] <= 0 <= stats["high"])
    return stats


def _plots(result: EvalResult, out: Path) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingExtraError("report plots", "report", "matplotlib") from e
    mt = result.metrics
    files = {}

    fig, ax = plt.subplots(figsize=(5, 5))
    bins = [b for b in mt["reliability"] if b["count"]]
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    ax.bar(
        centers,
        [b["accuracy"] for b in bins],
        width=1 / len(mt["reliability"]),
        edgecolor="black",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(
        [b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="crimson", label="bin mean"
    )
    ax.set(xlabel="confidence (top score)", ylabel="accuracy", title=f"Reliability (ECE {mt['ece']:.3f})")
    ax.legend(loc="upper left")
    files["reliability"] = _save(fig, out / "reliability.png")

    fig, ax = plt.subplots(figsize=(4.5, 4))
    cm = np.array(mt["confusion_matrix"])
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(result.labels)), result.labels)
    ax.set_yticks(range(len(result.labels)), result.labels)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    files["confusion"] = _save(fig, out / "confusion.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    positive = result.probs[:, -1]
    for c, name in enumerate(result.labels):
        ax.hist(positive[result.y == c], bins=20, range=(0, 1), alpha=0.6, label=f"true {name}")
    ax.set(xlabel=f"P({result.labels[-1]})", ylabel="texts", title="Score histogram per class")
    ax.legend()
    files["scores"] = _save(fig, out / "scores.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = mt["by_length"]
    ax.bar([r["bucket"] for r in rows], [r["accuracy"] for r in rows])
    for i, r in enumerate(rows):
        ax.text(i, r["accuracy"], f"n={r['count']}", ha="center", va="bottom", fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="accuracy", title="Accuracy by length")
    files["length"] = _save(fig, out / "length.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    cov = [r for r in mt["coverage"] if r["coverage"] > 0]
    ax.plot([r["coverage"] for r in cov], [r["accuracy"] for r in cov], "o-")
    ax.set(
        xlabel="coverage (share not abstained)",
        ylabel="accuracy of kept",
        title="Neutral band: coverage vs accuracy",
    )
    ax.invert_xaxis()
    files["coverage"] = _save(fig, out / "coverage.png")
    return files


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _comparison_text(c: dict[str, Any]) -> str:
    return (
        f"Accuracy of {c['model_a']} minus {c['model_b']}: {100 * c['difference']:+.2f} points, 95 % "
        f"paired-bootstrap interval [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}], p = {c['p_value']:.3f}: "
        + ("a real difference." if c["significant"] else "within resampling noise.")
        + f" McNemar's exact test: {c['mcnemar']['a_only']} examples right only for the first, "
        f"{c['mcnemar']['b_only']} only for the second, p = {c['mcnemar']['p_value']:.3f}."
    )


def _summary_rows(mt: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("examples", f"{mt['examples']:,}"),
        ("accuracy", f"{100 * mt['accuracy']:.2f} %"),
        ("macro-F1", f"{mt['macro_f1']:.4f}"),
        ("ROC-AUC", "n/a (one class)" if mt["roc_auc"] is None else f"{mt['roc_auc']:.4f}"),
        ("log-loss", f"{mt['log_loss']:.4f}"),
        ("Brier score", f"{mt['brier']:.4f}"),
        ("ECE (15 bins)", f"{mt['ece']:.4f}"),
        ("temperature", f"{mt['temperature']:.3f}"),
    ]
    if "ece_uncalibrated" in mt:
        rows.append(("ECE before calibration", f"{mt['ece_uncalibrated']:.4f}"))
    return rows


def write_report(result: EvalResult, out: Path, comparison: dict[str, Any] | None = None) -> Path:
    """Write metrics.json, report.md, report.html and the PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    mt = dict(result.metrics)
    if comparison is not None:
        mt["compare"] = comparison
    (out / "metrics.json").write_text(json.dumps(mt, indent=2) + "\n")
    plots = _plots(result, out)

    md = [f"# Evaluation of `{mt['model']}` on `{mt['data']}`", "", "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in _summary_rows(mt)]
    verdict = _comparison_text(comparison) if comparison is not None else None
    if verdict is not None:
        md += ["", "## Comparison", verdict]
    md += ["", "## Accuracy by length", "| bucket | texts | accuracy |", "|---|---|---|"]
    md += [f"| {r['bucket']} | {r['count']} | {100 * r['accuracy']:.2f} % |" for r in mt["by_length"]]
    md += [
        "",
        "## Neutral band: coverage vs accuracy",
        "| threshold | coverage | accuracy of kept |",
        "|---|---|---|",
    ]
    md += [
        f"| {r['threshold']:.2f} | {100 * r['coverage']:.1f} % | {100 * r['accuracy']:.2f} % |"
        for r in mt["coverage"]
        if r["coverage"] > 0
    ]
    md += [
        "",
        "## The 20 most confident mistakes",
        "| score | true | predicted | text |",
        "|---|---|---|---|",
    ]
    md += [
        f"| {x['score']:.3f} | {x['label']} | {x['predicted']} | {x['text'].replace('|', '/')} |"
        for x in mt["confident_mistakes"]
    ]
    md += [""] + [f"![{name}]({file})" for name, file in plots.items()]
    (out / "report.md").write_text("\n".join(md) + "\n")

    def table(headers: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    parts = [
        f"<h1>Evaluation</h1><p>Model <code>{html.escape(mt['model'])}</code> "
        f"on <code>{html.escape(mt['data'])}</code></p>",
        table(["metric", "value"], [list(r) for r in _summary_rows(mt)]),
    ]
    if verdict is not None:
        parts.append(f"<h2>Comparison</h2><p>{html.escape(verdict)}</p>")
    parts += [f'<figure><img src="{file}" alt="{name}"></figure>' for name, file in plots.items()]
    parts.append("<h2>The 20 most confident mistakes</h2>")
    parts.append(
        table(
            ["score", "true", "predicted", "text"],
            [[f"{x['score']:.3f}", x["label"], x["predicted"], x["text"]] for x in mt["confident_mistakes"]],
        )
    )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "figure{display:inline-block;margin:0.5em}img{max-width:480px}"
    )
    head = f"<meta charset='utf-8'><title>distilsent evaluation</title><style>{style}</style>"
    page = f"<!doctype html><html><head>{head}</head><body>{''.join(parts)}</body></html>"
    (out / "report.html").write_text(page)
    return out
