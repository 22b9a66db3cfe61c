"""Texts/s and single-text latency: distilsent vs the transformers pipeline, same model, same texts, one run.

    python benchmarks/throughput.py --model base-random --model default --texts 1000

Prints the CPU (model name and the flags that decide matrix speed) and one table per model; ratios
are against the pipeline at batch size 32 measured in the same run, and every distilsent row has its
SST-2 dev accuracy and its label agreement with the torch fp32 row on SST-2 dev and on long SST-2
train sentences (15+ words, none of them the smoothed int8 recipe's calibration texts): the accuracy
gate of a faster path, each the worse of the classifier's batches and one text at a time.
"texts/s" is a warm second pass over the texts, "1st pass" the one before it (per-shape kernel
compilation included). "of fp32 peak" is the share of this machine's measured fp32 GEMM rate: bf16
and int8 rows can exceed it. "gates" says whether a faster row kept issue 20's accuracy gates, and
the lines after the tables hold issue 20's speed targets for this kind of CPU against the rows that
kept them (the other kinds' targets are listed as not binding here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
# DISTILSENT_SST2_DIR: where ../shared does not travel (a lent GPU machine; scripts/device_run.sh).
DEV = Path(os.environ.get("DISTILSENT_SST2_DIR") or ROOT.parent / "shared" / "data" / "sst2") / "dev.tsv"


def cpu_line() -> str:
    """The CPU model and the flags that decide matrix speed, as every benchmark prints them first."""
    from distilsent.core.engine import MATRIX_FLAGS, cpu_flags, cpu_model

    flags = cpu_flags()
    return f"cpu: {cpu_model()}; matrix flags: {' '.join(f for f in MATRIX_FLAGS if f in flags) or 'none'}"


def sst2_texts(n: int, distinct: bool = True) -> list[str]:
    """SST-2 dev sentences repeated to ``n``; each repeat gets a one-token suffix unless ``distinct``
    is off, so that distilsent's de-duplication of identical texts does not inflate its numbers."""
    from distilsent.formats import read_labelled

    base = read_labelled(DEV).texts
    texts = [t if k == 0 or not distinct else f"{t} {k}" for k in range(n // len(base) + 1) for t in base]
    return texts[:n]


def run_worker(python: str, script: str, job: Path, *, quiet: bool = False) -> None:
    """``script --worker job`` under another environment's ``python`` (a library whose pins distilsent
    cannot share), run in ``job``'s folder: SetFit's trainer writes ``checkpoints/`` and ONNX
    Runtime's tools their scratch files into the working directory, which must not be the
    repository (a SetFit run once left a 270 MB checkpoint there)."""
    output = subprocess.DEVNULL if quiet else None
    command = [python, str(Path(script).resolve()), "--worker", str(job)]
    subprocess.run(command, cwd=job.parent, check=True, stdout=output, stderr=output)


def throughput(run: Callable[[list[str]], object], texts: list[str]) -> tuple[float, float]:
    """Texts/s of a first pass over ``texts`` (after 64 of them as warm-up: allocator, thread pool,
    lazy init) and of a second, warm pass. They differ where kernels are compiled per shape: oneDNN's
    bf16 products compile one per row count the first time they meet it, about 1.5 ms each on AMX."""
    run(texts[:64])
    rates = []
    for _ in range(2):
        started = time.perf_counter()
        run(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    return rates[0], rates[1]


def latencies_ms(run_one: Callable[[str], object], texts: list[str], n: int) -> tuple[float, float]:
    for text in texts[:10]:
        run_one(text)
    times = []
    for text in texts[:n]:
        started = time.perf_counter()
        run_one(text)
        times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def base_shaped_model(directory: Path) -> Path:
    """A DistilBERT-base-shaped classifier (dim 768, 6 layers, ffn 3072) with random weights and the
    default model's tokenizer: the speed of distilbert-base-uncased-finetuned-sst-2-english."""
    import shutil

    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from distilsent.core.models import DEFAULT_MODEL_DIR

    torch.manual_seed(0)
    labels = {0: "NEGATIVE", 1: "POSITIVE"}
    config = DistilBertConfig(id2label=labels, label2id={v: k for k, v in labels.items()})
    DistilBertForSequenceClassification(config).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copyfile(DEFAULT_MODEL_DIR / name, directory / name)
    return directory


def gemm_peak_gflops(size: int = 2048, repeats: int = 20, threads: int | None = None) -> float:
    """This machine's measured fp32 matrix-multiply rate, the roofline: the better of torch's GEMM and
    ONNX Runtime's (MLAS, which the onnx backend runs on), each the best of ``repeats`` — single
    measurements on this shared 2-core machine vary by up to 25 %."""
    import numpy as np
    import torch

    def best_rate(multiply) -> float:
        multiply()
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            multiply()
            best = min(best, time.perf_counter() - started)
        return 2 * size**3 / best / 1e9

    a, b = torch.randn(size, size), torch.randn(size, size)
    rates = [best_rate(lambda: torch.mm(a, b))]
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return rates[0]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])
    weight = numpy_helper.from_array(b.numpy(), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"x": np.ascontiguousarray(a.numpy())}
    rates.append(best_rate(lambda: session.run(None, feed)))
    return max(rates)


def flops_per_text(config: dict, token_counts: list[int], *, cls_only_last: bool = False) -> float:
    """Mean forward FLOPs per text: the linear layers and attention of every layer, at each text's length.

    ``cls_only_last``: the last layer as our ONNX export computes it — keys and values for every token,
    the query, attention output and feed-forward for ``[CLS]`` only."""
    d, h, layers = config["dim"], config["hidden_dim"], config["n_layers"]

    def full(t: int) -> int:
        return 2 * t * (4 * d * d + 2 * d * h) + 4 * t * t * d

    def cls_only(t: int) -> int:
        return 2 * t * 2 * d * d + 2 * (2 * d * d + 2 * d * h) + 4 * t * d

    last = cls_only if cls_only_last else full
    total = sum((layers - 1) * full(t) + last(t) for t in token_counts)
    return total / len(token_counts)


def labels(clf, texts: list[str], batch_size: int | None = None):
    """Predicted label ids of ``texts``, in the classifier's batches or batches of ``batch_size``."""
    return clf.run(clf.tokenizer.encode(texts), batch_size=batch_size).argmax(1)


def dev_labels(clf, batch_size: int | None = None) -> tuple[object, list[int]]:
    """Predicted label ids on SST-2 dev (in the classifier's batches, or ``batch_size``), and gold ones."""
    from distilsent.formats import encode_labels, read_labelled

    dev = read_labelled(DEV)
    return labels(clf, dev.texts, batch_size), encode_labels(dev, dict(enumerate(clf.labels)))


def train_sentences() -> tuple[list[str], list[str]]:
    """SST-2 train texts for the smoothed recipe's calibration (the first 1,000 of 6+ words) and for
    the long-sentence agreement (every distinct one of 15+ words outside the calibration, in file order)."""
    from distilsent.formats import read_labelled

    train = read_labelled(DEV.parent / "train.tsv").texts
    calibration = [t for t in train if len(t.split()) >= 6][:1000]
    taken = set(calibration)
    long = list(dict.fromkeys(t for t in train if len(t.split()) >= 15 and t not in taken))
    return calibration, long


def smoothed_int8(model: str, directory: Path, recipe: str = "smoothed-dynamic") -> Path:
    """The smoothed int8 export of ``model`` by ``recipe``, its scales fitted on SST-2 train sentences."""
    from distilsent.export import ExportConfig, export

    sentences = train_sentences()[0]
    calibration = directory / "calibration.tsv"
    calibration.parent.mkdir(parents=True, exist_ok=True)
    calibration.write_text("sentence\n" + "\n".join(sentences) + "\n")
    config = ExportConfig(
        model=model,
        output=str(directory / "onnx"),
        int8=True,
        int8_recipe=recipe,
        calibration=str(calibration),
        force=True,  # measured here whatever the export's own gate says
    )
    return export(config).output


BACKENDS = {
    # row name: load keyword arguments, or the smoothed export's int8 recipe
    "torch fp32": {"backend": "torch", "dtype": "fp32"},
    "torch bf16": {"backend": "torch", "dtype": "bf16"},
    "onnx": {"backend": "onnx"},
    "onnx-int8": {"backend": "onnx-int8"},
    "onnx-int8 smoothed": "smoothed-dynamic",
    "onnx-int8 smoothed-static": "smoothed-static",
}


class Row(NamedTuple):
    """One engine's figures for one model; the quality fields are ``None`` for the pipeline rows."""

    name: str
    first: float
    """Texts/s of the first pass."""
    tps: float
    """Texts/s of the warm pass."""
    p50: float
    p99: float
    accuracy: float | None
    """SST-2 dev accuracy, percent."""
    agreement: float | None
    """Percent of dev labels equal to the torch fp32 row's, the worse of batches and single texts."""
    long_agreement: float | None
    """The same on long train sentences."""
    cls_only: bool
    """Whether the last layer runs for [CLS] alone (the FLOPs the roofline counts)."""


MAX_DEV_LOSS = 0.3
"""Issue 20's gate for a faster path: at most this many SST-2 dev accuracy points below torch fp32."""
MIN_AGREEMENT = 99.5
"""Issue 20's gate: at least this percent of labels equal to torch fp32's, on dev and on long texts."""
REFERENCE_ROW = "distilsent torch fp32"


def gate(row: Row, fp32_accuracy: float) -> str:
    """'pass' where ``row`` kept issue 20's accuracy gates against torch fp32 (dev accuracy
    ``fp32_accuracy``; agreement is already with its labels), else 'FAIL' and what it missed; '' for
    rows without accuracy (the pipeline) and for the torch fp32 row itself."""
    if row.accuracy is None or row.name == REFERENCE_ROW:
        return ""
    missed = []
    # the table's two decimals decide, as a reader would subtract them
    loss = round(round(fp32_accuracy, 2) - round(row.accuracy, 2), 2)
    if loss > MAX_DEV_LOSS:
        missed.append(f"dev -{loss:.2f} pt")
    if round(row.agreement, 2) < MIN_AGREEMENT:
        missed.append(f"agree dev {row.agreement:.2f}%")
    if round(row.long_agreement, 2) < MIN_AGREEMENT:
        missed.append(f"agree long {row.long_agreement:.2f}%")
    return "FAIL " + ", ".join(missed) if missed else "pass"


class Target(NamedTuple):
    """One of issue 20's speed targets."""

    machine: str
    """The CPU kind it binds, as :func:`machine_kind` names it."""
    model: str
    """'default' or 'base-random', as ``--model`` names it."""
    measure: str
    """'ratio' (texts/s against the pipeline at batch 32) or 'p50' (single-text ms)."""
    bound: float
    int8_only: bool = False
    """Only the int8 rows count."""


TARGETS = (
    Target("amx", "base-random", "ratio", 4.0),
    Target("amx", "default", "ratio", 12.0),
    Target("amx", "default", "p50", 3.0),
    Target("avx2-only", "base-random", "ratio", 3.0, int8_only=True),
)


def machine_kind(flags: set[str]) -> str:
    """'amx', 'avx2-only' (no AVX-512, no VNNI), or 'other': the CPU kinds issue 20 sets targets for."""
    if flags & {"amx_bf16", "amx_int8"}:
        return "amx"
    if "avx2" in flags and not flags & {"avx512f", "avx512_vnni", "avx_vnni"}:
        return "avx2-only"
    return "other"


def target_lines(kind: str, results: dict[str, tuple[list[Row], float]]) -> list[str]:
    """Each target against the best row that kept the gates, for the models measured (``results``:
    by ``--model`` name, the rows and torch fp32's dev accuracy); targets of other CPU kinds say they
    do not bind here."""
    lines = []
    for target in TARGETS:
        if target.model not in results:
            continue
        rows, fp32_accuracy = results[target.model]
        baseline = rows[1].tps  # the pipeline at batch 32
        kept = [r for r in rows if r.accuracy is not None and gate(r, fp32_accuracy) in ("", "pass")]
        kept = [r for r in kept if "int8" in r.name] if target.int8_only else kept
        what = "int8" if target.int8_only else "best backend"
        if target.measure == "ratio":
            label = f"{what} >= {target.bound:g}x the pipeline b32 on {target.model}"
            best = max(kept, key=lambda r: r.tps, default=None)
            value = None if best is None else best.tps / baseline
            met = value is not None and value >= target.bound
            shown = "" if best is None else f"{value:.2f}x ({best.name})"
        else:
            label = f"single-text p50 <= {target.bound:g} ms on {target.model}"
            best = min(kept, key=lambda r: r.p50, default=None)
            met = best is not None and best.p50 <= target.bound
            shown = "" if best is None else f"{best.p50:.2f} ms ({best.name})"
        verdict = ("met" if met else "NOT met") if target.machine == kind else "does not bind this CPU"
        lines.append(f"issue 20, {target.machine}: {label}: {shown or 'no row kept the gates'}: {verdict}")
    return lines


def measure(model: str, texts: list[str], args: argparse.Namespace) -> tuple[object, list[Row], float]:
    """The torch fp32 classifier, one :class:`Row` per engine, and torch fp32's dev accuracy (percent)
    for one model.

    Agreement is with the labels of the torch fp32 row, on SST-2 dev and on long train sentences."""
    import tempfile

    import numpy as np
    import torch
    from transformers import pipeline

    import distilsent
    from distilsent.core.engine.onnx_export import read_quantization_record

    clf = distilsent.load(model, device="cpu", dtype="fp32")
    reference, gold = dev_labels(clf)
    gold = np.array(gold)
    long = train_sentences()[1][: args.long_texts]
    long_reference = labels(clf, long)
    pipe = pipeline("text-classification", model=str(clf.model_dir), device="cpu", dtype=torch.float32)
    rows = []
    for name, batch in (("transformers pipeline, batch 1", 1), ("transformers pipeline, batch 32", 32)):
        first, tps = throughput(
            lambda t, b=batch: pipe(t, batch_size=b, truncation=True, max_length=128), texts
        )
        p50, p99 = latencies_ms(lambda t: pipe(t, truncation=True, max_length=128), texts, args.latency_texts)
        rows.append(Row(name, first, tps, p50, p99, None, None, None, False))
    for name in args.backends.split(","):
        if name not in BACKENDS:
            raise SystemExit(f"unknown backend row {name!r}; choose from {', '.join(BACKENDS)}")
        options = BACKENDS[name]
        row = f"distilsent {name}"
        if isinstance(options, str):
            directory = smoothed_int8(model, Path(tempfile.mkdtemp()), options)
            ours = distilsent.load(directory, backend="onnx-int8", device="cpu")
            # On a CPU without VNNI/AMX the export gives the smoothed recipes uint8 weights.
            weights = (read_quantization_record(directory) or {}).get("weights", "int8")
            row += "" if weights == "int8" else f", {weights} weights"
        else:
            ours = clf if name == "torch fp32" else distilsent.load(model, device="cpu", **options)
        first, tps = throughput(ours.predict, texts)
        p50, p99 = latencies_ms(ours.predict, texts, args.latency_texts)
        predicted, _ = dev_labels(ours)
        # Dynamic int8 scales activations per batch, so a label can depend on the batch: the gate
        # counts the worse of the classifier's batches and one text at a time.
        alone, _ = dev_labels(ours, batch_size=1)
        long_agreement = min(
            np.mean(labels(ours, long) == long_reference), np.mean(labels(ours, long, 1) == long_reference)
        )
        # The onnx export and the packed torch forward run the last layer for [CLS] alone.
        cls_only = "onnx" in name or getattr(ours.engine, "forward", "").startswith("packed")
        rows.append(
            Row(
                row,
                first,
                tps,
                p50,
                p99,
                100 * float(np.mean(predicted == gold)),
                100 * float(min(np.mean(predicted == reference), np.mean(alone == reference))),
                100 * float(long_agreement),
                cls_only,
            )
        )
    return clf, rows, 100 * float(np.mean(reference == gold))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        help="model to measure, repeatable: 'default' (the bundled model), a directory, or 'base-random' "
        "(a DistilBERT-base-shaped checkpoint with random weights, built on the fly). The first model's "
        "pipeline at batch 32 is also the baseline of the last column for every model. Default: default",
    )
    parser.add_argument(
        "--texts", type=int, default=2000, help="texts per throughput run (SST-2 dev, repeated)"
    )
    parser.add_argument("--latency-texts", type=int, default=200, help="single texts timed for p50/p99")
    parser.add_argument(
        "--long-texts", type=int, default=1000, help="long SST-2 train sentences for the agreement column"
    )
    parser.add_argument(
        "--duplicates", action="store_true", help="repeat texts verbatim (distilsent then runs each once)"
    )
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"distilsent rows to measure, comma-separated, from: {', '.join(BACKENDS)}",
    )
    args = parser.parse_args()

    import tempfile

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    texts = sst2_texts(args.texts, distinct=not args.duplicates)
    peak = gemm_peak_gflops()
    print(cpu_line())
    repeats = "verbatim repeats" if args.duplicates else "distinct"
    threads = torch.get_num_threads()
    print(f"texts: {len(texts)} SST-2 dev sentences ({repeats}); threads: {threads}; device: cpu")
    print(f"measured fp32 GEMM peak: {peak:.1f} GFLOP/s")
    first_baseline = None
    results: dict[str, tuple[list[Row], float]] = {}
    for name in args.model or ["default"]:
        model = name
        if model == "base-random":
            model = str(base_shaped_model(Path(tempfile.mkdtemp()) / "distilbert-base-random"))
        clf, rows, fp32_accuracy = measure(model, texts, args)
        results[name] = rows, fp32_accuracy
        baseline = rows[1].tps  # the pipeline at batch 32, warm
        first_baseline = first_baseline or baseline
        counts = [len(ids) for ids in clf.tokenizer.encode(texts)]
        flops = flops_per_text(clf.model_config, counts)
        cls_flops = flops_per_text(clf.model_config, counts, cls_only_last=True)
        print(f"\nmodel: {clf.model_dir}  ({clf.engine.num_parameters():,} parameters)")
        print(
            f"forward FLOPs per text: {flops / 1e9:.3f} GFLOP ({cls_flops / 1e9:.3f} with the last layer "
            "for [CLS] only, as the onnx export and the packed torch forward run it)"
        )
        width = max([34] + [len(row[0]) + 1 for row in rows])
        print(
            f"{'engine':<{width}}{'texts/s':>10}{'1st pass':>10}{'vs pipeline b32':>17}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'of fp32 peak':>14}{'vs 1st pipeline b32':>21}{'dev acc':>9}{'agree dev':>12}"
            f"{'agree long':>12}  gates"
        )
        for row in rows:
            name, first, tps, p50, p99, accuracy, agreement, long_agreement, cls_only = row
            roofline = tps * (cls_flops if cls_only else flops) / 1e9 / peak
            quality = (
                ""
                if accuracy is None
                else f"{accuracy:>8.2f}%{agreement:>11.2f}%{long_agreement:>11.2f}%  "
                + gate(row, fp32_accuracy)
            )
            print(
                f"{name:<{width}}{tps:>10.1f}{first:>10.1f}{tps / baseline:>16.2f}x{p50:>9.2f}{p99:>9.2f}"
                f"{100 * roofline:>13.0f}%{tps / first_baseline:>20.2f}x{quality}".rstrip()
            )

    from distilsent.core.engine import cpu_flags

    kind = machine_kind(cpu_flags())
    print(f"\nissue 20's targets (this CPU's kind: {kind}; only rows that kept the gates count):")
    for line in target_lines(kind, results):
        print(line)


if __name__ == "__main__":
    main()
