"""ONNX Runtime backend: the fused fp32 graph, or its int8 quantization, on CPU (or CUDA if present)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from distilsent.core.errors import InvalidInputError, MissingExtraError, ModelFormatError

__all__ = ["OnnxEngine"]

logger = logging.getLogger(__name__)


class OnnxEngine:
    """Runs ``model.onnx`` (exported and cached on first use) with ONNX Runtime."""

    def __init__(
        self, model_dir: Path, *, int8: bool = False, device: str = "auto", threads: int | None = None
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingExtraError("the ONNX backend", "onnx", "onnxruntime") from e
        from distilsent.core.engine.onnx_export import cached_onnx, int8_weights_warning

        self.backend = "onnx-int8" if int8 else "onnx"
        self.dtype = "int8" if int8 else "float32"
        self.dtype_reason = "the onnx backends run fp32 or int8; bf16 is the torch backend's"
        self.path = cached_onnx(model_dir, int8=int8)
        if int8 and (warning := int8_weights_warning(self.path.parent)):
            logger.warning(warning)
            self.dtype_reason = warning
        available = ort.get_available_providers()
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise InvalidInputError(f"the onnx backend runs on 'cpu' or 'cuda', not {device!r}")
        use_cuda = device.startswith("cuda") or (device == "auto" and "CUDAExecutionProvider" in available)
        if use_cuda and "CUDAExecutionProvider" not in available:
            raise InvalidInputError("device 'cuda' was asked for, but this onnxruntime has no CUDA provider")
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if use_cuda and not int8
            else ["CPUExecutionProvider"]
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types for unreadable graphs
            raise ModelFormatError(f"{self.path} is not a loadable ONNX model: {e}") from None
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.forward = f"onnxruntime {self.session.get_providers()[0]}"

    def num_parameters(self) -> int:
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        return int(sum(np.prod(t.dims) for t in graph.initializer if len(t.dims) > 0))

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        try:
            (logits,) = self.session.run(["logits"], {k: v for k, v in feed.items() if k in self._inputs})
        except Exception as e:
            if "alloc" in str(e).lower() or "memory" in str(e).lower():
                raise MemoryError(str(e)) from e
            raise
        return np.asarray(logits, dtype=np.float32)
