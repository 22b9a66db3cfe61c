"""ONNX export with ONNX Runtime's transformer fusions, blockwise int8 quantization, and an export cache.

The graph is traced from the eager attention implementation: that is the pattern ONNX Runtime's BERT
optimizer recognises, so each layer's attention becomes one fused ``Attention`` kernel and the
embeddings, GELUs and residual LayerNorms fuse as well. The directory written holds ``model.onnx``
next to ``config.json`` and the tokenizer: the layout Optimum's ``ORTModelForSequenceClassification``
loads. The ONNX engine gets its files from :func:`cached_onnx`; ``distilsent export`` writes them
where the user asks.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from distilsent._version import __version__
from distilsent.core.engine.cpu import int8_weight_type
from distilsent.core.errors import InvalidInputError, MissingExtraError, ModelFormatError
from distilsent.core.models import cache_dir, has_torch_weights
from distilsent.core.tokenization import TokenBatch

__all__ = [
    "INT8_FILE",
    "INT8_RECIPES",
    "ONNX_FILE",
    "QUANTIZATION_FILE",
    "SMOOTHED_RECIPES",
    "cached_onnx",
    "export_onnx",
    "export_smoothed",
    "fp32_products",
    "freeze_activation_scales",
    "input_ranges",
    "int8_weights_warning",
    "quantize_blockwise",
    "quantize_dynamic_int8",
    "read_quantization_record",
    "scratch_cwd",
    "smoothing_scale",
    "smoothing_scales",
    "write_int8",
    "write_quantization_record",
    "write_smoothed_int8",
]

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"
INT8_BLOCK = 128
QUANTIZATION_FILE = "quantization.json"
"""What ``export --int8 --calibration`` measured and chose, next to the int8 model."""
# How much of the activations' outliers smoothing moves into the weights. Chosen on 726 held-out SST-2
# training sentences of 6+ words, one text at a time, against the fp32 export's margins (default
# model, three draws of 500 calibration sentences): 0.8 left a logit-margin RMSE of 0.054-0.064 where
# 0.5 (the paper's default) left 0.080-0.088, at the same speed.
SMOOTH_ALPHA = 0.8
INT8_RECIPES = ("auto", "blockwise", "smoothed-dynamic", "smoothed-static")
"""``auto`` measures each with calibration texts and keeps the fastest that agrees with fp32, or a
batch-independent one nearly as fast (``distilsent.export.choose_int8``)."""
SMOOTHED_RECIPES = ("smoothed-dynamic", "smoothed-static")
"""The recipes that fit SmoothQuant-style scales on calibration texts (and so need them)."""
_COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


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
    2-core CPU): the int8 recipes quantize the query/key/value projections, which the fused
    ``Attention`` kernel would keep in fp32."""
    _require_onnx()
    return _trace(_load_eager(model_dir), model_dir, output, opset, optimize, fuse_attention)


def _load_eager(model_dir: Path) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    model.config.return_dict = False
    return model


def _trace(
    model: Any, model_dir: Path, output: Path, opset: int, optimize: bool, fuse_attention: bool
) -> Path:
    import torch

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
            with scratch_cwd():
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
def scratch_cwd() -> Iterator[None]:
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


def quantize_blockwise(
    fp32_path: Path,
    int8_path: Path,
    *,
    block_size: int = INT8_BLOCK,
    only: Callable[[str], bool] | None = None,
) -> Path:
    """int8 weights with a scale per ``block_size`` inputs, multiplied in int8 (ORT's ``MatMulNBits``).

    Activations are quantized per token and block at run time rather than with one scale per
    batch, so a text's logits do not depend on the other texts in its batch, and the LayerNorm
    outlier channels that made dynamic int8 keep the attention in fp32 cost little. ``only``, where
    given, picks the matrix products to quantize by node name; the rest stay as they are.
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

    model = onnx.load(str(fp32_path))
    others = [n.name for n in model.graph.node if only is not None and not only(n.name)]
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,  # int8 × int8 products; the default (0) dequantizes and multiplies in fp32
        op_types_to_quantize=("MatMul",),
        nodes_to_exclude=others,
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
    if not has_torch_weights(model_dir):
        return quantize_blockwise(fp32_path, int8_path)
    with tempfile.TemporaryDirectory() as tmp:
        unfused = export_onnx(model_dir, Path(tmp), opset=opset, fuse_attention=False)
        return quantize_blockwise(unfused, int8_path)


_PRODUCT_INPUTS = {
    "qkv": "attention.q_lin",
    "out": "attention.out_lin",
    "lin1": "ffn.lin1",
    "lin2": "ffn.lin2",
}
"""The module whose input each of a DistilBERT block's products reads (query, key and value share one)."""


