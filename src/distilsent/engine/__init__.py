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
    max_tokens: int | None = None,
) -> tuple[np.ndarray, int]:
    """Logits for every sequence in ``ids``, in input order, and the batch size that worked.

    Sequences are sorted by length so each batch pads little; a batch holds at most ``batch_size``
    sequences and, with ``max_tokens``, at most that many tokens once padded (long texts then go in
    small batches, short ones in big batches). When a batch does not fit in memory the batch size is
    halved and the batch retried; the smaller size is kept for the rest.
    """
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lengths, kind="stable")
    out: np.ndarray | None = None
    start = 0
    while start < len(order):
        end = min(start + batch_size, len(order))
        if max_tokens is not None:
            # Sorted ascending, so the last member sets the padded width: shrink until it fits.
            while end - start > 1 and (end - start) * lengths[order[end - 1]] > max_tokens:
                end = start + max(1, min(end - start - 1, max_tokens // int(lengths[order[end - 1]])))
        chosen = order[start:end]
        try:
            logits = engine(*pad([ids[i] for i in chosen]))
        except MemoryError:
            if batch_size == 1:
                raise
            batch_size //= 2
            if max_tokens is not None:
                max_tokens //= 2
            logger.warning("out of memory; retrying with batch size %d", batch_size)
            continue
        if out is None:
            out = np.empty((len(ids), logits.shape[1]), dtype=np.float32)
        out[chosen] = logits
        start = end
        if on_progress is not None:
            on_progress(len(chosen))
    return (out if out is not None else np.empty((0, 0), dtype=np.float32)), batch_size
