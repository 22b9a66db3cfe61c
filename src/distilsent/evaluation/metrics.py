"""Classification and calibration metrics on numpy arrays: small functions, checked by hand in the tests.

``probs`` is ``(n, k)`` with rows summing to one, ``labels`` is ``(n,)`` integer class ids.
"""

from __future__ import annotations

import math

import numpy as np

from distilsent.core.postprocess import softmax

__all__ = [
    "accuracy",
    "brier_score",
    "confusion_matrix",
    "coverage_curve",
    "expected_calibration_error",
    "log_loss",
    "macro_f1",
    "mcnemar_exact",
    "paired_bootstrap",
    "roc_auc",
    "softmax",
]


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probs.argmax(1) == labels))


def confusion_matrix(probs: np.ndarray, labels: np.ndarray, k: int | None = None) -> np.ndarray:
    """``m[true, predicted]`` counts."""
    k = k or probs.shape[1]
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (labels, probs.argmax(1)), 1)
    return m


def macro_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    m = confusion_matrix(probs, labels)
    tp = np.diag(m).astype(float)
    denominator = m.sum(0) + m.sum(1)
    present = denominator > 0  # a class neither predicted nor present has no F1
    return float(np.mean(2 * tp[present] / denominator[present]))


def roc_auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (binary), or the one-vs-rest macro average; None with a single class."""
    classes = np.unique(labels)
    if len(classes) < 2:
        return None
    if probs.shape[1] == 2:
        return _binary_auc(probs[:, 1], labels == 1)
    return float(np.mean([_binary_auc(probs[:, c], labels == c) for c in classes]))


def _binary_auc(score: np.ndarray, positive: np.ndarray) -> float:
    # Mann-Whitney U with average ranks for ties.
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=float)
    sorted_scores = score[order]
    i = 0
    while i < len(score):
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0))))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error between the probability vector and the one-hot label, summed over classes."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Confidence (top probability) in equal-width bins: count, mean confidence and accuracy per bin."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        out.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(mask.sum()),
                "confidence": float(confidence[mask].mean()) if mask.any() else 0.0,
                "accuracy": float(correct[mask].mean()) if mask.any() else 0.0,
            }
        )
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Sum over bins of |accuracy - confidence| weighted by the bin's share of examples."""
    n = len(labels)
    return float(
        sum(
            b["count"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(probs, labels, bins)
        )
    )


def coverage_curve(probs: np.ndarray, labels: np.ndarray, steps: int = 10) -> list[dict[str, float]]:
    """Accuracy of the predictions kept when those with top probability below a threshold abstain.

    For two labels a threshold t is the neutral band ``[1 - t, t]`` on P(label 1).
    """
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    low = 1.0 / probs.shape[1]
    rows = []
    for threshold in np.linspace(low, 1.0, steps, endpoint=False):
        kept = confidence > threshold
        rows.append(
            {
                "threshold": float(threshold),
                "coverage": float(kept.mean()),
                "accuracy": float(correct[kept].mean()) if kept.any() else float("nan"),
            }
        )
    return rows


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """McNemar's exact test on paired correctness: only the examples where exactly one model is right
    count (``a_only``, ``b_only``); under "no difference" each is a fair coin flip, and ``p_value`` is
    the two-sided binomial probability of a split at least this uneven."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n, k = a_only + b_only, min(a_only, b_only)
    # log-space binomial terms: n can be in the thousands, where 0.5 ** n underflows.
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(k + 1)
    ]
    tail = sum(math.exp(t) for t in log_terms) if n else 0.5
    return {"a_only": a_only, "b_only": b_only, "p_value": float(min(1.0, 2 * tail))}


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, *, samples: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Accuracy difference a - b on the same examples, with a 95 % bootstrap interval.

    ``p_value`` is the two-sided share of resamples on the other side of zero: small means the
    difference is unlikely to be resampling noise.
    """
    rng = np.random.default_rng(seed)
    n = len(correct_a)
    diff = correct_a.astype(float) - correct_b.astype(float)
    means = np.array([diff[rng.integers(0, n, n)].mean() for _ in range(samples)])
    observed = float(diff.mean())
    tail = np.mean(means <= 0) if observed > 0 else np.mean(means >= 0)
    return {
        "difference": observed,
        "low": float(np.percentile(means, 2.5)),
        "high": float(np.percentile(means, 97.5)),
        "p_value": float(min(1.0, 2 * tail)),
    }
