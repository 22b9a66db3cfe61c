"""How often AVX2's uint8 × int8 product would saturate on a smoothed int8 model's real activations.

    python benchmarks/int8_saturation.py --model default --texts 64

Without VNNI or AMX, ONNX Runtime multiplies uint8 activations by int8 weights with VPMADDUBSW, which
adds each pair of adjacent products into a saturating int16 (±32,767) before widening. This script
builds the smoothed dynamic int8 export with int8 weights, runs it (exactly, on any CPU) over long
SST-2 train sentences with every MatMulInteger's quantized input exposed, and replays each product
in numpy with the int16 pair sums clipped: per product, the share of pairs that saturate and the
largest change of an output (relative to the largest output of its rows). It runs on any CPU: the
saturation is emulated, not observed. uint8 weights (what AVX2-only CPUs now get) cannot saturate:
uint8 × uint8 is widened to int16 before it is multiplied.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import train_sentences

INT16 = (-32768, 32767)


def pair_saturation(a: np.ndarray, w: np.ndarray, chunk: int = 64) -> tuple[int, int, float]:
    """(saturated pairs, pairs, largest relative output change) of ``a @ w`` with int16 pair sums."""
    a, w = a.astype(np.int32), w.astype(np.int32)
    k = a.shape[1] // 2 * 2
    a2, w2 = a[:, :k].reshape(len(a), k // 2, 2), w[:k].reshape(k // 2, 2, -1)
    saturated, worst = 0, 0.0
    for r in range(0, len(a), chunk):
        pairs = np.einsum("rkt,ktn->rkn", a2[r : r + chunk], w2)
        saturated += int(((pairs < INT16[0]) | (pairs > INT16[1])).sum())
        exact = pairs.sum(1)
        clipped = np.clip(pairs, *INT16).sum(1)
        worst = max(worst, float(np.abs(clipped - exact).max() / (np.abs(exact).max() + 1)))
    return saturated, a2.shape[0] * a2.shape[1] * w.shape[1], worst


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="model: 'default', a directory, or a hub id")
    parser.add_argument("--texts", type=int, default=64, help="long SST-2 train sentences to run")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from distilsent.core.engine.onnx_export import write_smoothed_int8
    from distilsent.core.models import resolve_model
    from distilsent.core.tokenization import TextTokenizer

    model_dir = resolve_model(args.model)
    tok = TextTokenizer(model_dir)
    calibration, long = train_sentences()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_smoothed_int8(
            model_dir,
            Path(tmp) / "q.onnx",
            tok.encode(calibration[::2]),
            pad_id=tok.pad_id,
            weight_type="int8",
        )
        model = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    products = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    for name in sorted({n.input[0] for n in products}):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    input_ids, mask = tok.pad(tok.encode(long[: args.texts]))
    feed = {"input_ids": input_ids, "attention_mask": mask}
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feed)))
    print(f"model: {model_dir}; {args.texts} SST-2 train sentences of 15+ words, one batch")
    print(f"{'product':<62}{'saturated pairs':>17}{'largest change':>16}")
    total_saturated = total_pairs = 0
    worst = 0.0
    for node in products:
        activations = outputs[node.input[0]]
        a = activations.reshape(-1, activations.shape[-1])
        saturated, pairs, change = pair_saturation(a, weights[node.input[1]])
        total_saturated, total_pairs, worst = (
            total_saturated + saturated,
            total_pairs + pairs,
            max(worst, change),
        )
        print(f"{node.name[-62:]:<62}{saturated / pairs:>17.2e}{100 * change:>15.1f}%")
    print(
        f"all products: {total_saturated:,} of {total_pairs:,} pairs saturate "
        f"({total_saturated / total_pairs:.2e}); largest change {100 * worst:.1f}%"
    )


if __name__ == "__main__":
    main()
