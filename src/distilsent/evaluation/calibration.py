"""Temperature scaling: one scalar T, fitted by negative log-likelihood on held-out data.

Dividing every logit by the same positive T leaves the argmax, so calibration never changes a label;
it only makes a score of 0.9 mean "right about 90 % of the time". The fitted T is stored in the model's
``config.json`` under ``distilsent_temperature``, where ``distilsent.load`` picks it up; other tools
(transformers included) ignore the extra key.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from distilsent.core.models import read_model_config
from distilsent.core.postprocess import TEMPERATURE_KEY

__all__ = ["fit_temperature", "nll", "save_temperature"]


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising NLL; NLL is unimodal in log T, so a golden-section search suffices."""
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def save_temperature(model_dir: Path, temperature: float) -> None:
    config = read_model_config(model_dir)
    config[TEMPERATURE_KEY] = round(temperature, 6)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
