"""Inference backends behind one protocol, and the batch runner they share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from distilsent.core.engine.base import Engine
from distilsent.core.engine.cpu import (
    MATRIX_FLAGS,
    auto_cpu_dtype,
    cpu_flags,
    cpu_model,
    has_native_bf16,
    int8_weight_type,
)
from distilsent.core.errors import InvalidInputError
from distilsent.core.tokenization import TokenBatch

__all__ = [
    "BACKENDS",
    "DTYPES",
    "MATRIX_FLAGS",
    "Engine",
    "auto_cpu_dtype",
    "cpu_flags",
    "cpu_model",
    "create_engine",
    "has_native_bf16",
    "int8_weight_type",
    "partition",
    "run_batches",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
DTYPES = ("auto", "fp32", "bf16", "fp16")


def create_engine(
    backend: str,
    model_dir: Path,
    *,
    device: str = "auto",
    threads: int | None = None,
    dtype: str = "auto",
) -> Engine:
    """Instantiate ``backend`` for the model in ``model_dir``; backends are imported only when asked for."""
    from distilsent.core.models import has_torch_weights

    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "torch" if has_torch_weights(model_dir) else "onnx"
    if backend.startswith("onnx"):
        from distilsent.core.engine.onnx_engine import OnnxEngine

        return OnnxEngine(model_dir, int8=backend == "onnx-int8", device=device, threads=threads)
    from distilsent.core.engine.torch_engine import TorchEngine

    return TorchEngine(model_dir, device=device, threads=threads, dtype=dtype)


# A model call costs about as much as this many padded tokens on top of its tokens (measured on the
# 2-core CPU with the default model: cutting 64 mixed-length texts this way beats fixed batches of 32).
_CALL_OVERHEAD_TOKENS = 200
_PARTITION_BLOCK = 4096
# The search looks at most this many candidate batch starts per cut; with larger batches it cuts only
# between groups of batch_size // 32 sequences. Sorted neighbours have nearly equal lengths, so the
# padding this adds is negligible, and the search stays a few µs per group — not per text, which at
# GPU batch sizes (1,024) would cost more host time than the GPU spends on the text.
_WINDOW = 32


def partition(
    lengths: np.ndarray, batch_size: int, max_tokens: int | None = None, overhead: int = _CALL_OVERHEAD_TOKENS
) -> list[int]:
    """Batch sizes that cut ascending ``lengths`` into consecutive batches of least total cost.

    A batch costs its padded tokens (size × longest) plus ``overhead``; each holds at most
    ``batch_size`` sequences and, with ``max_tokens``, at most that many padded tokens (a single
    sequence always fits). Dynamic programming over blocks of a few thousand groups of sequences (one
    sequence per group up to batch size 63; ``batch_size // 32`` from there).
    """
    group = max(1, batch_size // _WINDOW)
    if max_tokens is not None:
        # A group must fit the token cap on its own, or the cap could not be kept.
        group = max(1, min(group, max_tokens // max(int(lengths[-1]) if len(lengths) else 1, 1)))
    window = batch_size // group
    sizes: list[int] = []
    for start in range(0, len(lengths), _PARTITION_BLOCK * group):
        block = lengths[start : start + _PARTITION_BLOCK * group]
        # Group g holds sequences [g*group, (g+1)*group) of the block; the last may be short.
        longest = block[group - 1 :: group].astype(np.float64)
        if len(block) % group:
            longest = np.append(longest, float(block[-1]))
        ends = np.minimum(np.arange(1, len(longest) + 1) * group, len(block)).astype(np.float64)
        n = len(longest)
        cost = np.full(n + 1, np.inf)
        cost[0] = 0.0
        cut = np.zeros(n + 1, dtype=np.int64)
        starts = np.concatenate(([0.0], ends))
        for j in range(1, n + 1):
            lo = max(0, j - window)
            count = ends[j - 1] - starts[lo:j]
            padded = count * longest[j - 1]
            total = cost[lo:j] + padded + overhead
            if max_tokens is not None:
                total[(padded > max_tokens) & (count > 1)] = np.inf
            k = int(np.argmin(total))
            cost[j], cut[j] = total[k], lo + k
        block_sizes = []
        j = n
        while j > 0:
            block_sizes.append(int(starts[j] - starts[cut[j]]))
            j = int(cut[j])
        sizes += block_sizes[::-1]
    return sizes


def run_batches(
    engine: Engine,
    tokens: TokenBatch,
    pad_id: int,
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
    max_tokens: int | None = None,
) -> tuple[np.ndarray, int]:
    """Logits for every sequence in ``tokens``, in input order, and the batch size that worked.

    Sequences are sorted by length and cut into batches by :func:`partition`: at most ``batch_size``
    sequences and (with ``max_tokens``) padded tokens each, with as little padding as the per-call
    overhead allows. Engines with a ``launch`` method (a GPU) get the next batch queued before the
    last one's logits are read back, so the device never waits for the host between batches. When a
    batch does not fit in memory the batch size is halved and the rest re-cut; the smaller size is kept.
    """
    lengths = tokens.lengths
    order = np.argsort(lengths, kind="stable")
    launch: Callable[[np.ndarray, np.ndarray], Callable[[], np.ndarray]] = getattr(
        engine, "launch", lambda ids, mask: _ready(engine(ids, mask))
    )
    out: np.ndarray | None = None
    pending: tuple[np.ndarray, Callable[[], np.ndarray]] | None = None

    def collect(rows: np.ndarray, result: Callable[[], np.ndarray]) -> None:
        nonlocal out
        logits = result()
        if out is None:
            out = np.empty((len(tokens), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
        if on_progress is not None:
            on_progress(len(rows))

    start = 0
    while start < len(order):
        for size in partition(lengths[order[start:]], batch_size, max_tokens):
            rows = order[start : start + size]
            try:
                result = launch(*tokens.padded(rows, pad_id))
            except MemoryError:
                if batch_size == 1:
                    raise
                batch_size //= 2
                if max_tokens is not None:
                    max_tokens //= 2
                logger.warning("out of memory; retrying with batch size %d", batch_size)
                break
            if pending is not None:
                collect(*pending)
            pending = rows, result
            start += size
    if pending is not None:
        collect(*pending)
    return (out if out is not None else np.empty((0, 0), dtype=np.float32)), batch_size


def _ready(logits: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: logits
