from __future__ import annotations

import numpy as np
import pytest

from distilsent.evaluation import metrics as m

# Four examples, two classes; hand-computed values below.
PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
LABELS = np.array([0, 1, 1, 0])  # predictions 0, 1, 0, 1: two right, two wrong


def test_accuracy_and_confusion() -> None:
    assert m.accuracy(PROBS, LABELS) == 0.5
    assert m.confusion_matrix(PROBS, LABELS).tolist() == [[1, 1], [1, 1]]


def test_macro_f1() -> None:
    # each class: tp=1, fp=1, fn=1 -> F1 = 2/4
    assert m.macro_f1(PROBS, LABELS) == pytest.approx(0.5)


def test_roc_auc() -> None:
    # P(1) for positives: 0.8, 0.4; negatives: 0.1, 0.7 -> pairs won: (0.8>0.1, 0.8>0.7, 0.4>0.1) = 3 of 4
    assert m.roc_auc(PROBS, LABELS) == pytest.approx(0.75)
    assert m.roc_auc(PROBS, np.array([1, 1, 1, 1])) is None


def test_roc_auc_ties_count_half() -> None:
    probs = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert m.roc_auc(probs, np.array([0, 1])) == pytest.approx(0.5)


def test_log_loss_and_brier() -> None:
    expected = -np.mean(np.log([0.9, 0.8, 0.4, 0.3]))
    assert m.log_loss(PROBS, LABELS) == pytest.approx(expected)
    # (0.1²+0.1²), (0.2²+0.2²), (0.6²+0.6²), (0.7²+0.7²)
    assert m.brier_score(PROBS, LABELS) == pytest.approx(np.mean([0.02, 0.08, 0.72, 0.98]))


def test_ece() -> None:
    # Confidences 0.9, 0.8, 0.6, 0.7 fall in four different bins (15 bins of width 1/15);
    # accuracies 1, 1, 0, 0 -> ECE = (0.1 + 0.2 + 0.6 + 0.7) / 4
    assert m.expected_calibration_error(PROBS, LABELS) == pytest.approx(0.4)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert m.expected_calibration_error(perfect, np.array([0, 1])) == pytest.approx(0.0)


def test_coverage_curve_keeps_the_confident() -> None:
    rows = m.coverage_curve(PROBS, LABELS, steps=2)  # thresholds 0.5 and 0.75
    assert rows[0] == {"threshold": 0.5, "coverage": 1.0, "accuracy": 0.5}
    assert rows[1]["coverage"] == 0.5 and rows[1]["accuracy"] == 1.0  # 0.9 and 0.8 kept, both right


def test_paired_bootstrap() -> None:
    a = np.array([1] * 90 + [0] * 10, dtype=bool)
    b = np.array([1] * 60 + [0] * 40, dtype=bool)
    stats = m.paired_bootstrap(a, b, samples=2000)
    assert stats["difference"] == pytest.approx(0.3)
    assert 0 < stats["low"] < 0.3 < stats["high"]
    assert stats["p_value"] < 0.01
    same = m.paired_bootstrap(a, a, samples=200)
    assert same["difference"] == 0 and same["low"] == same["high"] == 0


def test_mcnemar_exact_against_hand_computed_binomials() -> None:
    a = np.array([1, 1, 1, 0, 1, 1], dtype=bool)
    b = np.array([0, 0, 0, 0, 1, 1], dtype=bool)
    stats = m.mcnemar_exact(a, b)
    # 3 discordant pairs, all for a: 2 * P(X <= 0), X ~ Binomial(3, 1/2) = 2 / 8.
    assert (stats["a_only"], stats["b_only"]) == (3, 0) and stats["p_value"] == pytest.approx(0.25)
    # 10 discordant, 2 v 8: 2 * (1 + 10 + 45) / 1024.
    a = np.array([1] * 8 + [0] * 2, dtype=bool)
    assert m.mcnemar_exact(a, ~a)["p_value"] == pytest.approx(2 * 56 / 1024)
    assert m.mcnemar_exact(a, a)["p_value"] == 1.0  # no disagreement, no evidence
    big = np.array([1] * 3000 + [0] * 2900, dtype=bool)
    assert 0 < m.mcnemar_exact(big, ~big)["p_value"] < 1  # no underflow with thousands of pairs
