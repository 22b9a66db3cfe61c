"""ONNX export with ONNX Runtime's transformer fusions, int8 quantization, and an export cache.

The graph is traced from the eager attention implementation: that is the pattern ONNX Runtime's BERT
optimizer recognises, so each layer's attention becomes one fused ``Attention`` kernel and the
embeddings, GELUs and residual LayerNorms fuse as well. The directory written holds ``model.onnx``
next to ``config.json`` and the tokenizer: the layout Optimum's ``ORTModelForSequenceClassification``
loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import Config
from ._exceptions import DistilsentError, MissingExtraError
from ._version import __version__

__all__ = [
    "ExportConfig",
    "ExportResult",
    "cached_onnx",
    "export",
    "export_onnx",
    "fp32_nodes",
    "quantize_blockwise",
    "quantize_int8",
    "write_int8",
]

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"
INT8_BLOCK = 128
_COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass
class ExportConfig(Config):
    """What ``distilsent export`` writes."""

    model: str
    """Model to export: 'default', a model directory, or a hub id."""
    output: str | None = None
    """Output directory; default: ``./<model directory name>-onnx``."""
    int8: bool = False
    """Also write an int8-quantized ``model_quantized.onnx``."""
    opset: int = 17
    """ONNX opset to export with."""
    dev: str | None = None
    """Labelled file on which fp32 and int8 accuracy are compared (with ``int8``)."""
    max_drop: float = 0.5
    """Refuse to write an int8 model that loses more than this many accuracy points on ``dev``."""
    force: bool = False
    """Write the int8 model even when it loses more than ``max_drop``."""

    def __post_init__(self) -> None:
        if self.opset < 14:
            raise ValueError(f"opset must be at least 14 (scaled-dot-product attention), got {self.opset}")
        if self.max_drop < 0:
            raise ValueError(f"max_drop is in accuracy points and must not be negative, got {self.max_drop}")
        if self.dev is not None and not self.int8:
            raise ValueError("--dev compares fp32 with int8 accuracy; add --int8")


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise MissingExtraError("the ONNX backend", "onnx", e.name or "onnxruntime") from e


def _cls_only_last_layer(model: Any) -> Any:
    """The classifier with its last layer computed for the ``[CLS]`` row only.

    The head reads nothing but ``[CLS]``, so the last layer needs keys and values for every token but
    its query, output projection and feed-forward network for that one row: about an eighth less work,
    for identical logits (checked against the full model in the tests).
    """
    import torch

    class ClsOnlyLastLayer(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model
            layers = model.distilbert.transformer.layer
            self.last = layers[-1]
            model.distilbert.transformer.layer = layers[:-1]

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            m, attention = self.model, self.last.attention
            x = m.distilbert(input_ids=input_ids, attention_mask=attention_mask)[0]
            batch, length, dim = x.shape
            heads = m.config.n_heads
            q = attention.q_lin(x[:, :1]).view(batch, 1, heads, dim // heads).transpose(1, 2)
            k = attention.k_lin(x).view(batch, length, heads, dim // heads).transpose(1, 2)
            v = attention.v_lin(x).view(batch, length, heads, dim // heads).transpose(1, 2)
            scores = torch.matmul(q, k.transpose(-1, -2)) * attention.scaling
            scores = scores.masked_fill(attention_mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
            context = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(batch, 1, dim)
            h = self.last.sa_layer_norm(attention.out_lin(context) + x[:, :1])
            h = self.last.output_layer_norm(self.last.ffn(h) + h)
            return m.classifier(torch.relu(m.pre_classifier(h[:, 0])))

    return ClsOnlyLastLayer(model).eval()


def export_onnx(
    model_dir: Path, output: Path, *, opset: int = 17, optimize: bool = True, fuse_attention: bool = True
) -> Path:
    """Export ``model_dir`` to ``output/model.onnx`` (fp32, fused); return the ONNX file's path.

    ``fuse_attention=False`` leaves each attention as its matrix products (as fast in fp32 on the
    2-core CPU): the int8 recipe quantizes the query/key/value projections, which the fused
    ``Attention`` kernel would keep in fp32."""
    _require_onnx()
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    model.config.return_dict = False
    config = model.config
    traced = _cls_only_last_layer(model) if config.model_type == "distilbert" else model
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
        dynamic = {0: "batch", 1: "sequence"}
        with warnings.catch_warnings():
            # The tracer warns about Python control flow on shapes, which is constant for this graph.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                traced,
                example,
                str(raw),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        target = output / ONNX_FILE
        if optimize:
            from onnxruntime.transformers import optimizer
            from onnxruntime.transformers.fusion_options import FusionOptions

            options = FusionOptions("bert")
            options.enable_attention = fuse_attention
            with _scratch_cwd():
                fused = optimizer.optimize_model(
                    str(raw),
                    model_type="bert",
                    num_heads=config.n_heads,
                    hidden_size=config.dim,
                    optimization_options=options,
                )
            stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
            logger.info("ONNX Runtime fusions: %s", stats)
            fused.save_model_to_file(str(target))
        else:
            shutil.copy(raw, target)
    for name in _COPIED:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, output / name)
    return target


@contextlib.contextmanager
def _scratch_cwd() -> Iterator[None]:
    """Run ONNX Runtime's tools in a throwaway working directory.

    When its symbolic shape inference cannot type every output (ORT's own fused operators), ONNX
    Runtime saves a full copy of the model, weights included, as ``sym_shape_infer_temp.onnx`` plus an
    external-data file into the current directory and never removes it.
    """
    previous = Path.cwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(previous)


def fp32_nodes(
    onnx_path: Path,
    *,
    embeddings: bool = True,
    layers: tuple[int, ...] = (),
    attention: bool = False,
    last: bool = False,
) -> list[str]:
    """Names of the nodes to keep in fp32: embeddings, whole layers, every attention, the last layer.

    Names follow our exporter and ORT's fusions: ``EmbedLayerNormalization_0``, ``Attention_{i}`` and
    ``.../distilbert/transformer/layer.{i}/...`` for a layer's other matrix products; the last layer,
    computed for ``[CLS]`` only by our own module, has the only matrix products outside
    ``/distilbert/`` (``/q_lin/MatMul``, ``/ffn/lin1/MatMul``, ...).
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    keep = []
    for node in graph.node:
        if (
            (embeddings and node.op_type == "EmbedLayerNormalization")
            or (attention and node.op_type == "Attention")
            or (last and node.op_type == "MatMul" and not node.name.startswith("/distilbert/"))
            or any(
                node.name == f"Attention_{i}" or node.name.startswith(f"/distilbert/transformer/layer.{i}/")
                for i in layers
            )
        ):
            keep.append(node.name)
    return keep


def int8_fp32_nodes(fp32_path: Path) -> list[str]:
    """The nodes the dynamic int8 recipe (before :func:`write_int8`) kept in fp32: embeddings, the first
    layer, and the attention blocks; ``benchmarks/int8_options.py`` still measures it.

    Dynamic int8 quantizes activations with one scale per tensor, and the LayerNorm outputs that feed
    the attention projections carry a few outlier channels; quantizing them costs accuracy and makes a
    text's label depend on the other texts in its batch. Measured with ``benchmarks/int8_options.py``
    on the reference checkpoint (SST-2 dev): plain per-channel int8 agrees with fp32 on 98.4-98.6 % of
    labels depending on batch composition; this recipe on 99.1-99.5 %.
    """
    return fp32_nodes(fp32_path, embeddings=True, layers=(0,), attention=True)


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    *,
    per_channel: bool = True,
    exclude: list[str] | None = None,
    reduce_range: bool = False,
) -> Path:
    """Dynamic int8 quantization of the matrix products; ``exclude`` names nodes left in fp32.

    ``reduce_range`` stores 7-bit weights: without VNNI, x86 multiplies uint8 × int8 with an
    instruction whose int16 pair sums can saturate, and 7-bit weights rule that out."""
    _require_onnx()
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path, int8_path = Path(fp32_path).resolve(), Path(int8_path).resolve()
    with _scratch_cwd():
        quantize_dynamic(
            fp32_path,
            int8_path,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            nodes_to_exclude=exclude or [],
            # Shape inference cannot type the outputs of ORT's fused (contrib) operators.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    return int8_path


def quantize_blockwise(fp32_path: Path, int8_path: Path, *, block_size: int = INT8_BLOCK) -> Path:
    """int8 weights with a scale per ``block_size`` inputs, multiplied in int8 (ORT's ``MatMulNBits``).

    Activations are quantized per token and block at run time rather than with one scale per
    batch, so a text's logits do not depend on the other texts in its batch, and the LayerNorm
    outlier channels that made dynamic int8 keep the attention in fp32 cost little.
    """
    _require_onnx()
    import onnx

    # The quantizer's module calls logging.basicConfig(level=INFO) when imported, which would print
    # a line per graph node and every other library's INFO records; undo that.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as e:  # it needs the onnx-ir package
        raise MissingExtraError("int8 quantization", "onnx", e.name or "onnx-ir") from e
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(fp32_path)),
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,  # int8 × int8 products; the default (0) dequantizes and multiplies in fp32
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(int8_path), use_external_data_format=False)
    return Path(int8_path)


