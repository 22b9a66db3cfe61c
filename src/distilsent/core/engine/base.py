"""The one interface every inference backend implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["Engine"]


class Engine(Protocol):
    """Padded token batches in, float32 logits out; nothing else is backend-specific.

    Backends raise ``MemoryError`` when a batch does not fit, so that the batch runner can halve the
    batch and retry without knowing which framework ran out.
    """

    backend: str
    """Short backend name, e.g. ``"torch"``."""
    device: str
    """Where inference runs, e.g. ``"cpu"`` or ``"cuda:0"``."""
    dtype: str
    """What the model computes in, e.g. ``"float32"``, ``"bfloat16"`` or ``"int8"``."""
    dtype_reason: str
    """Why that dtype: asked for, or what ``dtype='auto'`` saw on this machine."""
    forward: str
    """What runs the forward pass, e.g. ``"transformers"`` or ``"onnxruntime CPUExecutionProvider"``."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits of shape ``(batch, num_labels)`` as float32."""
        ...

    def num_parameters(self) -> int:
        """Parameter count of the loaded model."""
        ...