def input_ranges(
    model: Any, calibration: list[list[int]], *, pad_id: int = 0, products: tuple[str, ...] = ("qkv", "lin1")
) -> dict[str, tuple[Any, Any]]:
    """Per-channel minimum and maximum of the input of each of ``products`` (``"qkv"``, ``"out"``,
    ``"lin1"``, ``"lin2"``) in every block of a DistilBERT classifier, over the real tokens of the
    ``calibration`` token ids, by ``"{layer}.{product}"``."""
    import torch

    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    current_mask: list[torch.Tensor] = []

    def observe(name: str) -> Any:
        def hook(module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            # Only real tokens: padding rows' activations would set scales no real text needs.
            x = inputs[0].detach()[current_mask[0].bool()]
            if len(x):
                low, high = x.amin(0), x.amax(0)
                if name in ranges:
                    low, high = torch.minimum(ranges[name][0], low), torch.maximum(ranges[name][1], high)
                ranges[name] = (low, high)

        return hook

    hooks = [
        layer.get_submodule(_PRODUCT_INPUTS[product]).register_forward_pre_hook(observe(f"{i}.{product}"))
        for i, layer in enumerate(model.distilbert.transformer.layer)
        for product in products
    ]
    try:
        with torch.inference_mode():
            for batch in _calibration_batches(calibration, pad_id):
                ids, mask = (torch.from_numpy(a) for a in batch)
                current_mask[:] = [mask]
                model(input_ids=ids, attention_mask=mask)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def smoothing_scale(low: Any, high: Any, weight_max: Any, alpha: float = SMOOTH_ALPHA) -> Any:
    """SmoothQuant's per-channel scale ``max|x|^alpha / max|w|^(1 - alpha)`` of an input whose channels
    range over ``[low, high]``, read by weights whose columns reach ``weight_max`` at most."""
    import torch

    amax = torch.maximum(low.abs(), high.abs())
    return (amax.clamp(min=1e-5) ** alpha / weight_max.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)


def smoothing_scales(
    model: Any,
    calibration: list[list[int]],
    *,
    pad_id: int = 0,
    alpha: float = SMOOTH_ALPHA,
    ranges: dict[str, tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """The smoothed recipe's per-channel scales of a DistilBERT classifier (see :func:`export_smoothed`):
    ``"{layer}.qkv"`` for the query/key/value projections' shared input, ``"{layer}.lin1"`` for the
    first feed-forward projection's; divide that input by the scale, multiply the weights' columns.
    ``ranges``, where given, are :func:`input_ranges` already measured on ``calibration``."""
    import torch

    if ranges is None:
        ranges = input_ranges(model, calibration, pad_id=pad_id)
    scales = {}
    for i, layer in enumerate(model.distilbert.transformer.layer):
        a = layer.attention
        for name, group in ((f"{i}.qkv", [a.q_lin, a.k_lin, a.v_lin]), (f"{i}.lin1", [layer.ffn.lin1])):
            if name not in ranges:
                raise InvalidInputError("the smoothed int8 recipe needs at least one calibration text")
            wmax = torch.stack([lin.weight.detach().abs().amax(0) for lin in group]).amax(0)
            scales[name] = smoothing_scale(*ranges[name], wmax, alpha)
    return scales


def export_smoothed(
    model_dir: Path,
    output: Path,
    calibration: list[list[int]],
    *,
    pad_id: int = 0,
    alpha: float = SMOOTH_ALPHA,
    opset: int = 17,
) -> Path:
    """An fp32 export (unfused attention) whose activation outliers are moved into the weights.

    SmoothQuant-style (Xiao et al., 2023): the input channels of each layer's query/key/value and
    first feed-forward projections are divided by ``s = max|x|^alpha / max|w|^(1 - alpha)`` (``x``
    measured on the ``calibration`` token ids) and the weights' columns multiplied by it, so the
    product is unchanged but the activations, quantized with one scale per tensor by dynamic int8,
    have no channel far above the rest. Those inputs are LayerNorm outputs that also feed residual
    connections, so the division is a ``Mul`` in front of the projection, not folded into the norm.
    """
    _require_onnx()
    import torch

    model = _load_eager(model_dir)
    if model.config.model_type != "distilbert":
        raise ModelFormatError(
            f"the smoothed int8 recipe needs a DistilBERT model, not {model.config.model_type}"
        )
    scales = smoothing_scales(model, calibration, pad_id=pad_id, alpha=alpha)

    class Smoothed(torch.nn.Module):
        """``linear(x * inverse_scale)``, the weights' columns already multiplied by the scale."""

        def __init__(self, linear: Any, inverse_scale: torch.Tensor) -> None:
            super().__init__()
            self.linear = linear
            self.register_buffer("inverse_scale", inverse_scale)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x * self.inverse_scale)

    for name, scale in scales.items():
        owner = model.distilbert.transformer.layer[int(name.split(".")[0])]
        parent = owner.attention if name.endswith("qkv") else owner.ffn
        for attr in ("q_lin", "k_lin", "v_lin") if name.endswith("qkv") else ("lin1",):
            lin = getattr(parent, attr)
            with torch.no_grad():
                lin.weight.mul_(scale[None, :])
            setattr(parent, attr, Smoothed(lin, 1.0 / scale))
    return _trace(model, model_dir, output, opset, optimize=True, fuse_attention=False)


def quantize_dynamic_int8(
    fp32_path: Path,
    int8_path: Path,
    *,
    per_channel: bool = True,
    exclude: list[str] | None = None,
    reduce_range: bool = False,
    weight_type: str = "int8",
) -> Path:
    """Dynamic int8 of the matrix products (ORT's ``quantize_dynamic``); ``exclude`` names nodes kept
    fp32. Activations get one scale per tensor at run time, so a text's logits move slightly with
    the other texts of its batch (its label, in the measured cases, almost never).

    ``reduce_range`` stores 7-bit weights: without VNNI, x86 multiplies uint8 × int8 with an
    instruction whose int16 pair sums can saturate, and 7-bit weights rule that out (at a cost: on
    the smoothed default model, dev agreement with fp32 fell from 99.54 % to 99.31 %). ``weight_type``
    ``"uint8"`` rules it out too, without the lost bit (see :func:`int8_weight_type`)."""
    if weight_type not in ("int8", "uint8"):
        raise ValueError(f"weight_type must be 'int8' or 'uint8', not {weight_type!r}")
    _require_onnx()
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path, int8_path = Path(fp32_path).resolve(), Path(int8_path).resolve()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # quantize_dynamic logs advice through the root logger ("consider pre-processing"), not a named one.
    root.setLevel(logging.ERROR)
    try:
        with scratch_cwd(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                fp32_path,
                int8_path,
                weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
                per_channel=per_channel,
                reduce_range=reduce_range,
                nodes_to_exclude=exclude or [],
                # Matrix products only. By default the quantizer also stores the embedding tables
                # (Gather) as int8 with one scale per table, which moved every token's input before
                # the first layer: on the default model most of the smoothed recipe's label changes.
                op_types_to_quantize=["MatMul", "Gemm"],
                # Shape inference cannot type the outputs of ORT's fused (contrib) operators.
                extra_options={"DefaultTensorType": TensorProto.FLOAT},
            )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return int8_path


def write_smoothed_int8(
    model_dir: Path,
    int8_path: Path,
    calibration: list[list[int]],
    *,
    pad_id: int = 0,
    opset: int = 17,
    weight_type: str | None = None,
    fp32_first_layers: int = 0,
    static: bool = False,
    second_ffn: str = "fp32",
) -> Path:
    """distilsent's fast int8: dynamic per-channel int8 of a smoothed export, the second feed-forward
    projection (its input, a GELU output, has outliers smoothing does not tame) and the last layer's
    one-row products kept in fp32.

    Measured on the default model, 2-core Xeon with AMX, alpha 0.8 (``benchmarks/throughput.py``):
    99.54 % label agreement with fp32 on SST-2 dev, the worse of batches of 32 and one text at a
    time, at 1.52× the fp32 export's texts/s (plain dynamic int8, ``benchmarks/int8_options.py``:
    98.28 %); ``export``'s gate passed it on held-out train sentences (99.80 %).

    ``weight_type`` (``"int8"`` or ``"uint8"``) defaults to what :func:`int8_weight_type` picks for
    this CPU. uint8 weights gave the same labels on the AMX Xeon (99.54 % dev agreement in batches,
    99.77 % one at a time, 100 % on long sentences) at 449 texts/s against int8's 706 there.
    ``fp32_first_layers`` keeps that many leading layers' products in fp32 too: on the default model
    one layer raised held-out agreement by 0.02 pt and cost about 11 % of the speed
    (``benchmarks/int8_calibration_draws.py --fp32-first-layers 0,1``), so the default is none.
    ``static`` fixes each activation's int8 scale on the ``calibration`` texts instead of measuring
    it per batch (:func:`freeze_activation_scales`): the ``smoothed-static`` recipe.
    ``second_ffn="blockwise"`` runs the second feed-forward projections (but the last layer's
    one-row one) as blockwise int8 (:func:`quantize_blockwise`, activations scaled per token and
    block, which copes with GELU's outliers) instead of fp32; measured, not the default
    (``benchmarks/int8_calibration_draws.py --second-ffn fp32,blockwise``).
    """
    if fp32_first_layers < 0:
        raise ValueError(f"fp32_first_layers must be 0 or more, not {fp32_first_layers}")
    if second_ffn not in ("fp32", "blockwise"):
        raise ValueError(f"second_ffn must be 'fp32' or 'blockwise', not {second_ffn!r}")
    with tempfile.TemporaryDirectory() as tmp:
        smoothed = export_smoothed(model_dir, Path(tmp), calibration, pad_id=pad_id, opset=opset)
        if second_ffn == "blockwise":
            # Only the full-width ones: the last layer's runs on [CLS] alone and costs little.
            smoothed = quantize_blockwise(
                smoothed,
                Path(tmp) / "second-ffn.onnx",
                only=lambda name: "/lin2/" in name and name.startswith("/distilbert/"),
            )
        keep = fp32_products(smoothed, lambda name: _keeps_fp32(name, fp32_first_layers))
        weights = weight_type or int8_weight_type()[0]
        quantize_dynamic_int8(smoothed, int8_path, exclude=keep, weight_type=weights)
    if static:
        freeze_activation_scales(int8_path, calibration, pad_id=pad_id)
    return int8_path


def freeze_activation_scales(int8_path: Path, calibration: list[list[int]], *, pad_id: int = 0) -> Path:
    """Rewrite a dynamic int8 model (:func:`quantize_dynamic_int8`) in place with each activation's
    int8 scale and zero point fixed: the range its real tokens take over the ``calibration`` token
    ids, where dynamic int8 measures it anew for every batch.

    A text's logits then no longer depend on the other texts of its batch, and no product waits for
    a pass over its input to find the range. Values outside the calibrated range saturate. Each
    ``MatMulInteger -> Cast -> Mul`` chain becomes one ``MatMulIntegerToFloat``, the kernel ONNX
    Runtime fuses dynamic int8 into, which it does not fuse for a fixed scale.
    """
    _require_onnx()
    import onnx
    from onnx import helper, numpy_helper

    int8_path = Path(int8_path)
    model = onnx.load(str(int8_path))
    graph = model.graph
    dynamic = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    if not dynamic:
        raise ModelFormatError(f"{int8_path} has no dynamically quantized activation to fix")
    ranges = _activation_ranges(model, [n.input[0] for n in dynamic], calibration, pad_id)
    nodes = []
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        low, high = ranges[node.input[0]]
        # The uint8 range of ONNX's DynamicQuantizeLinear: it always holds zero, so zero is exact.
        low, high = min(low, 0.0), max(high, 0.0)
        scale = (high - low) / 255 if high > low else 1.0
        zero_point = int(np.clip(round(-low / scale), 0, 255))
        quantized, scale_name, zero_name = node.output
        graph.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), scale_name))
        graph.initializer.append(numpy_helper.from_array(np.array(zero_point, np.uint8), zero_name))
        nodes.append(
            helper.make_node(
                "QuantizeLinear", [node.input[0], scale_name, zero_name], [quantized], name=node.name
            )
        )
    del graph.node[:]
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    graph.node.extend(_fuse_integer_products(nodes, shapes, {n.output[1] for n in dynamic}))
    onnx.save(model, str(int8_path))
    return int8_path


