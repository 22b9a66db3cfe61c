"""Optimum's ONNX Runtime recipe against distilsent's onnx backends, same model, same texts, one run.

    python benchmarks/optimum_int8.py --optimum-python /path/to/optimum-env/bin/python

Optimum (``optimum-onnx``) pins transformers below 4.58, which distilsent does not run on, so it
lives in an environment of its own (``python -m venv optenv && optenv/bin/pip install
torch==2.13.0 "optimum-onnx[onnxruntime]"``); this script runs its half there, as a worker
process, while the machine is otherwise idle.

Optimum's half does what its quantization guide shows: ``ORTModelForSequenceClassification
.from_pretrained(model, export=True)`` (fp32), then ``ORTQuantizer`` with
``AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)`` on a CPU with VNNI, else
``.avx2(...)`` (dynamic int8), each run through the transformers ``pipeline`` at batch 32 on the texts
in their given order. distilsent's half is ``load(backend="onnx")`` and ``load(backend="onnx-int8")``
(what that backend exports on first use: the blockwise recipe, its sensitive products kept in fp32;
``export --int8`` may pick a faster recipe by measuring). Every row: texts/s (a warm pass over
``--texts`` distinct SST-2 dev sentences), the ratio to the transformers pipeline (torch fp32, batch
32) measured here in distilsent's environment, SST-2 dev accuracy and label agreement with the torch
fp32 model on dev and on 1,000 long SST-2 train sentences: issue 20's accuracy gates (at most 0.3 pt
lost, at least 99.5 % agreement on both).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(job: Path) -> None:
    """Optimum's half, in Optimum's environment: writes rates and dev labels next to ``job``."""
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoTokenizer, pipeline

    spec = json.loads(job.read_text())
    out = Path(spec["work"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    fp32 = ORTModelForSequenceClassification.from_pretrained(spec["model"], export=True)
    fp32.save_pretrained(out / "fp32")
    quantizer = ORTQuantizer.from_pretrained(fp32)
    vnni = spec["vnni"]
    config = (AutoQuantizationConfig.avx512_vnni if vnni else AutoQuantizationConfig.avx2)(
        is_static=False, per_channel=False
    )
    quantizer.quantize(save_dir=out / "int8", quantization_config=config)
    int8 = ORTModelForSequenceClassification.from_pretrained(out / "int8", file_name="model_quantized.onnx")
    results = {}
    recipe = f"dynamic int8, {'avx512_vnni' if vnni else 'avx2'} config"
    for name, model in (("fp32", fp32), (recipe, int8)):
        classify = pipeline("text-classification", model=model, tokenizer=tokenizer)

        def run(texts: list[str], classify=classify) -> list[str]:
            return [r["label"] for r in classify(texts, batch_size=32, truncation=True, max_length=128)]

        run(spec["texts"][:64])
        started = time.perf_counter()
        run(spec["texts"])
        rate = len(spec["texts"]) / (time.perf_counter() - started)
        results[f"optimum {name}"] = {
            "texts_per_s": rate,
            "dev_labels": run(spec["dev"]),
            "long_labels": run(spec["long"]),
        }
    (out / "results.json").write_text(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--optimum-python", help="python of an environment with optimum-onnx (required)")
    parser.add_argument("--model", default="default", help="model: 'default', a directory, or a hub id")
    parser.add_argument("--texts", type=int, default=1000, help="texts per throughput pass")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if not args.optimum_python:
        parser.error("--optimum-python is required")

    sys.path.insert(0, str(HERE))
    import torch
    from throughput import DEV, Row, cpu_line, gate, run_worker, sst2_texts, throughput, train_sentences
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import distilsent
    from distilsent.core.engine import cpu_flags
    from distilsent.formats import read_labelled

    hf_logging.disable_progress_bar()
    print(cpu_line())
    dev = read_labelled(DEV)
    texts = sst2_texts(args.texts)
    reference = distilsent.load(args.model, device="cpu", dtype="fp32")
    names = reference.labels
    gold = [names[y] for y in dev.labels]
    long_texts = train_sentences()[1][:1000]
    reference_dev = [p.label for p in reference.predict(dev.texts)]
    reference_long = [p.label for p in reference.predict(long_texts)]
    pipe = pipeline("text-classification", model=str(reference.model_dir), device="cpu", dtype=torch.float32)
    baseline = throughput(lambda t: pipe(t, batch_size=32, truncation=True, max_length=128), texts)[1]

    rows: dict[str, tuple[float, list[str], list[str]]] = {}
    for backend in ("onnx", "onnx-int8"):
        clf = distilsent.load(args.model, backend=backend, device="cpu")
        rate = throughput(clf.predict, texts)[1]
        labels = [[p.label for p in clf.predict(t)] for t in (dev.texts, long_texts)]
        rows[f"distilsent {backend}"] = (rate, *labels)

    work = Path(tempfile.mkdtemp(prefix="optimum-"))
    job = work / "job.json"
    vnni = bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})
    spec = {"model": str(reference.model_dir), "work": str(work), "vnni": vnni}
    spec |= {"texts": texts, "dev": dev.texts, "long": long_texts}
    job.write_text(json.dumps(spec))
    print("running Optimum's half in", args.optimum_python, flush=True)
    run_worker(args.optimum_python, __file__, job)
    for name, result in json.loads((work / "results.json").read_text()).items():
        rows[name] = (result["texts_per_s"], result["dev_labels"], result["long_labels"])

    def percent(a: list[str], b: list[str]) -> float:
        return 100 * sum(x == y for x, y in zip(a, b, strict=True)) / len(b)

    fp32_accuracy = percent(reference_dev, gold)
    print(f"\nmodel: {reference.model_dir}; transformers pipeline (torch fp32), b32: {baseline:.1f} texts/s")
    print(f"torch fp32 reference: dev accuracy {fp32_accuracy:.2f} %")
    print(
        f"{'row':<46}{'texts/s':>9}{'vs pipeline':>13}{'dev acc':>9}{'agree dev':>11}{'agree long':>12}"
        "  gates"
    )
    for name, (rate, labels, long_labels) in rows.items():
        accuracy, agree = percent(labels, gold), percent(labels, reference_dev)
        agree_long = percent(long_labels, reference_long)
        verdict = gate(Row(name, rate, rate, 0, 0, accuracy, agree, agree_long, True), fp32_accuracy)
        print(
            f"{name:<46}{rate:>9.1f}{rate / baseline:>12.2f}x{accuracy:>8.2f}%{agree:>10.2f}%"
            f"{agree_long:>11.2f}%  {verdict}",
            flush=True,
        )


if __name__ == "__main__":
    main()
