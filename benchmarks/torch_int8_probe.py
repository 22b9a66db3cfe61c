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
- ``int8 plain``: the same without smoothing.

Each row has texts/s (a warm pass over 1,000 distinct dev sentences), its ratio to the transformers
pipeline at batch 32 and to the bf16 row measured in the same run, SST-2 dev accuracy, and label
agreement with the packed fp32 forward on dev and on 1,000 long train sentences, the worse of
batches of 32 and one text at a time. A probe for a possible engine, not one distilsent ships.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import DEV, cpu_line, dev_labels, sst2_texts, throughput, train_sentences


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="model: 'default', a directory, or a hub id")
    parser.add_argument("--texts", type=int, default=1000, help="texts per throughput pass")
    args = parser.parse_args()

    import torch
    from torch.nn import functional as F
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import distilsent
    from distilsent.core.engine import cpu_flags
    from distilsent.core.engine.onnx_export import smoothing_scales
    from distilsent.core.engine.packed import PackedDistilBert
    from distilsent.core.tokenization import TokenBatch
    from distilsent.formats import read_labelled

    hf_logging.disable_progress_bar()
    print(cpu_line())
    clf = distilsent.load(args.model, device="cpu", dtype="fp32")
    model = clf.torch_model()
    layers = model.config.n_layers
    fit = train_sentences()[0][0::2]
    scales = smoothing_scales(model, clf.tokenizer.encode(fit), pad_id=clf.tokenizer.pad_id)
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
    forwards: dict[str, Callable] = {
        "fp32 (reference)": PackedDistilBert(model),
        "bf16": PackedDistilBert(bf16_copy),
        "int8 smoothed, lin2 bf16": PackedDistilBert(model, make_linear=int8_products(True, "bf16")),
        "int8 smoothed, lin2 fp32": PackedDistilBert(model, make_linear=int8_products(True, "fp32")),
        "int8 smoothed, lin2 int8": PackedDistilBert(model, make_linear=int8_products(True, "int8")),
        "int8 plain, lin2 bf16": PackedDistilBert(model, make_linear=int8_products(False, "bf16")),
    }
    pad = clf.tokenizer.pad_id

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
    header = f"{'products':<26}{'texts/s':>9}{'vs pipeline':>13}{'vs bf16':>9}{'dev acc':>9}"
    print(header + f"{'agree dev':>11}{'agree long':>12}")
    bf16_tps = None
    for name, forward in forwards.items():
        tps = throughput(lambda t, f=forward: logits_of(f, clf.tokenizer.encode(t)), texts)[1]
        bf16_tps = tps if name == "bf16" else bf16_tps
        batched = logits_of(forward, dev_ids).argmax(1)
        single = logits_of(forward, dev_ids, 1).argmax(1)
        agree_dev = 100 * min(np.mean(batched == reference_dev), np.mean(single == reference_dev))
        agree_long = 100 * min(
            np.mean(logits_of(forward, long_ids).argmax(1) == reference_long),
            np.mean(logits_of(forward, long_ids, 1).argmax(1) == reference_long),
        )
        versus = f"{tps / bf16_tps:>8.2f}x" if bf16_tps else f"{'':>9}"
        print(
            f"{name:<26}{tps:>9.1f}{tps / pipe_tps:>12.2f}x{versus}{100 * np.mean(batched == gold):>8.2f}%"
            f"{agree_dev:>10.2f}%{agree_long:>11.2f}%",
            flush=True,
        )


if __name__ == "__main__":
    main()