def _activation_ranges(
    model: Any, names: list[str], calibration: list[list[int]], pad_id: int
) -> dict[str, tuple[float, float]]:
    """The smallest and largest value each tensor in ``names`` takes on the real tokens (or, for
    the ``[CLS]``-only tensors of the last layer, the rows) of ``calibration``, in batches of 32."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if not calibration:
        raise InvalidInputError("fixing int8 activation scales needs at least one calibration text")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    low = dict.fromkeys(names, np.inf)
    high = dict.fromkeys(names, -np.inf)
    for ids, mask in _calibration_batches(calibration, pad_id):
        feed = {"input_ids": ids, "attention_mask": mask}
        for name, value in zip(names, session.run(names, feed), strict=True):
            rows = value.reshape(-1, value.shape[-1])
            if len(rows) == mask.size:  # one row per token: padding rows would set ranges no text needs
                rows = rows[mask.reshape(-1).astype(bool)]
            low[name] = min(low[name], float(rows.min()))
            high[name] = max(high[name], float(rows.max()))
    return {name: (low[name], high[name]) for name in names}


def _calibration_batches(
    calibration: list[list[int]], pad_id: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(input_ids, attention_mask)`` of the calibration token ids, right-padded, 32 texts at a time."""
    tokens = TokenBatch.from_lists(calibration)
    for start in range(0, len(tokens), 32):
        yield tokens.padded(np.arange(start, min(start + 32, len(tokens))), pad_id)


