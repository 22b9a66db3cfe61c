"""Would a torch int8 path beat bf16? The packed DistilBERT forward with its products swapped, one run.

    python benchmarks/torch_int8_probe.py --model default

Runs the packed forward distilsent's torch engine uses, on SST-2 dev sentences in length-sorted
batches of 32, with these products:

- ``bf16``: oneDNN's packed bf16 products (what ``dtype="auto"`` runs on a CPU with native bf16);
- ``int8 smoothed``: the smoothed int8 recipe's scales (fitted on 500 SST-2 train sentences, the
  ones ``benchmarks/throughput.py`` calibrates its smoothed row with) folded into the query/key/value
  and first feed-forward weights, then torch's dynamic int8 products (fbgemm: activations quantized
  per tensor at run time, weights per output channel) for every product of all but the last layer
  and the last layer's query/key/value; the second feed-forward products in bf16 (``lin2 bf16``) or
  fp32 (``lin2 fp32``), as the ONNX recipe keeps them out of int8, or in int8 too (``lin2 int8``);
  the last layer's one-row products and the head in fp32;
- ``int8 plain``: the same without smoothing;
- ``onednn static``: oneDNN's int8 products (``torch.ops.onednn.qlinear_pointwise``: VNNI, or AMX
  where the CPU has it), the kernels ``torch.compile``'s x86 int8 lowering calls, in a bf16 forward.
  Weights int8 per output channel; each product's input quantized to uint8 with one scale and zero
  point fixed on the calibration sentences (its range over their real tokens), after the smoothed
  recipe's division; the GELU and the residual sums run inside the products, as in the bf16
  forward. Smoothed like the ONNX recipe (query/key/value, first feed-forward), and the attention
  output too, with the same formula on its own input. ``lin2 bf16`` keeps the second feed-forward
  products in packed bf16; ``everywhere`` quantizes them too, the first feed-forward product
  writing uint8 at the second's input scale, so no quantizing pass is left between them. The last
  layer's one-row products and the head stay bf16.

Each row has texts/s (the median of ``--rounds`` warm passes over 1,000 distinct dev sentences, the
rows taking turns, so that a slow spell of the machine hits every row), its ratio to the
transformers pipeline at batch 32 and to the bf16 row (the median of the rounds' ratios), SST-2 dev
accuracy, and label agreement with the packed fp32 forward on dev and on 1,000 long train sentences,
the worse of batches of 32 and one text at a time. A probe for a possible engine, not one distilsent
ships.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import DEV, cpu_line, dev_labels, sst2_texts, throughput, train_sentences


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="model: 'default', a directory, or a hub id")
    parser.add_argument("--texts", type=int, default=1000, help="texts per throughput pass")
    parser.add_argument("--rounds", type=int, default=3, help="throughput passes per row, taking turns")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")

    import torch
    from torch.nn import functional as F
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import distilsent
    from distilsent.core.engine import cpu_flags
    from distilsent.core.engine.onnx_export import input_ranges, smoothing_scale, smoothing_scales
    from distilsent.core.engine.packed import PackedDistilBert
    from distilsent.core.tokenization import TokenBatch
    from distilsent.formats import read_labelled

    hf_logging.disable_progress_bar()
    print(cpu_line())
    clf = distilsent.load(args.model, device="cpu", dtype="fp32")
    model = clf.torch_model()
    layers = model.config.n_layers
    fit = train_sentences()[0][0::2]
    pad = clf.tokenizer.pad_id
    fit_ids = clf.tokenizer.encode(fit)
    ranges = input_ranges(model, fit_ids, pad_id=pad, products=("qkv", "out", "lin1", "lin2"))
    scales = smoothing_scales(model, fit_ids, pad_id=pad, ranges=ranges)
    # Without VNNI, fbgemm's uint8 x int8 kernel can saturate: 7-bit weights rule that out there.
    reduce_range = not cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}

    def int8(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        w_scale = (weight.abs().amax(1) / (63.5 if reduce_range else 127.5)).clamp(min=1e-8).double()
        zero = torch.zeros(len(weight), dtype=torch.long)
        qw = torch.quantize_per_channel(weight.float(), w_scale, zero, 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.float())
        return lambda x: torch.ops.quantized.linear_dynamic(x, packed, reduce_range)

    def bf16(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        w, b = weight.bfloat16(), None if bias is None else bias.bfloat16()
        return lambda x: F.linear(x.bfloat16(), w, b).float()

    def fp32(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: F.linear(x, weight, bias)

    def int8_products(smooth: bool, lin2: str) -> Callable:
        def make(name: str, weight: torch.Tensor, bias: torch.Tensor | None):
            layer, _, product = name.partition(".")
            last = layer == str(layers - 1)
            if not product or (last and product != "qkv"):
                return fp32(weight, bias)  # the head and the last layer's one-row products
            if product == "lin2" and lin2 != "int8":
                return (bf16 if lin2 == "bf16" else fp32)(weight, bias)
            key = f"{layer}.{product}"
            if not smooth or key not in scales:
                return int8(weight, bias)
            scale = scales[key].to(weight.dtype)
            inner = int8(weight * scale[None, :], bias)
            inverse = 1.0 / scale
            return lambda x: inner(x * inverse)

        return make

    bf16_copy = copy.deepcopy(model).to(torch.bfloat16).eval()
    # The oneDNN rows smooth the attention output's input (its context vectors) too, with the same
    # formula; the fbgemm rows keep the ONNX recipe's scales alone.
    onednn_scales = dict(scales)
    for i, layer in enumerate(model.distilbert.transformer.layer):
        weight_max = layer.attention.out_lin.weight.detach().abs().amax(0)
        onednn_scales[f"{i}.out"] = smoothing_scale(*ranges[f"{i}.out"], weight_max)
    onednn_rows: dict[str, Callable] = {}
    if (missing := onednn_static_missing()) is None:
        onednn_rows = {
            name: onednn_forward(model, bf16_copy, ranges, onednn_scales, lin2_int8=lin2_int8)
            for name, lin2_int8 in (("onednn static, lin2 bf16", False), ("onednn static, everywhere", True))
        }
    else:
        print(f"onednn static rows skipped: {missing}")
    forwards: dict[str, Callable] = {
        "fp32 (reference)": PackedDistilBert(model),
        "bf16": PackedDistilBert(bf16_copy),
        "int8 smoothed, lin2 bf16": PackedDistilBert(model, make_linear=int8_products(True, "bf16")),
        "int8 smoothed, lin2 fp32": PackedDistilBert(model, make_linear=int8_products(True, "fp32")),
        "int8 smoothed, lin2 int8": PackedDistilBert(model, make_linear=int8_products(True, "int8")),
        "int8 plain, lin2 bf16": PackedDistilBert(model, make_linear=int8_products(False, "bf16")),
        **onednn_rows,
    }

    def logits_of(forward: Callable, ids: list[list[int]], batch_size: int = 32) -> np.ndarray:
        tokens = TokenBatch.from_lists(ids)
        order = np.argsort(tokens.lengths, kind="stable")
        out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                rows = order[start : start + batch_size]
                batch, mask = (torch.from_numpy(a) for a in tokens.padded(rows, pad))
                out[rows] = forward(batch, mask).float().numpy()
        return out

    dev_ids = clf.tokenizer.encode(read_labelled(DEV).texts)
    gold = np.array(dev_labels(clf)[1])
    long_ids = clf.tokenizer.encode(train_sentences()[1][:1000])
    texts = sst2_texts(args.texts)
    pipe = pipeline("text-classification", model=str(clf.model_dir), device="cpu", dtype=torch.float32)
    pipe_tps = throughput(lambda t: pipe(t, batch_size=32, truncation=True, max_length=128), texts)[1]
    print(f"model: {clf.model_dir}; transformers pipeline, batch 32: {pipe_tps:.1f} texts/s")
    reference_dev = logits_of(forwards["fp32 (reference)"], dev_ids).argmax(1)
    reference_long = logits_of(forwards["fp32 (reference)"], long_ids).argmax(1)
    accuracy = {}
    for name, forward in forwards.items():
        batched = logits_of(forward, dev_ids).argmax(1)
        single = logits_of(forward, dev_ids, 1).argmax(1)
        agree_dev = 100 * min(np.mean(batched == reference_dev), np.mean(single == reference_dev))
        agree_long = 100 * min(
            np.mean(logits_of(forward, long_ids).argmax(1) == reference_long),
            np.mean(logits_of(forward, long_ids, 1).argmax(1) == reference_long),
        )
        accuracy[name] = (100 * np.mean(batched == gold), agree_dev, agree_long)
    speeds: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(args.rounds):
        for name, forward in forwards.items():
            speeds[name].append(
                throughput(lambda t, f=forward: logits_of(f, clf.tokenizer.encode(t)), texts)[1]
            )
    header = f"{'products':<28}{'texts/s':>9}{'vs pipeline':>13}{'vs bf16':>9}{'dev acc':>9}"
    print(header + f"{'agree dev':>11}{'agree long':>12}")
    for name in forwards:
        tps = float(np.median(speeds[name]))
        versus = float(np.median(np.array(speeds[name]) / np.array(speeds["bf16"])))
        acc, agree_dev, agree_long = accuracy[name]
        print(
            f"{name:<28}{tps:>9.1f}{tps / pipe_tps:>12.2f}x{versus:>8.2f}x{acc:>8.2f}%"
            f"{agree_dev:>10.2f}%{agree_long:>11.2f}%",
            flush=True,
        )


def onednn_static_missing() -> str | None:
    """Why the ``onednn static`` rows cannot run here, or ``None``. They need oneDNN's int8 products,
    int8 multiply-adds that do not saturate (VNNI or AMX: on AVX2 alone the uint8 x int8 pairs
    saturate in int16) and native bf16 for the products' bf16 outputs (refused on AVX2 alone)."""
    import torch

    from distilsent.core.engine import cpu_flags, has_native_bf16

    if not hasattr(torch.ops.onednn, "qlinear_pointwise"):
        return "this torch build has no torch.ops.onednn.qlinear_pointwise"
    flags = cpu_flags()
    if not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "this CPU has no VNNI or AMX int8 instructions"
    if not has_native_bf16(flags):
        return "this CPU multiplies no bf16 natively"
    return None