def write_int8(model_dir: Path, fp32_path: Path, int8_path: Path, *, opset: int = 17) -> Path:
    """distilsent's int8 model: blockwise int8 of an export with unfused attention.

    Chosen with ``benchmarks/int8_options.py`` (agreement with fp32 labels on SST-2 dev and on train
    phrases, texts/s). Without torch weights to export from, ``fp32_path`` (fused attention, which
    stays fp32) is quantized instead.
    """
    from .models import has_torch_weights

    if not has_torch_weights(model_dir):
        return quantize_blockwise(fp32_path, int8_path)
    with tempfile.TemporaryDirectory() as tmp:
        unfused = export_onnx(model_dir, Path(tmp), opset=opset, fuse_attention=False)
        return quantize_blockwise(unfused, int8_path)


def _weights_key(model_dir: Path, int8: bool) -> str:
    # The int8 recipe is part of the key, so a cache written by another recipe is not reused.
    recipe = f"blockwise8-{INT8_BLOCK}-unfused" if int8 else "fp32"
    h = hashlib.sha256(f"distilsent {__version__} {recipe}".encode())
    index = model_dir / "model.safetensors.index.json"
    names = ["config.json", "model.safetensors", index.name, "pytorch_model.bin", ONNX_FILE]
    if index.is_file():  # a sharded checkpoint: its shards are the weights
        names += sorted(set(json.loads(index.read_text())["weight_map"].values()))
    for name in names:
        path = model_dir / name
        if path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:20]