def _fuse_integer_products(
    nodes: list[Any], constants: dict[str, tuple[int, ...]], activation_scales: set[str]
) -> list[Any]:
    """``nodes`` with each ``MatMulInteger -> Cast -> Mul(Mul(activation scale, weight scale))`` chain,
    and the bias ``Add`` after it where there is one, as one ``MatMulIntegerToFloat`` in the
    product's place: every other input of the fused node (scales, zero points, bias) is a constant
    by then, so the order still runs. ``constants``: the initializers' shapes."""
    from onnx import helper

    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in nodes for out in node.output}
    dropped: set[int] = set()
    fused: dict[int, Any] = {}
    for product in (n for n in nodes if n.op_type == "MatMulInteger"):
        cast = consumers[product.output[0]][0]
        rescale = consumers.get(cast.output[0], [None])[0]
        scales = (
            producer.get(next((i for i in rescale.input if i != cast.output[0]), "")) if rescale else None
        )
        if (
            cast.op_type != "Cast"
            or rescale is None
            or rescale.op_type != "Mul"
            or scales is None
            or scales.op_type != "Mul"
            or not activation_scales & set(scales.input)
        ):
            raise ModelFormatError(
                f"unexpected dynamic int8 graph at {product.name}: not MatMulInteger -> Cast -> Mul"
            )
        a, b, a_zero, b_zero = product.input
        a_scale = next(i for i in scales.input if i in activation_scales)
        b_scale = next(i for i in scales.input if i != a_scale)
        inputs, output = [a, b, a_scale, b_scale, a_zero, b_zero], rescale.output[0]
        following = consumers.get(output, [])
        if len(following) == 1 and following[0].op_type == "Add":
            (bias,) = [i for i in following[0].input if i != output] or [""]
            if constants.get(bias) == constants.get(b, ())[1:]:  # added in the same pass over the output
                inputs.append(bias)
                output = following[0].output[0]
                dropped.add(id(following[0]))
        fused[id(product)] = helper.make_node(
            "MatMulIntegerToFloat", inputs, [output], name=product.name, domain="com.microsoft"
        )
        dropped.update((id(cast), id(rescale)))
        if len(consumers[scales.output[0]]) == 1:
            dropped.add(id(scales))
    return [fused.get(id(n), n) for n in nodes if id(n) not in dropped]


