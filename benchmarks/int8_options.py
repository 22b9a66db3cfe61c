"""Which int8 quantization keeps accuracy: each option's dev accuracy and agreement with fp32, one run.

    python benchmarks/int8_options.py --model ../shared/models/minilm-l6-sst2-ref

Agreement is measured on SST-2 dev and on a second set (train phrases, a different length profile),
against the fp32 ONNX model's labels. Speed is texts/s on SST-2 dev, same threads for every option.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--second-set", type=int, default=3000, help="train phrases in the second set")
    args = parser.parse_args()

    import onnxruntime as ort

    from distilsent.data import read_labelled
    from distilsent.export import export_onnx, fp32_nodes, int8_fp32_nodes, quantize_int8
    from distilsent.models import resolve_model
    from distilsent.tokenization import TextTokenizer

    model_dir = resolve_model(args.model)
    dev = read_labelled(SST2 / "dev.tsv")
    y = np.array(dev.labels)
    rng = np.random.default_rng(0)
    train = read_labelled(SST2 / "train.tsv").texts
    second = [train[i] for i in rng.choice(len(train), args.second_set, replace=False)]
    tok = TextTokenizer(model_dir)

    def logits(session: ort.InferenceSession, texts: list[str]) -> tuple[np.ndarray, float]:
        ids = tok.encode(texts)
        order = np.argsort([len(x) for x in ids])
        out = np.empty((len(texts), 2), dtype=np.float32)
        started = time.perf_counter()
        for i in range(0, len(order), 32):
            chosen = order[i : i + 32]
            input_ids, mask = tok.pad([ids[j] for j in chosen])
            out[chosen] = session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})[0]
        return out, len(texts) / (time.perf_counter() - started)

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model_dir, Path(tmp) / "fp32")
        variants = {
            "fp32": None,
            "int8 per-tensor": (False, []),
            "int8 per-channel": (True, []),
            "per-channel, fp32 embeddings": (True, fp32_nodes(fp32, embeddings=True)),
            "per-channel, fp32 emb + last layer": (True, fp32_nodes(fp32, embeddings=True, last=True)),
            "per-channel, fp32 emb + first layer": (True, fp32_nodes(fp32, embeddings=True, layers=(0,))),
            "per-channel, fp32 emb + first/last": (
                True,
                fp32_nodes(fp32, embeddings=True, layers=(0,), last=True),
            ),
            "per-channel, fp32 emb + first + attention": (True, int8_fp32_nodes(fp32)),
            "per-channel, 7-bit weights": (True, [], True),
            "per-channel, 7-bit, fp32 embeddings": (True, fp32_nodes(fp32, embeddings=True), True),
            "per-channel, 7-bit, fp32 emb + first + attention": (True, int8_fp32_nodes(fp32), True),
        }
        reference = None
        print(f"model: {model_dir}; dev {len(y)} sentences; second set {len(second)} train phrases")
        print(f"{'variant':<50}{'dev acc':>9}{'drop pt':>9}{'agree dev':>11}{'agree 2nd':>11}{'texts/s':>9}")
        for name, spec in variants.items():
            path = fp32
            if spec is not None:
                per_channel, exclude, *rest = spec
                reduce_range = bool(rest and rest[0])
                path = quantize_int8(
                    fp32,
                    Path(tmp) / f"{len(exclude)}-{per_channel}-{reduce_range}.onnx",
                    per_channel=per_channel,
                    exclude=exclude,
                    reduce_range=reduce_range,
                )
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            dev_logits, tps = logits(session, dev.texts)
            second_logits, _ = logits(session, second)
            if reference is None:
                reference = (dev_logits.argmax(1), second_logits.argmax(1))
            acc = 100 * (dev_logits.argmax(1) == y).mean()
            base = 100 * (reference[0] == y).mean()
            agree_dev = 100 * (dev_logits.argmax(1) == reference[0]).mean()
            agree_2nd = 100 * (second_logits.argmax(1) == reference[1]).mean()
            print(
                f"{name:<50}{acc:>8.2f}%{base - acc:>9.2f}{agree_dev:>10.2f}%{agree_2nd:>10.2f}%{tps:>9.1f}"
            )


if __name__ == "__main__":
    main()
