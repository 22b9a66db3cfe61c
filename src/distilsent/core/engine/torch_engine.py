"""PyTorch backend: ``DistilBertForSequenceClassification`` in inference mode."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from distilsent.core.engine.cpu import auto_cpu_dtype
from distilsent.core.engine.packed import PackedDistilBert, packable, packable_config, weight_names
from distilsent.core.errors import InvalidInputError, ModelFormatError
from distilsent.core.models import has_safetensors, load_weights, pickle_shards, read_model_config

__all__ = ["GradientForward", "TorchEngine", "resolve_device"]

logger = logging.getLogger(__name__)


def _one_thread_after_fork() -> None:
    # torch's OpenMP thread pool does not survive fork: once the parent has run a parallel region, a
    # forked child's next one never returns (seen with a 512x512 matmul, and with spaCy's
    # nlp.pipe(n_process=2) after one doc). One thread per child, as torch's DataLoader workers run.
    torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_one_thread_after_fork)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InvalidInputError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', not {device!r}"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} was asked for, but this torch sees no CUDA GPU")
    return resolved


class TorchEngine:
    """Runs the model with torch: bf16 on GPUs and on CPUs with native bf16 matrix units, else fp32
    (fp16 on GPUs without bf16).

    On the CPU a DistilBERT classifier stored as safetensors runs the packed forward built straight
    from its tensors: transformers is neither imported nor its model built until something asks for
    :attr:`model` (gradients for explanations, a batch that is not right-padded)."""

    backend = "torch"

    def __init__(
        self, model_dir: Path, *, device: str = "auto", threads: int | None = None, dtype: str = "auto"
    ) -> None:
        from distilsent.core.models import has_torch_weights

        if not has_torch_weights(model_dir):
            raise ModelFormatError(f"{model_dir} holds only an ONNX export; load it with backend='onnx'")

        self._device = resolve_device(device)
        if threads is not None:
            torch.set_num_threads(threads)
        torch_dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        if dtype != "auto":
            torch_dtype, self.dtype_reason = torch_dtypes[dtype], f"asked for ({dtype})"
        elif self._device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            torch_dtype = torch.bfloat16 if bf16 else torch.float16
            self.dtype_reason = "auto: GPU " + ("with bf16" if bf16 else "without bf16, so fp16")
        elif self._device.type == "cpu":
            # Checkpoints are often stored in fp16, which CPUs compute slowly and less exactly.
            chosen, self.dtype_reason = auto_cpu_dtype()
            torch_dtype = torch_dtypes[chosen]
        else:
            torch_dtype, self.dtype_reason = torch.float32, f"auto: fp32 on {self._device.type}"
        self.dtype = str(torch_dtype).removeprefix("torch.")
        self.device = str(self._device)
        self._model_dir, self._torch_dtype = Path(model_dir), torch_dtype
        self._model: torch.nn.Module | None = None
        self._model_lock = threading.Lock()
        self._gradients: GradientForward | None = None
        self._packed = self._packed_from_checkpoint() if self._device.type == "cpu" else None
        if self._packed is None:
            model = self.model
            self._parameters = sum(p.numel() for p in model.parameters())
            if self._device.type == "cpu" and packable(model):
                self._packed = PackedDistilBert(model)
        self.forward = "transformers"
        if self._packed is not None:
            self.forward = (
                "packed: no padding in matrix products, [CLS]-only last layer, "
                + (
                    "oneDNN-packed weights with GELU and residual sums inside the products"
                    if self._packed.prepacked
                    else "plain products"
                )
                + f" ({self._packed.prepack_reason})"
            )

    def _packed_from_checkpoint(self, *, prepack: bool | None = None) -> PackedDistilBert | None:
        """The packed forward built from the directory's tensors, or ``None`` where transformers must
        build the model: not safetensors, not a DistilBERT classifier, pickle shards, or tensors
        missing or renamed (which transformers converts or initializes)."""
        if not has_safetensors(self._model_dir):
            return None
        config = read_model_config(self._model_dir)
        if not packable_config(config):
            return None
        if pickle_shards(self._model_dir):  # allowed by the caller: transformers reads those
            return None
        weights = load_weights(self._model_dir)
        try:
            packed = PackedDistilBert.from_weights(config, weights, dtype=self._torch_dtype, prepack=prepack)
        except ValueError:  # tensors missing or renamed: transformers converts or initializes them
            return None
        self._parameters = sum(weights[name].numel() for name in weight_names(config["n_layers"]))
        return packed

    @property
    def model(self) -> torch.nn.Module:
        """The transformers model, in eval mode on this engine's device and dtype; where the packed
        forward was built from the checkpoint, loaded on first use."""
        with self._model_lock:
            if self._model is None:
                self._model = self._load_transformers()
            return self._model

    def gradient_forward(self) -> GradientForward:
        """A forward from word embeddings that lets gradients through, for explanations; built once.
        On the CPU, for a checkpoint the packed forward reads, the same forward with plain products
        (oneDNN's packed ones have no gradients) built from the tensors, so transformers (about
        2.4 s to import) stays out; otherwise the transformers model."""
        with self._model_lock:
            if self._gradients is None and self._model is None and self._device.type == "cpu":
                self._gradients = self._packed_from_checkpoint(prepack=False)
        if self._gradients is None:
            self._gradients = _TransformersGradients(self.model)
        return self._gradients

    def _load_transformers(self) -> torch.nn.Module:
        from transformers import AutoConfig, AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        config = AutoConfig.from_pretrained(self._model_dir)
        if not config.architectures or not any("SequenceClassification" in a for a in config.architectures):
            raise ModelFormatError(
                f"{self._model_dir} holds a {config.architectures or config.model_type} model, "
                "not a sequence classifier"
            )
        # transformers draws a progress bar per load; noise for a library call that takes a second.
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                self._model_dir,
                dtype=self._torch_dtype,
                use_safetensors=has_safetensors(self._model_dir) or None,
            )
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        return model.to(self._device).eval()

    def num_parameters(self) -> int:
        return self._parameters

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.launch(input_ids, attention_mask)()

    def launch(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Callable[[], np.ndarray]:
        """Start the model on a batch; the returned function waits for its logits.

        On a GPU this returns as soon as the work is queued: inputs go up from pinned (page-locked)
        host memory and logits come back into it without blocking, so the caller can pad and queue
        the next batch while this one runs. Elsewhere the work is done before it returns.
        """
        cuda = self._device.type == "cuda"
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        if cuda:
            # pin_memory draws on torch's caching host allocator, which reuses blocks once their
            # copies have finished; only pinned memory can be copied without blocking.
            ids, mask = ids.pin_memory(), mask.pin_memory()
        ids = ids.to(self._device, non_blocking=cuda)
        mask = mask.to(self._device, non_blocking=cuda)
        try:
            with torch.inference_mode():
                if self._packed is not None and _right_padded(attention_mask):
                    logits = self._packed(ids, mask).float()
                else:
                    logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
                if cuda:
                    # A non-blocking copy to the CPU lands in pinned memory; the event marks its end.
                    logits = logits.to("cpu", non_blocking=True)
                    copied = torch.cuda.Event()
                    copied.record()
        except torch.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            raise MemoryError(str(e)) from e
        except RuntimeError as e:
            # CPU allocators report exhaustion as a plain RuntimeError.
            if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
                raise MemoryError(str(e)) from e
            raise
        if not cuda:
            result = logits.numpy()
            return lambda: result

        def wait() -> np.ndarray:
            copied.synchronize()
            return logits.numpy()

        return wait


class GradientForward(Protocol):
    """Logits from word embeddings, differentiable in them: what Integrated Gradients integrates."""

    dtype: torch.dtype
    device: torch.device

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings ``(batch, length, dim)`` of ``input_ids``, positions not yet added."""
        ...

    def from_embeddings(self, word_vectors: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, labels)`` of right-padded word embeddings."""
        ...


class _TransformersGradients:
    """:class:`GradientForward` of a transformers sequence classifier (``inputs_embeds``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        parameter = next(model.parameters())
        self.dtype, self.device = parameter.dtype, parameter.device

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._model.get_input_embeddings()(input_ids)

    def from_embeddings(self, word_vectors: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._model(inputs_embeds=word_vectors, attention_mask=attention_mask).logits


def _right_padded(mask: np.ndarray) -> bool:
    """Whether every row of ``mask`` is ones then zeros, the layout the packed forward assumes."""
    return bool(mask.shape[1] < 2 or (mask[:, 1:] <= mask[:, :-1]).all()) and bool(mask[:, :1].all())
