"""Inference backends behind one protocol, and the batch runner they share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .base import Engine

__all__ = ["BACKENDS", "Engine", "create_engine", "run_batches"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def create_engine(
    backend: str, model_dir: Path, *, device: str = "auto", threads: int | None = None
) -> Engine:
    """Instantiate ``backend`` for the model in ``model_dir``; backends are imported only when asked for."""
    from ..models import has_torch_weights

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "torch" if has_torch_weights(model_dir) else "onnx"
    if backend.startswith("onnx"):
        from .onnx_engine import OnnxEngine

        return OnnxEngine(model_dir, int8=backend == "onnx-int8", device=device, threads=threads)
    from .torch_engine import TorchEngine

    return TorchEngine(model_dir, device=device, threads=threads)


def run_batches(
    engine: Engine,
    ids: Sequence[Sequence[int]],
    pad: Callable[[Sequence[Sequence[int]]], tuple[np.ndarray, np.ndarray]],
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Logits for every sequence in ``ids``, in input order, and the batch size that worked.

    Sequences are sorted by length so each batch pads little. When a batch does not fit in memory
    the batch size is halved and the batch retried; the smaller size is kept for the rest.
    """
    order = np.argsort([len(x) for x in ids], kind="stable")
    out: np.ndarray | None = None
    start = 0
    while start < len(order):
        chosen = order[start : start + batch_size]
        try:
            logits = engine(*pad([ids[i] for i in chosen]))
        except MemoryError:
            if batch_size == 1:
                raise
            batch_size //= 2
            logger.warning("out of memory; retrying with batch size %d", batch_size)
            continue
        if out is None:
            out = np.empty((len(ids), logits.shape[1]), dtype=np.float32)
        out[chosen] = logits
        start += len(chosen)
        if on_progress is not None:
            on_progress(len(chosen))
    return (out if out is not None else np.empty((0, 0), dtype=np.float32)), batch_size