def cache_root() -> Path:
    """Where exports are cached: ``$DISTILSENT_CACHE``, else ``~/.cache/distilsent``."""
    return Path(os.environ.get("DISTILSENT_CACHE") or Path.home() / ".cache" / "distilsent")


def cached_onnx(model_dir: Path, *, int8: bool = False) -> Path:
    """The ONNX file for ``model_dir``: shipped in the directory, cached, or exported now and cached."""
    name = INT8_FILE if int8 else ONNX_FILE
    if (model_dir / name).is_file():
        return model_dir / name
    target = cache_root() / "onnx" / _weights_key(model_dir, int8)
    if (target / name).is_file():
        return target / name
    logger.warning("exporting %s to ONNX%s (cached in %s)", model_dir, " int8" if int8 else "", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Export into a private directory and rename, so concurrent loads never see half a file.
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        shipped = model_dir / ONNX_FILE
        fp32 = shipped if shipped.is_file() else export_onnx(model_dir, staging)
        if int8:
            write_int8(model_dir, fp32, staging / INT8_FILE)
        try:
            staging.rename(target)
        except OSError:
            if not (target / name).is_file():  # lost a race only if the winner's file is there
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / name


@dataclass
class ExportResult:
    """What ``export`` wrote, and the fp32/int8 accuracy comparison when a dev file was given."""

    output: Path
    """The directory holding ``model.onnx`` (and ``model_quantized.onnx``), config and tokenizer."""
    int8_path: Path | None = None
    """The int8 model, when one was written."""
    fp32_accuracy: float | None = None
    """fp32 ONNX accuracy on the dev file."""
    int8_accuracy: float | None = None
    """int8 accuracy on the dev file."""
    agreement: float | None = None
    """Fraction of dev texts where int8 and fp32 give the same label."""


def check_int8_drop(fp32_accuracy: float, int8_accuracy: float, max_drop: float, force: bool) -> None:
    """Refuse an int8 model that loses more than ``max_drop`` accuracy points, unless forced."""
    drop = 100 * (fp32_accuracy - int8_accuracy)
    if drop > max_drop and not force:
        raise DistilsentError(
            f"int8 loses {drop:.2f} accuracy points on dev (fp32 {100 * fp32_accuracy:.2f} %, "
            f"int8 {100 * int8_accuracy:.2f} %), more than --max-drop {max_drop}; "
            "the int8 model was not written (pass --force to keep it anyway)"
        )


def export(config: ExportConfig) -> ExportResult:
    """Export ``config.model`` to ONNX (and int8), checking int8 accuracy on ``config.dev``."""
    from .models import resolve_model

    model_dir = resolve_model(config.model)
    output = Path(config.output) if config.output else Path.cwd() / f"{model_dir.name}-onnx"
    fp32 = export_onnx(model_dir, output, opset=config.opset)
    result = ExportResult(output=output)
    if not config.int8:
        return result
    int8 = write_int8(model_dir, fp32, output / INT8_FILE, opset=config.opset)
    if config.dev is not None:
        import numpy as np

        from .api import load
        from .data import encode_labels, read_labelled

        data = read_labelled(config.dev)
        fp32_clf = load(output, backend="onnx", device="cpu")
        labels = np.array(encode_labels(data, dict(enumerate(fp32_clf.labels))))
        fp32_pred = fp32_clf.logits(data.texts).argmax(1)
        int8_pred = load(output, backend="onnx-int8", device="cpu").logits(data.texts).argmax(1)
        result.fp32_accuracy = float((fp32_pred == labels).mean())
        result.int8_accuracy = float((int8_pred == labels).mean())
        result.agreement = float((fp32_pred == int8_pred).mean())
        try:
            check_int8_drop(result.fp32_accuracy, result.int8_accuracy, config.max_drop, config.force)
        except DistilsentError:
            int8.unlink()
            raise
    result.int8_path = int8
    return result
