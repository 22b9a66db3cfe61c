"""From logits to results: softmax/sigmoid, the stored temperature, neutral bands, and ``Prediction``.

Every option list that callers (API, CLI, server) offer lives here or in :mod:`distilsent.core.engine`,
once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distilsent.core.errors import InvalidInputError

__all__ = [
    "AGGREGATES",
    "FUNCTIONS",
    "LONG_MODES",
    "TEMPERATURE_KEY",
    "TRUNCATION_SIDES",
    "Prediction",
    "apply_function",
    "parse_band",
    "softmax",
    "top_margin",
]

FUNCTIONS = ("softmax", "sigmoid", "none")
"""How logits become scores (``function_to_apply``), as in the transformers pipeline."""
LONG_MODES = ("truncate", "chunk")
TRUNCATION_SIDES = ("head", "tail", "head+tail")
AGGREGATES = ("mean", "weighted", "max-confidence")
TEMPERATURE_KEY = "distilsent_temperature"
"""config.json key holding the temperature written by ``distilsent calibrate``."""


@dataclass(frozen=True, repr=False)
class Prediction:
    """One classified text."""

    label: str
    """The most likely label."""
    score: float
    """The probability (or raw score, with ``function_to_apply="none"``) of ``label``."""
    scores: dict[str, float] = field(repr=True)
    """Every label's probability, most likely first (only the ``top_k`` best when that is set)."""
    windows: int | None = field(default=None, repr=False, compare=False)
    """How many windows a long text was split into (``long="chunk"`` only)."""
    warning: str | None = field(default=None, compare=False)
    """Why the text is out of the model's scope ('not English', 'no known words'), or None."""

    def __repr__(self) -> str:
        # The warning only when there is one: most results have none.
        warning = "" if self.warning is None else f", warning={self.warning!r}"
        return f"Prediction(label={self.label!r}, score={self.score!r}, scores={self.scores!r}{warning})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "score": self.score, "scores": dict(self.scores)}
        if self.windows is not None:
            out["windows"] = self.windows
        if self.warning is not None:
            out["warning"] = self.warning
        return out


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, stable for large logits."""
    z = np.exp((logits - logits.max(axis=1, keepdims=True)) / temperature)
    return z / z.sum(axis=1, keepdims=True)


def top_margin(logits: np.ndarray) -> np.ndarray:
    """Per row, how far the best logit is above the second: small where a label is nearly a tie,
    which is where a slightly perturbed model (int8, bf16) changes it."""
    top2 = np.sort(np.asarray(logits, dtype=np.float64), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def apply_function(function: str, logits: np.ndarray) -> np.ndarray:
    """``function_to_apply`` on a logit matrix."""
    if function == "softmax":
        return softmax(logits)
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


def parse_band(neutral_band: str | None) -> tuple[float, float] | None:
    """'LOW:HIGH' as numbers, checked; None stays None."""
    if neutral_band is None:
        return None
    try:
        low, high = (float(x) for x in str(neutral_band).split(":"))
    except ValueError:
        raise InvalidInputError(f"neutral_band must look like '0.35:0.65', not {neutral_band!r}") from None
    if not 0 <= low < high <= 1:
        raise InvalidInputError(f"neutral_band needs 0 <= low < high <= 1, got {low}:{high}")
    return low, high