class StaticInt8:
    """One oneDNN int8 product: int8 weights per output channel, its input divided by the smoothing
    scale (where given) and quantized to uint8 with the scale and zero point its calibration range
    sets; the output in ``dtype``, or uint8 at ``output`` (scale, zero point) for the next product."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lo: torch.Tensor,
        hi: torch.Tensor,
        smooth: torch.Tensor | None,
        dtype: torch.dtype,
        unary: str = "none",
        output: tuple[float, int] | None = None,
    ) -> None:
        import torch

        weight = weight.detach().float()
        if smooth is not None:
            weight, lo, hi = weight * smooth[None, :], lo / smooth, hi / smooth
        low, high = min(float(lo.min()), 0.0), max(float(hi.max()), 0.0)
        self.scale = max(high - low, 1e-8) / 255
        self.zero = round(-low / self.scale)
        # One multiply quantizes: the smoothing division and the activation scale in one vector.
        self.multiplier = (1.0 / smooth if smooth is not None else torch.ones(weight.shape[1])) / self.scale
        w_scale = (weight.abs().amax(1) / 127).clamp(min=1e-8)
        qweight = torch.round(weight / w_scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.packed = torch.ops.onednn.qlinear_prepack(qweight, None)
        self.w_scale, self.w_zero = w_scale, torch.zeros(len(w_scale), dtype=torch.long)
        self.bias = None if bias is None else bias.detach().float()
        self.dtype, self.unary, self.output = dtype, unary, output

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if x.dtype == torch.uint8:  # the previous product wrote it at this one's scale
            return x
        return (x.float() * self.multiplier).round_().add_(self.zero).clamp_(0, 255).to(torch.uint8)

    def operands(self, x: torch.Tensor) -> tuple:
        """The input and weight arguments both of oneDNN's int8 product calls take first."""
        return self.quantize(x), self.scale, self.zero, self.packed, self.w_scale, self.w_zero

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        out_scale, out_zero, dtype = (*self.output, None) if self.output else (1.0, 0, self.dtype)
        algorithm = "none" if self.unary == "gelu" else ""
        return torch.ops.onednn.qlinear_pointwise(
            *self.operands(x), self.bias, out_scale, out_zero, dtype, self.unary, [], algorithm
        )

    def plus(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        import torch

        # other=residual at scale 1, zero point 0 (it is bf16, not quantized), added after the product
        return torch.ops.onednn.qlinear_pointwise.binary(
            *self.operands(x), residual, self.bias, 1.0, 0, self.dtype, 1.0, 0, "add", 1.0, "none", [], ""
        )


def onednn_forward(
    model: torch.nn.Module,
    bf16_model: torch.nn.Module,
    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]],
    scales: dict[str, torch.Tensor],
    *,
    lin2_int8: bool,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The packed bf16 forward of ``bf16_model`` with :class:`StaticInt8` products (module docs)."""
    import torch

    from distilsent.core.engine.packed import PackedDistilBert

    forward = PackedDistilBert(bf16_model)
    last = model.config.n_layers - 1

    def static(
        key: str,
        weight: torch.Tensor,
        bias: torch.Tensor,
        unary: str = "none",
        output: tuple[float, int] | None = None,
        smooth: bool = True,
    ) -> StaticInt8:
        scale = scales.get(key) if smooth else None
        return StaticInt8(weight, bias, *ranges[key], scale, torch.bfloat16, unary, output)

    for i, layer in enumerate(model.distilbert.transformer.layer):
        att, ffn, products = layer.attention, layer.ffn, forward.layers[i]
        qkv_w = torch.cat([att.q_lin.weight, att.k_lin.weight, att.v_lin.weight])
        qkv_b = torch.cat([att.q_lin.bias, att.k_lin.bias, att.v_lin.bias])
        products["qkv"] = static(f"{i}.qkv", qkv_w, qkv_b)
        if i == last:  # its other products run on [CLS] alone
            continue
        products["out"] = static(f"{i}.out", att.out_lin.weight, att.out_lin.bias).plus
        if lin2_int8:
            lin2 = static(f"{i}.lin2", ffn.lin2.weight, ffn.lin2.bias, smooth=False)
            lin1 = static(f"{i}.lin1", ffn.lin1.weight, ffn.lin1.bias, "gelu", (lin2.scale, lin2.zero))
            products["lin1"], products["lin2"] = lin1, lin2.plus
        else:
            products["lin1"] = static(f"{i}.lin1", ffn.lin1.weight, ffn.lin1.bias, "gelu")
    return forward


if __name__ == "__main__":
    main()
