from __future__ import annotations

import numpy as np

from distilsent.core.postprocess import softmax, top_margin


def test_top_margin_is_the_gap_between_the_two_best_logits() -> None:
    two = np.array([[0.0, 0.3], [2.0, 0.0]], dtype=np.float32)
    three = np.array([[-1.0, 4.0, 3.5], [1.0, 1.0, -2.0]])
    np.testing.assert_allclose(top_margin(two), [0.3, 2.0], rtol=1e-6)
    np.testing.assert_allclose(top_margin(three), [0.5, 0.0])  # a tie is a margin of zero


def test_softmax_is_stable_for_large_logits() -> None:
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]])