def fp32_products(onnx_path: Path, keep: Callable[[str], bool]) -> list[str]:
    """The names to pass as ``quantize_dynamic_int8(exclude=)`` so that the matrix products whose node
    name ``keep`` accepts stay fp32."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    kept = [n for n in graph.node if n.op_type in ("MatMul", "Gemm") and keep(n.name)]
    # The quantizer rewrites a Gemm (the classifier head) as a MatMul named after it before it
    # reads the exclusions: without its new name too, the head was quantized after all.
    return [n.name for n in kept] + [f"{n.name}_MatMul" for n in kept if n.op_type == "Gemm"]


def _keeps_fp32(name: str, first_layers: int = 0) -> bool:
    """Matrix products the smoothed recipe leaves in fp32: every second feed-forward projection, and
    those of the last layer that run on the ``[CLS]`` row alone (and the head): one row costs little
    in fp32, and one row quantized with its own per-tensor scale is where dynamic int8 errs most.
    ``first_layers`` keeps every product of that many leading layers too."""
    if "/lin2/" in name:
        return True
    if any(name.startswith(f"/distilbert/transformer/layer.{i}/") for i in range(first_layers)):
        return True
    return not name.startswith(("/distilbert/", "/k_lin/", "/v_lin/"))


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


def cached_onnx(model_dir: Path, *, int8: bool = False) -> Path:
    """The ONNX file for ``model_dir``: shipped in the directory, cached, or exported now and cached."""
    name = INT8_FILE if int8 else ONNX_FILE
    if (model_dir / name).is_file():
        return model_dir / name
    target = cache_dir() / "onnx" / _weights_key(model_dir, int8)
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


def write_quantization_record(directory: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (the int8 choice and its measurements) as ``directory/quantization.json``."""
    path = Path(directory) / QUANTIZATION_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_quantization_record(directory: Path) -> dict[str, Any] | None:
    """The record ``write_quantization_record`` left in ``directory``, or None (absent or unreadable)."""
    try:
        record = json.loads((Path(directory) / QUANTIZATION_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def int8_weights_warning(directory: Path, flags: set[str] | None = None) -> str | None:
    """Why the smoothed int8 model in ``directory`` may be less accurate on this CPU than measured,
    or None: int8 weights (exports before the weight type was recorded have them) on a CPU whose
    uint8 × int8 product can saturate. Wherever it was exported: on an AVX2-only EPYC, int8 weights
    passed the export's held-out gate through that kernel and still lost 0.69-0.80 dev points."""
    record = read_quantization_record(directory)
    if record is None or record.get("recipe") not in SMOOTHED_RECIPES:
        return None
    wanted, why = int8_weight_type(flags)
    if record.get("weights", "int8") == "int8" and wanted == "uint8":
        return (
            f"{Path(directory) / INT8_FILE} has int8 weights; here {why}. "
            "Its labels may differ from those measured at export: re-export on this CPU "
            "(distilsent export --int8 --calibration FILE) for uint8 weights"
        )
    return None
